-- State: window number, its count, the previous window's count (see counts.lua).
local function sliding_window(key, stored, amount, period, capacity, cost, commit)
  local window = math.floor(now / period)
  local elapsed = now - window * period
  local cur, prev = 0, 0
  local w, c, p = unpack_counts(stored, 3)
  local had_count = false
  if w == window then
    cur, prev = c, p
    had_count = cur > 0
  elseif w == window - 1 then
    prev = c
  end
  local used = prev * (period - elapsed) / period + cur
  local allowed = used + cost <= amount + EPS
  local retry = 0
  if allowed then
    if commit then
      cur = cur + cost
      used = used + cost
    end
  else
    local spare = amount - cost - cur
    if spare >= 0 then
      retry = math.max(1, math.ceil((period - elapsed) - spare * period / prev))
    else
      retry = (period - elapsed) + math.max(0, math.ceil(period - (amount - cost) * period / cur))
    end
  end
  local reset = 0
  if cur > 0 then
    reset = 2 * period - elapsed
  elseif prev > 0 then
    reset = period - elapsed
  end
  if allowed and commit then
    -- The expiry (end of the next window) is the same for every hit in this window.
    store(key, pack_counts(window, cur, prev), not had_count and reset or nil)
  end
  return allowed and 1 or 0, math.max(0, math.floor(amount - used + EPS)), reset, retry
end
