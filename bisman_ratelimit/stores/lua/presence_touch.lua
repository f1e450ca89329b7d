-- Join, heartbeat or leave a call room, and renew the room's TTL.
-- KEYS[1]: the room, a sorted set of participant -> last seen (ms).
-- ARGV[2]: 'join', 'beat' or 'leave'. ARGV[3]: participant.
-- ARGV[4]: room TTL (ms). ARGV[5]: heartbeat timeout (ms).
-- Returns {present, participants}: whether the participant is in the room
-- after the call, and how many are.
local key, op, who = KEYS[1], ARGV[2], ARGV[3]
local now_ms = math.floor(now / 1000)
-- Participants silent for the timeout are gone.
redis.call('ZREMRANGEBYSCORE', key, '-inf', now_ms - tonumber(ARGV[5]))
local present = 0
if op == 'join' then
  redis.call('ZADD', key, now_ms, who)
  present = 1
elseif op == 'beat' then
  -- A heartbeat never brings back someone who left or was dropped.
  if redis.call('ZSCORE', key, who) then
    redis.call('ZADD', key, now_ms, who)
    present = 1
  end
else
  redis.call('ZREM', key, who)
end
if redis.call('EXISTS', key) == 1 then
  redis.call('PEXPIRE', key, ARGV[4])
end
return {present, redis.call('ZCARD', key)}
