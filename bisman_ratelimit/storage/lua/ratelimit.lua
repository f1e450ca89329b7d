-- Check, and optionally consume, one or more rate limits atomically.
-- KEYS[i]: the key of limit i (a hash, or a sorted set for sliding_log).
-- ARGV[2]: "1" to consume when every limit allows, "0" to only look,
--   "r" to give back hits consumed by an earlier call made at time
--   ARGV[3 + 5 * #KEYS], then look.
-- ARGV[3 + 5(i-1) ...]: algorithm, amount, period_us, capacity, cost.
-- Returns {all_allowed, allowed_1, remaining_1, reset_us_1, retry_us_1, ...,
--   now}: the time of the decision ends the list, for a later refund.
-- The math mirrors bisman_ratelimit/algorithms.py operation for operation.
local EPS = 1e-9

local function fixed_window(key, amount, period, capacity, cost, commit)
  local window = math.floor(now / period)
  local stored = redis.call('HMGET', key, 'w', 'c')
  local count = 0
  if tonumber(stored[1]) == window then
    count = tonumber(stored[2])
  end
  local until_end = (window + 1) * period - now
  if count + cost > amount then
    return 0, amount - count, until_end, until_end
  end
  if commit then
    redis.call('HSET', key, 'w', num(window), 'c', num(count + cost))
    if count == 0 then
      -- Later hits in this window keep the expiry set by the first.
      redis.call('PEXPIRE', key, ttl_ms(until_end))
    end
    count = count + cost
    return 1, amount - count, until_end, 0
  end
  if count == 0 then
    return 1, amount, 0, 0
  end
  return 1, amount - count, until_end, 0
end

local function sliding_window(key, amount, period, capacity, cost, commit)
  local window = math.floor(now / period)
  local elapsed = now - window * period
  local stored = redis.call('HMGET', key, 'w', 'c', 'p')
  local cur, prev = 0, 0
  local w = tonumber(stored[1])
  local had_count = false
  if w == window then
    cur, prev = tonumber(stored[2]), tonumber(stored[3])
    had_count = cur > 0
  elseif w == window - 1 then
    prev = tonumber(stored[2])
  end
  local used = prev * (period - elapsed) / period + cur
  local allowed = used + cost <= amount + EPS
  local retry = 0
  if allowed then
    if commit then
      cur = cur + cost
      used = used + cost
    end
  else
    local spare = amount - cost - cur
    if spare >= 0 then
      retry = math.max(1, math.ceil((period - elapsed) - spare * period / prev))
    else
      retry = (period - elapsed) + math.max(0, math.ceil(period - (amount - cost) * period / cur))
    end
  end
  local reset = 0
  if cur > 0 then
    reset = 2 * period - elapsed
  elseif prev > 0 then
    reset = period - elapsed
  end
  if allowed and commit then
    redis.call('HSET', key, 'w', num(window), 'c', num(cur), 'p', num(prev))
    if not had_count then
      -- The expiry (end of the next window) is the same for every hit in this window.
      redis.call('PEXPIRE', key, ttl_ms(reset))
    end
  end
  return allowed and 1 or 0, math.max(0, math.floor(amount - used + EPS)), reset, retry
end

local function sliding_log(key, amount, period, capacity, cost, commit)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', num(now - period))
  local count = redis.call('ZCARD', key)
  if count + cost > amount then
    local index = count + cost - amount - 1
    local oldest = redis.call('ZRANGE', key, index, index, 'WITHSCORES')
    local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
    return 0, amount - count, tonumber(newest[2]) + period - now, tonumber(oldest[2]) + period - now
  end
  if commit then
    -- Members are "<time>:<position>": unique, since nothing expires
    -- between two calls made at the same microsecond.
    local stamp = num(now)
    local args = {}
    for i = 1, cost do
      args[#args + 1] = stamp
      args[#args + 1] = stamp .. ':' .. (count + i)
      if #args >= 1000 or i == cost then
        redis.call('ZADD', key, unpack(args))
        args = {}
      end
    end
    redis.call('PEXPIRE', key, ttl_ms(period))
    return 1, amount - count - cost, period, 0
  end
  if count == 0 then
    return 1, amount, 0, 0
  end
  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  return 1, amount - count, tonumber(newest[2]) + period - now, 0
end

local function token_bucket(key, amount, period, capacity, cost, commit)
  local stored = redis.call('HMGET', key, 't', 'ts')
  local tokens = capacity
  if stored[1] then
    tokens = math.min(capacity, tonumber(stored[1]) + math.max(0, now - tonumber(stored[2])) * amount / period)
  end
  local allowed = tokens + EPS >= cost
  local retry = 0
  if allowed then
    if commit then
      tokens = tokens - cost
    end
  else
    retry = math.ceil((cost - tokens) * period / amount)
  end
  local reset = 0
  if tokens < capacity then
    reset = math.ceil((capacity - tokens) * period / amount)
  end
  if allowed and commit then
    redis.call('HSET', key, 't', num(tokens), 'ts', num(now))
    redis.call('PEXPIRE', key, ttl_ms(reset))
  end
  return allowed and 1 or 0, math.max(0, math.floor(tokens + EPS)), reset, retry
end

local function gcra(key, amount, period, capacity, cost, commit)
  local interval = period / amount
  local tolerance = capacity * interval
  local stored = redis.call('HMGET', key, 'd', 'ts')
  local debt = 0
  if stored[1] then
    debt = math.max(0, tonumber(stored[1]) - (now - tonumber(stored[2])))
  end
  local new_debt = debt + cost * interval
  local allowed = new_debt <= tolerance + interval * EPS
  local retry = 0
  if allowed then
    if commit then
      debt = new_debt
      redis.call('HSET', key, 'd', num(debt), 'ts', num(now))
      redis.call('PEXPIRE', key, ttl_ms(debt))
    end
  else
    retry = math.ceil(new_debt - tolerance)
  end
  local remaining = math.max(0, math.floor((tolerance - debt) / interval + EPS))
  return allowed and 1 or 0, remaining, math.ceil(debt), retry
end

local ALGORITHMS = {
  fixed_window = fixed_window,
  sliding_window = sliding_window,
  sliding_log = sliding_log,
  token_bucket = token_bucket,
  gcra = gcra,
}

local function run(commit)
  local out = {1}
  for i = 1, #KEYS do
    local at = 3 + (i - 1) * 5
    local fn = ALGORITHMS[ARGV[at]]
    local allowed, remaining, reset, retry = fn(
      KEYS[i], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3]),
      tonumber(ARGV[at + 4]), commit)
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

-- Undo a hit of `cost` made at time t0. Used when a hit_many spans Cluster
-- slots (or servers): each group commits on its own, and the groups that
-- were allowed give their hits back if another group was denied.
local function refund(key, algorithm, amount, period, capacity, cost, t0)
  if algorithm == 'fixed_window' then
    local stored = redis.call('HMGET', key, 'w', 'c')
    if tonumber(stored[1]) == math.floor(t0 / period) then
      redis.call('HSET', key, 'c', num(math.max(0, tonumber(stored[2]) - cost)))
    end
  elseif algorithm == 'sliding_window' then
    -- The hit went into the current count of its window, which is the
    -- previous window if another hit has rolled the key over since.
    local stored = redis.call('HMGET', key, 'w', 'c', 'p')
    local w, window = tonumber(stored[1]), math.floor(t0 / period)
    if w == window then
      redis.call('HSET', key, 'c', num(math.max(0, tonumber(stored[2]) - cost)))
    elseif w == window + 1 then
      redis.call('HSET', key, 'p', num(math.max(0, tonumber(stored[3]) - cost)))
    end
  elseif algorithm == 'sliding_log' then
    local mine = redis.call('ZRANGEBYSCORE', key, num(t0), num(t0), 'LIMIT', 0, cost)
    if #mine > 0 then
      redis.call('ZREM', key, unpack(mine))
    end
  elseif algorithm == 'token_bucket' then
    local stored = redis.call('HMGET', key, 't')
    if stored[1] then
      redis.call('HSET', key, 't', num(math.min(capacity, tonumber(stored[1]) + cost)))
    end
  elseif algorithm == 'gcra' then
    local stored = redis.call('HMGET', key, 'd')
    if stored[1] then
      redis.call('HSET', key, 'd', num(math.max(0, tonumber(stored[1]) - cost * period / amount)))
    end
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
  out = run(false)
elseif #KEYS == 1 or mode ~= '1' then
  out = run(mode == '1')
else
  -- All or nothing: look at every limit first, consume only if all allow.
  out = run(false)
  if out[1] == 1 then
    out = run(true)
  end
end
out[#out + 1] = now
return out
