-- Delete a session. KEYS[1]: the session hash.
-- Returns {1, index key or ''} if the session existed, else {0, ''}: the
-- caller then takes the id out of that index, in the index's own slot.
local index = redis.call('HGET', KEYS[1], 'm:index')
local found = redis.call('DEL', KEYS[1])
return {found, index or ''}
