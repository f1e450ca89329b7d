-- Delete a session. KEYS[1]: the session hash.
-- Returns {1, index key or ''} if the session existed, else {0, ''}: the
-- caller then takes the id out of that index, in the index's own slot.
-- The forward a rotation leaves (see session_retire.lua) stays: it names
-- no session of its own.
local meta = redis.call('HMGET', KEYS[1], 'm:index', 'm:moved')
if meta[2] then
  return {0, ''}
end
local index = meta[1]
local found = redis.call('DEL', KEYS[1])
return {found, index or ''}
