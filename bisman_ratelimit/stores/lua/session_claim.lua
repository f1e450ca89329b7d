-- Whether a session listed in a user's index is live and still that user's;
-- with 'delete', delete it too ("log out everywhere").
-- KEYS[1]: the session hash. ARGV[2]: the index key. ARGV[3]: 'list' or
-- 'delete'. Returns 1 for a live session of that index, the new id for
-- one rotated away (see session_retire.lua: the caller claims that id
-- too), else 0.
local key = KEYS[1]
local meta = redis.call('HMGET', key, 'm:abs', 'm:index', 'm:moved')
if not meta[1] then
  return meta[3] or 0
end
if tonumber(meta[1]) <= math.floor(now / 1000) then
  redis.call('DEL', key)
  return 0
end
if meta[2] ~= ARGV[2] then
  return 0
end
if ARGV[3] == 'delete' then
  redis.call('DEL', key)
end
return 1
