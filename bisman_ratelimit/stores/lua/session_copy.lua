-- Read a session for rotation, leaving it in place: session_retire.lua
-- ends the old id once the copy is stored under the new one.
-- KEYS[1]: the session hash.
-- Returns false for a missing, expired or rotated session, else
-- {ms left before the absolute deadline, {field, value, ...}}.
local key = KEYS[1]
local abs = redis.call('HGET', key, 'm:abs')
if not abs then
  return false
end
local left = tonumber(abs) - math.floor(now / 1000)
if left <= 0 then
  redis.call('DEL', key)
  return false
end
return {left, redis.call('HGETALL', key)}
