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
    write('HSET', key, 'w', window, 'c', count + cost)
    if count == 0 then
      -- Later hits in this window keep the expiry set by the first.
      write('PEXPIRE', key, ttl_ms(until_end))
    end
    count = count + cost
    return 1, amount - count, until_end, 0
  end
  if count == 0 then
    return 1, amount, 0, 0
  end
  return 1, amount - count, until_end, 0
end
