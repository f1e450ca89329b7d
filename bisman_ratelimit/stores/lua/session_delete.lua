-- Delete a session and take it out of its user's index.
-- KEYS[1]: the session hash. ARGV[2]: the session id.
-- Returns 1 if the session existed, else 0.
local index = redis.call('HGET', KEYS[1], 'm:index')
local found = redis.call('DEL', KEYS[1])
if index then
  redis.call('SREM', index, ARGV[2])
end
return found
