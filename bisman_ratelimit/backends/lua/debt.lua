-- The state of gcra and token_bucket (after state.lua): the time their
-- debt is paid off, ONE integer when the debt is whole and that time is
-- below 2^53 (as pack_state in core/_algorithms.py), else the debt and the
-- time of the last hit as two doubles.
local function pack_gcra(debt, ts)
  if ts + debt < EXACT and debt == math.floor(debt) then
    return ts + debt
  end
  return struct.pack('<dd', debt, ts)
end

-- Debt and time of a gcra or token_bucket state; a time reads as (time, 0).
local function unpack_gcra(stored)
  if is_integer(stored) then
    return tonumber(stored), 0
  end
  return decode(stored, 2)
end
