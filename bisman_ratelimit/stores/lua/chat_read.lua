-- The last n messages of a thread, newest first, across its windows.
-- KEYS[1]: the thread's message counter. ARGV[2]: the thread's base key.
-- ARGV[3]: n. ARGV[4]: window size.
local base, size = ARGV[2], tonumber(ARGV[4])
local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
local want = math.min(tonumber(ARGV[3]), seq)
local out = {}
local w = math.floor((seq - 1) / size)
while #out < want and w >= 0 do
  local got = redis.call('LRANGE', base .. ':w:' .. w, 0, want - #out - 1)
  if #got == 0 then
    break
  end
  for _, message in ipairs(got) do
    table.insert(out, message)
  end
  w = w - 1
end
return out
