-- State: tokens, time of the last hit.
local function token_bucket(key, stored, amount, period, capacity, cost, commit)
  local tokens = capacity
  local t, ts = decode(stored, 2)
  if t then
    tokens = math.min(capacity, t + math.max(0, now - ts) * amount / period)
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
    store(key, struct.pack('<dd', tokens, now), reset)
  end
  return allowed and 1 or 0, math.max(0, math.floor(tokens + EPS)), reset, retry
end
