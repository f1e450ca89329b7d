-- Change an existing session's fields; never brings back a gone session.
-- KEYS[1]: the session hash.
-- ARGV[2]: 'patch' or 'replace' (drop every field not written). ARGV[3]:
-- new idle TTL (ms) or ''. ARGV[4]: user id or ''. ARGV[5]: that user's
-- index key, or '' to keep the binding. ARGV[6]: 'bind' once the session
-- id is in that index, else ''. ARGV[7]: n, the number of field, value
-- pairs that follow; then the fields to delete.
-- Returns {0, ''} for a missing or expired session; {3, ''} for one
-- rotated away (see session_retire.lua); {2, ''} when the session must
-- move to another index and ARGV[6] is not 'bind' (nothing is written);
-- else {1, the index it left or ''}. Each write counts up m:ver, which a
-- rotation checks so as not to lose a write made while it copies.
local key = KEYS[1]
local meta = redis.call('HMGET', key, 'm:abs', 'm:idle', 'm:index', 'm:created', 'm:user', 'm:ver', 'm:moved')
if not meta[1] then
  return {meta[7] and 3 or 0, ''}
end
local left = tonumber(meta[1]) - math.floor(now / 1000)
if left <= 0 then
  redis.call('DEL', key)
  return {0, ''}
end
local index, user, left_index = meta[3], meta[5], ''
if ARGV[5] ~= '' and ARGV[5] ~= index then
  if ARGV[6] ~= 'bind' then
    return {2, ''}
  end
  left_index = index or ''
  index, user = ARGV[5], ARGV[4]
end
local idle = tonumber(meta[2])
if ARGV[3] ~= '' then
  idle = tonumber(ARGV[3])
end
if ARGV[2] == 'replace' then
  redis.call('DEL', key)
end
redis.call('HSET', key, 'm:created', meta[4], 'm:abs', meta[1], 'm:idle', idle,
  'm:ver', (tonumber(meta[6]) or 0) + 1)
if index then
  redis.call('HSET', key, 'm:user', user, 'm:index', index)
end
local n = tonumber(ARGV[7])
in_groups('HSET', key, ARGV, 8, 7 + 2 * n)
in_groups('HDEL', key, ARGV, 8 + 2 * n, #ARGV)
redis.call('PEXPIRE', key, math.min(idle, left))
return {1, left_index}
