-- One limit on one key: the path of most checks, without the dispatch and
-- the all-or-nothing pass of ratelimit.lua. The loader binds `check` to the
-- algorithm's function (one algo_*.lua file is loaded before this one).
-- ARGV as for ratelimit.lua with one limit. Every element of a reply, and
-- every number read from a string, costs the server time, so:
-- - a capacity equal to the amount and a cost of 1 (the usual) are not
--   read twice (strings equal to another are the same string in Lua);
-- - an allowed hit (retry 0) answers ONE integer when its figures fit,
--   remaining * 2^33 + reset_us * 2 + 1 (remaining below 2^20, reset below
--   2^32: below 2^53, where a double holds every integer; unpacked by
--   _decode_one in _redis.py); any other answer is the table
--   {allowed, remaining, reset_us, retry_us}.
local stored = ARGV[3] ~= 'sliding_log' and redis.call('MGET', KEYS[1])[1]
local amount = tonumber(ARGV[4])
local allowed, remaining, reset, retry = check(
  KEYS[1], stored, amount, tonumber(ARGV[5]), ARGV[6] == ARGV[4] and amount or tonumber(ARGV[6]),
  ARGV[7] == '1' and 1 or tonumber(ARGV[7]), ARGV[2] == '1')
if allowed == 1 and remaining >= 0 and remaining < 1048576 and reset < 4294967296 then
  return (remaining * 4294967296 + reset) * 2 + 1
end
return {allowed, remaining, reset, retry}
