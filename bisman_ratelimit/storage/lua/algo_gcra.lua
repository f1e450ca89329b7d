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
      write('HSET', key, 'd', debt, 'ts', now)
      write('PEXPIRE', key, ttl_ms(debt))
    end
  else
    retry = math.ceil(new_debt - tolerance)
  end
  local remaining = math.max(0, math.floor((tolerance - debt) / interval + EPS))
  return allowed and 1 or 0, remaining, math.ceil(debt), retry
end
