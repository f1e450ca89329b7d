-- The state of fixed_window and sliding_window (after state.lua). Small
-- states are ONE integer, which Redis keeps in 16 B against 48 B for a
-- string of doubles (pack_state in core/_algorithms.py, the same way): the
-- window number, each count in `width` bits, then `width` in the low 6
-- bits. A state that does not fit below 2^53 keeps the doubles. Powers of
-- two keep every step exact on doubles.
local function pack_counts(window, a, b)
  local largest = a
  if b and b > a then
    largest = b
  end
  -- Bits for the larger count, by doubling: a power or math.max at each
  -- step would be a call into C (2-3% of a sliding window's script).
  local width, scale = 0, 1
  while scale <= largest do
    width, scale = width + 1, scale * 2
  end
  local value = window * scale + a
  if b then
    value = value * scale + b
  end
  value = value * 64 + width
  if value < EXACT then
    return value
  end
  if b then
    return struct.pack('<ddd', window, a, b)
  end
  return struct.pack('<dd', window, a)
end

-- The window number and `size - 1` counts of a state from pack_counts().
local function unpack_counts(stored, size)
  if not is_integer(stored) then
    return decode(stored, size)
  end
  local value = tonumber(stored)
  local width = value % 64
  value = (value - width) / 64
  local scale = 2 ^ width
  local b = nil
  if size == 3 then
    b = value % scale
    value = (value - b) / scale
  end
  local a = value % scale
  return (value - a) / scale, a, b
end
