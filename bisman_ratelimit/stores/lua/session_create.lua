-- Create a session. KEYS[1]: the session hash, the only key: on Redis
-- Cluster a user's index lives in another slot and is written by its own call.
-- ARGV[2]: idle TTL (ms). ARGV[3]: absolute lifetime (ms). ARGV[4]: user id
-- or ''. ARGV[5]: the user's index key or ''. ARGV[6..]: field, value pairs.
-- Returns 0 when the id is taken, else the server time (ms).
local key = KEYS[1]
if redis.call('EXISTS', key) == 1 then
  return 0
end
local now_ms = math.floor(now / 1000)
local idle, life = tonumber(ARGV[2]), tonumber(ARGV[3])
local fields = {'m:created', now_ms, 'm:abs', now_ms + life, 'm:idle', idle}
if ARGV[5] ~= '' then
  table.insert(fields, 'm:user')
  table.insert(fields, ARGV[4])
  table.insert(fields, 'm:index')
  table.insert(fields, ARGV[5])
end
redis.call('HSET', key, unpack(fields))
in_groups('HSET', key, ARGV, 6, #ARGV)
redis.call('PEXPIRE', key, math.min(idle, life))
return now_ms
