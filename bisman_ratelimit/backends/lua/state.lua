-- What the algorithms whose state is one string (all but sliding_log)
-- share to read and write it (after write.lua; then counts.lua or debt.lua).

-- The state of fixed_window, sliding_window, token_bucket and gcra is one
-- integer (counts.lua, debt.lua) or, when it does not fit, a string of
-- little-endian doubles, two or three: one MGET reads the state of every
-- limit of a check, and a number reads back as it was written.
-- The scripts read with MGET, which answers nil for a key of another type
-- (as a hash left by an older layout): such a key counts as empty, and the
-- next write replaces it.
local function decode(stored, size)
  if stored and #stored == size * 8 then
    return struct.unpack(size == 2 and '<dd' or '<ddd', stored)
  end
  return nil
end

local function is_integer(stored)
  return stored and string.find(stored, '^%d+$') ~= nil
end

-- Integer states stay below 2^53, where a double holds every integer: the
-- server writes a number handed to redis.call with all its digits, so the
-- packers hand it over as it is. (string.format('%d') would cost the
-- server 1-2% less of a script, but it formats a C long, which a 32-bit
-- build of Redis keeps in 32 bits: every state would be garbled there.)
local EXACT = 2 ^ 53

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
