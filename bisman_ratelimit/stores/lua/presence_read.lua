-- Who is in a call room, without renewing it.
-- KEYS[1]: the room. ARGV[2]: 'list' or 'count'. ARGV[3]: heartbeat
-- timeout (ms). A participant counts while seen within the timeout.
-- Returns the count, or {participant, last seen ms, ...} oldest first.
local since = '(' .. (math.floor(now / 1000) - tonumber(ARGV[3]))
if ARGV[2] == 'count' then
  return redis.call('ZCOUNT', KEYS[1], since, '+inf')
end
return redis.call('ZRANGEBYSCORE', KEYS[1], since, '+inf', 'WITHSCORES')
