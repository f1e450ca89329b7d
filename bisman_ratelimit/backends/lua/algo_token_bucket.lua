-- State: debt (microseconds until the bucket is full again), time of the
-- last hit; kept as gcra keeps it (see debt.lua).
local function token_bucket(key, stored, amount, period, capacity, cost, commit)
  local interval = period / amount
  local debt = 0
  local d, ts = unpack_gcra(stored)
  if d then
    debt = math.max(0, d - (now - ts))
  end
  local tokens = capacity - debt / interval
  local allowed = tokens + EPS >= cost
  local retry = 0
  if allowed then
    if commit then
      tokens = tokens - cost
      debt = debt + cost * interval
      store(key, pack_gcra(debt, now), debt)
    end
  else
    retry = math.ceil((cost - tokens) * interval)
  end
  return allowed and 1 or 0, math.max(0, math.floor(tokens + EPS)), math.ceil(debt), retry
end
