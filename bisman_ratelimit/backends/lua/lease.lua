-- Concurrency leases: a sorted set of lease ids scored by their expiry.
-- KEYS[1]: the lease set. ARGV[2]: lease id. ARGV[3]: max in flight.
-- ARGV[4]: lease TTL in microseconds.
-- Returns {acquired, in_flight}.
local key = KEYS[1]
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
local count = redis.call('ZCARD', key)
if count >= tonumber(ARGV[3]) then
  return {0, count}
end
redis.call('ZADD', key, now + tonumber(ARGV[4]), ARGV[2])
local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', key, ttl_ms(tonumber(last[2]) - now))
return {1, count + 1}
