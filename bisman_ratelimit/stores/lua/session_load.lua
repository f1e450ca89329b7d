-- Load a session and renew it, in one round trip.
-- KEYS[1]: the session hash. ARGV[2]: 'all' for every field, else 'some'
-- and ARGV[3..] the fields to read.
-- Returns false for a missing or expired session, else
-- {ttl_ms, {field, value, ...}} for 'all' or {ttl_ms, {value, ...}}.
-- The rolling renewal never passes the absolute deadline (m:abs).
local key = KEYS[1]
local meta = redis.call('HMGET', key, 'm:abs', 'm:idle')
if not meta[1] then
  return false
end
local left = tonumber(meta[1]) - math.floor(now / 1000)
if left <= 0 then
  redis.call('DEL', key)
  return false
end
local ttl = math.min(tonumber(meta[2]), left)
redis.call('PEXPIRE', key, ttl)
if ARGV[2] == 'all' then
  return {ttl, redis.call('HGETALL', key)}
end
return {ttl, redis.call('HMGET', key, unpack(ARGV, 3))}
