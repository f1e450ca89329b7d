-- Shared head of every script. ARGV[1] is "" to take the time from the
-- server (always, outside tests) or a time in microseconds.
-- (Each helper defined here is made again on every call, so the head
-- holds only what every script uses; the algorithms' helpers are in
-- state.lua, counts.lua and debt.lua, each script taking the ones it needs.)
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  -- Lua reads the strings as numbers, without a call to tonumber.
  now = t[1] * 1000000 + t[2]
else
  now = tonumber(ARGV[1])
end

-- A TTL in milliseconds that covers `us` microseconds and is never 0.
local function ttl_ms(us)
  return math.max(1, math.ceil(us / 1000))
end
