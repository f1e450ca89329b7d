-- Every write of an algorithm goes through `write`. In a script of one
-- limit it is redis.call itself, which costs no function of its own on
-- every call (ratelimit.lua holds writes back: write.lua).
local write = redis.call
