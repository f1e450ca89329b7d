-- The latest feature flag changes, newest first. KEYS[1]: the change history.
-- ARGV[2]: how many.
return redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
