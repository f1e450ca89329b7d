-- State: window number, count (see counts.lua).
local function fixed_window(key, stored, amount, period, capacity, cost, commit)
  local window = math.floor(now / period)
  local count = 0
  local w, c = unpack_counts(stored, 2)
  if w == window then
    count = c
  end
  local until_end = (window + 1) * period - now
  if count + cost > amount then
    return 0, amount - count, until_end, until_end
  end
  if commit then
    -- Later hits in this window keep the expiry set by the first.
    store(key, pack_counts(window, count + cost), count == 0 and until_end or nil)
    count = count + cost
    return 1, amount - count, until_end, 0
  end
  if count == 0 then
    return 1, amount, 0, 0
  end
  return 1, amount - count, until_end, 0
end
