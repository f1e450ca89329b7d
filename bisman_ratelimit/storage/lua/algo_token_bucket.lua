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
    write('HSET', key, 't', tokens, 'ts', now)
    write('PEXPIRE', key, ttl_ms(reset))
  end
  return allowed and 1 or 0, math.max(0, math.floor(tokens + EPS)), reset, retry
end
