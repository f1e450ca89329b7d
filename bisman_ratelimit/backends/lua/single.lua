-- One limit on one key: the path of most checks, without the dispatch and
-- the all-or-nothing pass of ratelimit.lua. The loader binds `check` to the
-- algorithm's function (one algo_*.lua file is loaded before this one).
-- ARGV as for ratelimit.lua with one limit. Returns {allowed, remaining,
-- reset_us, retry_us}: no more, as every element of a reply costs the
-- server time.
local stored = ARGV[3] ~= 'sliding_log' and redis.call('MGET', KEYS[1])[1]
local allowed, remaining, reset, retry = check(
  KEYS[1], stored, tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[2] == '1')
return {allowed, remaining, reset, retry}
