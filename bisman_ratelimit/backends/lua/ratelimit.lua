-- Check, and optionally consume, one or more rate limits atomically.
-- KEYS[i]: the key of limit i (an integer or a string of packed doubles, or
--          a sorted set for sliding_log), all distinct.
-- ARGV[2]: "1" to consume when every limit allows, "0" to only look,
--          "r" to refund hits made at time ARGV[last] (then look).
-- ARGV[3 + 5(i-1) ...]: algorithm, amount, period_us, capacity, cost.
-- Returns {all_allowed, allowed_1, remaining_1, reset_us_1, retry_us_1, ..., now}.
-- The algo_*.lua files, loaded before this one, define one function per
-- algorithm; they mirror bisman_ratelimit/core/_algorithms.py operation for operation.
local ALGORITHMS = {
  fixed_window = fixed_window,
  sliding_window = sliding_window,
  sliding_log = sliding_log,
  token_bucket = token_bucket,
  gcra = gcra,
}

-- The keys' values: one MGET, in parts for more keys than Lua can unpack at once.
local function read_states()
  local n = #KEYS
  if n <= 1000 then
    return redis.call('MGET', unpack(KEYS))
  end
  local states = {}
  for first = 1, n, 1000 do
    local part = redis.call('MGET', unpack(KEYS, first, math.min(n, first + 999)))
    for i = 1, #part do
      states[first + i - 1] = part[i]
    end
  end
  return states
end

-- `states`: the keys' values, from read_states().
local function run(states, commit)
  local out = {1}
  for i = 1, #KEYS do
    local at = 3 + (i - 1) * 5
    local fn = ALGORITHMS[ARGV[at]]
    -- A capacity equal to the amount and a cost of 1 are not read twice (as in single.lua).
    local amount = tonumber(ARGV[at + 1])
    local allowed, remaining, reset, retry = fn(
      KEYS[i], states[i], amount, tonumber(ARGV[at + 2]),
      ARGV[at + 3] == ARGV[at + 1] and amount or tonumber(ARGV[at + 3]),
      ARGV[at + 4] == '1' and 1 or tonumber(ARGV[at + 4]), commit)
    if allowed == 0 then
      out[1] = 0
    end
    out[#out + 1] = allowed
    out[#out + 1] = remaining
    out[#out + 1] = reset
    out[#out + 1] = retry
  end
  return out
end

-- Undo a hit of `cost` made at time t0 (the REFUNDS of
-- bisman_ratelimit/core/_algorithms.py). Used when a hit_many spans Cluster
-- slots (or servers) and a group was denied, and for the hits of a request
-- whose response turns out not to count.
local function refund(key, algorithm, amount, period, capacity, cost, t0)
  if algorithm == 'sliding_log' then
    local mine = redis.call('ZRANGEBYSCORE', key, t0, t0, 'LIMIT', 0, cost)
    for first = 1, #mine, 1000 do
      redis.call('ZREM', key, unpack(mine, first, math.min(#mine, first + 999)))
    end
    -- A hit names its members "<time>:<count + i>". With fewer members now,
    -- a later hit at the newest time would reuse a name there: the members
    -- at that time take the last positions of the count that hit will see.
    local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
    if #mine > 0 and newest[2] then
      local last = tonumber(newest[2])
      local latest = redis.call('ZRANGEBYSCORE', key, last, last)
      local count = redis.call('ZCOUNT', key, '(' .. num(last - period), '+inf')
      local stamp = num(last)
      for first = 1, #latest, 1000 do
        redis.call('ZREM', key, unpack(latest, first, math.min(#latest, first + 999)))
      end
      for i = 1, #latest do
        redis.call('ZADD', key, stamp, stamp .. ':' .. (count - #latest + i))
      end
    end
    return
  end
  local stored = redis.call('MGET', key)[1]
  local state = nil
  if algorithm == 'fixed_window' then
    local w, c = unpack_counts(stored, 2)
    if w == math.floor(t0 / period) then
      state = pack_counts(w, math.max(0, c - cost))
    end
  elseif algorithm == 'sliding_window' then
    -- The hit went into the current count of its window, which is the
    -- previous window if another hit has rolled the key over since.
    local w, c, p = unpack_counts(stored, 3)
    local window = math.floor(t0 / period)
    if w == window then
      state = pack_counts(w, math.max(0, c - cost), p)
    elseif w == window + 1 then
      state = pack_counts(w, c, math.max(0, p - cost))
    end
  elseif algorithm == 'gcra' or algorithm == 'token_bucket' then
    local d, ts = unpack_gcra(stored)
    if d then
      state = pack_gcra(math.max(0, d - cost * (period / amount)), ts)
    end
  end
  if state then
    redis.call('SET', key, state, 'KEEPTTL')
  end
end

local mode = ARGV[2]
local out
if mode == 'r' then
  local t0 = tonumber(ARGV[3 + 5 * #KEYS])
  for i = 1, #KEYS do
    local at = 3 + (i - 1) * 5
    refund(KEYS[i], ARGV[at], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3]),
      tonumber(ARGV[at + 4]), t0)
  end
  out = run(read_states(), false)
elseif #KEYS == 1 or mode ~= '1' then
  out = run(read_states(), mode == '1')
else
  -- All or nothing, in one pass: each limit decides as if consuming, its
  -- writes held back; they run if every limit allowed. (The keys are
  -- distinct: the caller merges repeats, whose writes would hide each
  -- other here.)
  local states = read_states()
  held = {}
  out = run(states, true)
  local writes = held
  held = nil
  if out[1] == 1 then
    for i = 1, #writes do
      redis.call(unpack(writes[i]))
    end
  else
    -- Nothing consumed: report what a look sees.
    out = run(states, false)
  end
end
out[#out + 1] = now
return out
