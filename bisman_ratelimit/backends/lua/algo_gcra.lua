-- State: debt (microseconds of hits not yet paid off), time of the last hit.
local function gcra(key, stored, amount, period, capacity, cost, commit)
  local interval = period / amount
  local tolerance = capacity * interval
  local debt = 0
  local d, ts = unpack_gcra(stored)
  if d then
    debt = math.max(0, d - (now - ts))
  end
  local new_debt = debt + cost * interval
  local allowed = new_debt <= tolerance + interval * EPS
  local retry = 0
  if allowed then
    if commit then
      debt = new_debt
      store(key, pack_gcra(debt, now), debt)
    end
  else
    retry = math.ceil(new_debt - tolerance)
  end
  local remaining = math.max(0, math.floor((tolerance - debt) / interval + EPS))
  return allowed and 1 or 0, remaining, math.ceil(debt), retry
end
