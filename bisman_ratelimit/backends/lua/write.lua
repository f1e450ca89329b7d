-- Every write of an algorithm goes through `write`. It runs at once,
-- unless ratelimit.lua holds writes back (a list in `held`) until each
-- limit of an all-or-nothing check has allowed.
local held = nil
local function write(...)
  if held then
    held[#held + 1] = {...}
  else
    redis.call(...)
  end
end
