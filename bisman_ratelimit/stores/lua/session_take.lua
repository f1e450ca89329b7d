-- Take a session out for rotation: read it and delete it in one step, so
-- the old id stops working at once. KEYS[1]: the session hash.
-- Returns false for a missing or expired session, else
-- {ms left before the absolute deadline, {field, value, ...}}.
local key = KEYS[1]
local abs = redis.call('HGET', key, 'm:abs')
if not abs then
  return false
end
local left = tonumber(abs) - math.floor(now / 1000)
local fields = redis.call('HGETALL', key)
redis.call('DEL', key)
if left <= 0 then
  return false
end
return {left, fields}
