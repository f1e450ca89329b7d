-- A number as a string with 17 significant digits, so that a double read
-- back is the double written: the members' names, and scores made from
-- them. (Numbers passed to redis.call are converted that way by the
-- server; Lua's own tostring keeps only 14.)
local function num(x)
  return string.format('%.17g', x)
end

-- A sorted set of hits, scored by time; `stored` is not used.
local function sliding_log(key, stored, amount, period, capacity, cost, commit)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - period)
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
        write('ZADD', key, unpack(args))
        args = {}
      end
    end
    write('PEXPIRE', key, ttl_ms(period))
    return 1, amount - count - cost, period, 0
  end
  if count == 0 then
    return 1, amount, 0, 0
  end
  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  return 1, amount - count, tonumber(newest[2]) + period - now, 0
end
