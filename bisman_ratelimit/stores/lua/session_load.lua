-- Load a session and renew it, in one round trip.
-- KEYS[1]: the session hash. ARGV[2]: 'all' for every field, else 'some'
-- and ARGV[3..] the fields to read.
-- Returns false for a missing or expired session, 1 for one rotated away
-- (see session_retire.lua), else {ttl_ms, {field, value, ...}} for 'all'
-- or {ttl_ms, {value, ...}}.
-- The rolling renewal never passes the absolute deadline (m:abs).
local key = KEYS[1]
local meta = redis.call('HMGET', key, 'm:abs', 'm:idle', 'm:moved')
if not meta[1] then
  return meta[3] and 1 or false
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
local values = {}
for i = 3, #ARGV, 1000 do
  local group = redis.call('HMGET', key, unpack(ARGV, i, math.min(i + 999, #ARGV)))
  for j = 1, #group do
    values[#values + 1] = group[j]
  end
end
return {ttl, values}
