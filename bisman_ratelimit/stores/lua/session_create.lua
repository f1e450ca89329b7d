-- Create a session. KEYS[1]: the session hash; KEYS[2]: the user's index
-- set, when the session belongs to a user.
-- ARGV[2]: session id. ARGV[3]: idle TTL (ms). ARGV[4]: absolute lifetime
-- (ms). ARGV[5]: user id or ''. ARGV[6..]: field, value pairs.
-- Returns 0 when the id is taken, else the server time (ms).
local key = KEYS[1]
if redis.call('EXISTS', key) == 1 then
  return 0
end
local now_ms = math.floor(now / 1000)
local idle, life = tonumber(ARGV[3]), tonumber(ARGV[4])
local fields = {'m:created', now_ms, 'm:abs', now_ms + life, 'm:idle', idle}
if KEYS[2] then
  table.insert(fields, 'm:user')
  table.insert(fields, ARGV[5])
  table.insert(fields, 'm:index')
  table.insert(fields, KEYS[2])
end
for i = 6, #ARGV do
  table.insert(fields, ARGV[i])
end
redis.call('HSET', key, unpack(fields))
redis.call('PEXPIRE', key, math.min(idle, life))
if KEYS[2] then
  redis.call('SADD', KEYS[2], ARGV[2])
  -- The index lives as long as the longest-lived session it lists.
  if redis.call('PTTL', KEYS[2]) < life then
    redis.call('PEXPIRE', KEYS[2], life)
  end
end
return now_ms
