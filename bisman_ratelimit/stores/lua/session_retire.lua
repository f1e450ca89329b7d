-- End a rotated session's old id, once its copy is stored under the new
-- id: the hash becomes a short-lived forward ({m:moved = new id}) that no
-- read or write accepts, but that tells "rotated away" from "ended" and
-- lets "log out everywhere" follow the session to its new id.
-- KEYS[1]: the old session hash. ARGV[2]: the new id. ARGV[3]: m:ver as
-- copied, or ''. ARGV[4]: how long the forward lives (ms).
-- Returns 1 when retired; 0 when the session ended meanwhile (the copy
-- must go too); 2 when it was written meanwhile (copy it again).
local key = KEYS[1]
local meta = redis.call('HMGET', key, 'm:abs', 'm:ver')
if not meta[1] then
  return 0
end
if (meta[2] or '') ~= ARGV[3] then
  return 2
end
redis.call('DEL', key)
if tonumber(meta[1]) <= math.floor(now / 1000) then
  return 0
end
redis.call('HSET', key, 'm:moved', ARGV[2])
redis.call('PEXPIRE', key, ARGV[4])
return 1
