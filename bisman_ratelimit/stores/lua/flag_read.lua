-- Every feature flag: {name, encoded value, ...}. KEYS[1]: the flags hash.
return redis.call('HGETALL', KEYS[1])
