-- A user's sessions: list them, or delete them all ("log out everywhere").
-- KEYS[1]: the user's index set. ARGV[2]: 'list' or 'delete'. ARGV[3]: the
-- key prefix of session hashes; a session id is appended to it.
-- Returns the ids of the live sessions listed or deleted. Ids of sessions
-- that expired are dropped from the index on the way.
local index = KEYS[1]
local now_ms = math.floor(now / 1000)
local live = {}
for _, id in ipairs(redis.call('SMEMBERS', index)) do
  local key = ARGV[3] .. id
  local abs = redis.call('HGET', key, 'm:abs')
  if abs and tonumber(abs) > now_ms then
    table.insert(live, id)
    if ARGV[2] == 'delete' then
      redis.call('DEL', key)
    end
  else
    if abs then
      redis.call('DEL', key)
    end
    redis.call('SREM', index, id)
  end
end
if ARGV[2] == 'delete' then
  redis.call('DEL', index)
end
return live
