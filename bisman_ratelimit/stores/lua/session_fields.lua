-- Sent before a session script that writes many fields: unpack() fails
-- beyond a few thousand values, so fields go to Redis in groups of 1,000
-- (an even number: field, value pairs stay whole).
local function in_groups(command, key, items, first, last)
  for i = first, last, 1000 do
    redis.call(command, key, unpack(items, i, math.min(i + 999, last)))
  end
end
