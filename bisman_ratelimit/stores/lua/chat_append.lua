-- Append messages to a chat thread and keep only the last `keep`, in one
-- round trip. Message number s (from 1) lives in window floor((s-1)/size),
-- a list (newest first) at <base>:w:<window>.
-- KEYS[1]: the thread's message counter. ARGV[2]: the thread's base key.
-- ARGV[3]: keep. ARGV[4]: window size. ARGV[5]: TTL (ms).
-- ARGV[6..]: the messages, oldest first. Returns the last message number.
local base = ARGV[2]
local keep, size, ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local function window(n)
  return base .. ':w:' .. math.floor((n - 1) / size)
end
local before = tonumber(redis.call('GET', KEYS[1]) or '0')
local seq = before
for i = 6, #ARGV do
  seq = seq + 1
  redis.call('LPUSH', window(seq), ARGV[i])
end
redis.call('SET', KEYS[1], seq, 'PX', ttl)
local oldest = math.max(1, seq - keep + 1)
local first = math.floor((oldest - 1) / size)
-- Windows whose messages all fell out of the last `keep`.
for w = math.floor((math.max(1, before - keep + 1) - 1) / size), first - 1 do
  redis.call('DEL', base .. ':w:' .. w)
end
-- The oldest window still kept loses the messages before `oldest`.
redis.call('LTRIM', window(oldest), 0, math.min(seq, (first + 1) * size) - oldest)
for w = first, math.floor((seq - 1) / size) do
  redis.call('PEXPIRE', base .. ':w:' .. w, ttl)
end
return seq
