-- A user's index of sessions: a sorted set, session id -> the time (ms) it
-- was added. Sessions live in other slots, so the index is kept in step by
-- calls of its own: an id is added before its session is written, and taken
-- out after the session is gone.
-- KEYS[1]: the index. ARGV[2]: 'add', 'list' or 'prune'.
-- add: ARGV[3] session id, ARGV[4] its absolute lifetime (ms); the index
-- lives as long as the longest-lived session it lists.
-- list: returns every id.
-- prune: ARGV[3] grace (ms), ARGV[4] n; the n ids after it are removed,
-- the rest only if added more than the grace ago (a younger one may name a
-- session still being written).
local index = KEYS[1]
local now_ms = math.floor(now / 1000)
if ARGV[2] == 'add' then
  redis.call('ZADD', index, now_ms, ARGV[3])
  if redis.call('PTTL', index) < tonumber(ARGV[4]) then
    redis.call('PEXPIRE', index, ARGV[4])
  end
  return 1
end
if ARGV[2] == 'list' then
  return redis.call('ZRANGE', index, 0, -1)
end
local cutoff = now_ms - tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local removed = 0
for i = 5, #ARGV do
  local added = redis.call('ZSCORE', index, ARGV[i])
  if added and (i < 5 + n or tonumber(added) <= cutoff) then
    removed = removed + redis.call('ZREM', index, ARGV[i])
  end
end
return removed
