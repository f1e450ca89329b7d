-- Shared head of every script. ARGV[1] is "" to take the time from the
-- server (always, outside tests) or a time in microseconds.
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[1])
end

-- A number as a string with 17 significant digits, so that a double read
-- back is the double written. (Numbers passed to redis.call are converted
-- that way by the server; Lua's own tostring keeps only 14.)
local function num(x)
  return string.format('%.17g', x)
end

-- Every write of an algorithm goes through `write`. It runs at once,
-- unless ratelimit.lua holds writes back (a list in `held`) until each
-- limit of an all-or-nothing check has allowed.
local held = nil
local function write(...)
  if held then
    held[#held + 1] = {...}
  else
    redis.call(...)
  end
end

-- A TTL in milliseconds that covers `us` microseconds and is never 0.
local function ttl_ms(us)
  return math.max(1, math.ceil(us / 1000))
end

-- The state of fixed_window, sliding_window, token_bucket and gcra is a
-- string of little-endian doubles, two or three: one MGET reads the state
-- of every limit of a check, and a number reads back as it was written.
-- The scripts read with MGET, which answers nil for a key of another type
-- (as a hash left by an older layout): such a key counts as empty, and the
-- next write replaces it.
local function decode(stored, size)
  if stored and #stored == size * 8 then
    return struct.unpack(size == 2 and '<dd' or '<ddd', stored)
  end
  return nil
end

-- Store a state; with `ttl_us` the key expires then, else it keeps the
-- expiry it has.
local function store(key, state, ttl_us)
  if ttl_us then
    write('SET', key, state, 'PX', ttl_ms(ttl_us))
  else
    write('SET', key, state, 'KEEPTTL')
  end
end

-- Tolerance for float comparisons, so a hit made exactly at retry_after
-- passes (the same in bisman_ratelimit/core/_algorithms.py).
local EPS = 1e-9
