-- Set or delete a feature flag, record the change, and tell every reader, in one step.
-- KEYS[1]: the flags hash. KEYS[2]: the change history (a list, newest first).
-- ARGV[2]: 'set' or 'del'. ARGV[3]: flag name. ARGV[4]: the encoded value
-- (set only). ARGV[5]: the change channel. ARGV[6]: who made the change.
-- ARGV[7]: how many changes the history keeps.
-- Returns 1 if a flag was added, changed or deleted, else 0.
local old = redis.call('HGET', KEYS[1], ARGV[3])
local new = ''
local changed
if ARGV[2] == 'set' then
  changed = old ~= ARGV[4] and 1 or 0
  redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
  new = ARGV[4]
else
  changed = redis.call('HDEL', KEYS[1], ARGV[3])
end
if changed == 1 then
  -- '' stands for "no flag": an encoded flag is never empty.
  local entry = cjson.encode({name = ARGV[3], by = ARGV[6], at = math.floor(now / 1000), old = old or '', new = new})
  redis.call('LPUSH', KEYS[2], entry)
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[7]) - 1)
end
redis.call('PUBLISH', ARGV[5], ARGV[3])
return changed
