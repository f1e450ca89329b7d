-- Set or delete a feature flag, and tell every reader, in one step.
-- KEYS[1]: the flags hash. ARGV[2]: 'set' or 'del'. ARGV[3]: flag name.
-- ARGV[4]: the encoded value (set only). ARGV[5]: the change channel.
-- Returns 1 if a flag was added, changed or deleted, else 0.
local changed
if ARGV[2] == 'set' then
  changed = redis.call('HGET', KEYS[1], ARGV[3]) ~= ARGV[4] and 1 or 0
  redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
else
  changed = redis.call('HDEL', KEYS[1], ARGV[3])
end
redis.call('PUBLISH', ARGV[5], ARGV[3])
return changed
