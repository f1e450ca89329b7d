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

-- The state of fixed_window, sliding_window, token_bucket and gcra is one
-- integer (below) or, when it does not fit, a string of little-endian
-- doubles, two or three: one MGET reads the state of every limit of a
-- check, and a number reads back as it was written.
-- The scripts read with MGET, which answers nil for a key of another type
-- (as a hash left by an older layout): such a key counts as empty, and the
-- next write replaces it.
local function decode(stored, size)
  if stored and #stored == size * 8 then
    return struct.unpack(size == 2 and '<dd' or '<ddd', stored)
  end
  return nil
end

-- Small states are ONE integer, which Redis keeps in 16 B against 48 B for
-- a string of doubles (pack_state in core/_algorithms.py, the same way):
-- fixed_window and sliding_window: the window number, each count in
-- `width` bits, then `width` in the low 6 bits; gcra and token_bucket: the
-- time their debt is paid off, when the debt is whole. A state that does not fit below 2^53 keeps the
-- doubles. Powers of two keep every step exact on doubles.
local EXACT = 2 ^ 53

local function pack_counts(window, a, b)
  local width = 0
  while 2 ^ width <= math.max(a, b or 0) do
    width = width + 1
  end
  local scale = 2 ^ width
  local value = window * scale + a
  if b then
    value = value * scale + b
  end
  value = value * 64 + width
  if value < EXACT then
    return num(value)
  end
  if b then
    return struct.pack('<ddd', window, a, b)
  end
  return struct.pack('<dd', window, a)
end

local function is_integer(stored)
  return stored and string.find(stored, '^%d+$') ~= nil
end

-- The window number and `size - 1` counts of a state from pack_counts().
local function unpack_counts(stored, size)
  if not is_integer(stored) then
    return decode(stored, size)
  end
  local value = tonumber(stored)
  local width = value % 64
  value = (value - width) / 64
  local scale = 2 ^ width
  local b = nil
  if size == 3 then
    b = value % scale
    value = (value - b) / scale
  end
  local a = value % scale
  return (value - a) / scale, a, b
end

local function pack_gcra(debt, ts)
  if ts + debt < EXACT and debt == math.floor(debt) then
    return num(ts + debt)
  end
  return struct.pack('<dd', debt, ts)
end

-- Debt and time of a gcra or token_bucket state; a time reads as (time, 0).
local function unpack_gcra(stored)
  if is_integer(stored) then
    return tonumber(stored), 0
  end
  return decode(stored, 2)
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
