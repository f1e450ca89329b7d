-- Store a session copied by session_copy.lua under its new id.
-- KEYS[1]: the new session hash. ARGV[2]: the absolute lifetime (ms) of a
-- login, which starts anew, or '' to keep the deadline. ARGV[3]: user id.
-- ARGV[4]: the index key (with ARGV[2] only). ARGV[5..]: the fields copied.
-- Returns 0 when the new id is taken, -1 when the deadline passed
-- meanwhile, else 1.
local key = KEYS[1]
if redis.call('EXISTS', key) == 1 then
  return 0
end
in_groups('HSET', key, ARGV, 5, #ARGV)
local now_ms = math.floor(now / 1000)
if ARGV[2] ~= '' then
  redis.call('HSET', key, 'm:created', now_ms, 'm:abs', now_ms + tonumber(ARGV[2]),
    'm:user', ARGV[3], 'm:index', ARGV[4])
end
local meta = redis.call('HMGET', key, 'm:abs', 'm:idle')
local left = tonumber(meta[1]) - now_ms
if left <= 0 then
  redis.call('DEL', key)
  return -1
end
redis.call('PEXPIRE', key, math.min(tonumber(meta[2]), left))
return 1
