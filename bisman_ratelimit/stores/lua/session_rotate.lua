-- Move a session to a new id, keeping its data; the old id stops working.
-- KEYS[1]: the old session hash; KEYS[2]: the new one; KEYS[3]: the index
-- set of a user who just logged in (optional).
-- ARGV[2]: old id. ARGV[3]: new id. ARGV[4]: user id or ''. ARGV[5]: the
-- absolute lifetime (ms), which starts anew at a login.
-- Returns 0 for a missing or expired session, -1 when the new id is
-- taken, else 1.
local old, new = KEYS[1], KEYS[2]
local meta = redis.call('HMGET', old, 'm:abs', 'm:idle', 'm:index')
if not meta[1] then
  return 0
end
local now_ms = math.floor(now / 1000)
local left = tonumber(meta[1]) - now_ms
if left <= 0 then
  redis.call('DEL', old)
  return 0
end
if redis.call('EXISTS', new) == 1 then
  return -1
end
redis.call('RENAME', old, new)
local index = meta[3]
if index then
  redis.call('SREM', index, ARGV[2])
end
if KEYS[3] then
  index = KEYS[3]
  left = tonumber(ARGV[5])
  redis.call('HSET', new, 'm:created', now_ms, 'm:abs', now_ms + left, 'm:user', ARGV[4], 'm:index', index)
end
if index then
  redis.call('SADD', index, ARGV[3])
  if redis.call('PTTL', index) < left then
    redis.call('PEXPIRE', index, left)
  end
end
redis.call('PEXPIRE', new, math.min(tonumber(meta[2]), left))
return 1
