-- Change an existing session's fields; never brings back a gone session.
-- KEYS[1]: the session hash; KEYS[2]: the index set of a user to bind the
-- session to (optional).
-- ARGV[2]: session id. ARGV[3]: 'patch' or 'replace' (drop every field not
-- written). ARGV[4]: new idle TTL (ms) or ''. ARGV[5]: user id or ''.
-- ARGV[6]: n, the number of field, value pairs that follow; then the
-- fields to delete.
-- Returns 0 for a missing or expired session, else 1.
local key = KEYS[1]
local meta = redis.call('HMGET', key, 'm:abs', 'm:idle', 'm:index', 'm:created', 'm:user')
if not meta[1] then
  return 0
end
local left = tonumber(meta[1]) - math.floor(now / 1000)
if left <= 0 then
  redis.call('DEL', key)
  return 0
end
local idle = tonumber(meta[2])
if ARGV[4] ~= '' then
  idle = tonumber(ARGV[4])
end
local index, user = meta[3], meta[5]
if KEYS[2] and KEYS[2] ~= index then
  if index then
    redis.call('SREM', index, ARGV[2])
  end
  index, user = KEYS[2], ARGV[5]
  redis.call('SADD', index, ARGV[2])
  if redis.call('PTTL', index) < left then
    redis.call('PEXPIRE', index, left)
  end
end
local fields = {'m:created', meta[4], 'm:abs', meta[1], 'm:idle', idle}
if index then
  table.insert(fields, 'm:user')
  table.insert(fields, user)
  table.insert(fields, 'm:index')
  table.insert(fields, index)
end
if ARGV[3] == 'replace' then
  redis.call('DEL', key)
end
local n = tonumber(ARGV[6])
for i = 7, 6 + 2 * n do
  table.insert(fields, ARGV[i])
end
redis.call('HSET', key, unpack(fields))
if #ARGV > 6 + 2 * n then
  redis.call('HDEL', key, unpack(ARGV, 7 + 2 * n))
end
redis.call('PEXPIRE', key, math.min(idle, left))
return 1
