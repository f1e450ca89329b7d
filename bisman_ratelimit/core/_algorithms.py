"""The decision math of every algorithm, free of I/O.

Each function takes the stored state of one key (``None`` when absent), the
current time ``now`` in whole microseconds and the limit, and returns
``(allowed, remaining, reset_us, retry_us, new_state)``:

- ``remaining``: hits left after this one if it was allowed and committed,
  else hits left now;
- ``reset_us``: microseconds until the key is fully replenished (and may
  vanish: it is also the key's TTL);
- ``retry_us``: microseconds until this same hit would pass (0 if allowed);
- ``new_state``: the state to store when committing an allowed hit, else
  ``None``. ``sliding_log`` appends to its list in place instead.

:data:`REFUNDS` holds the other direction: each function takes a key's
state and gives back a hit of ``cost`` made at time ``at`` (microseconds),
returning the state to store (``None``: nothing to change). A hit that no
longer counts (its window has passed) is not given back, and no counter
goes below zero or above capacity.

The Lua scripts in ``backends/lua/`` carry out the same operations in the same
order on doubles, so the memory and Redis backends decide alike; the
property tests hold them to it. A denied hit never changes the state.
:func:`pack_state` gives the form a state is stored in (one integer when
it fits), :func:`unpack_state` the tuple these functions take back.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable
from math import ceil, floor
from typing import Any, Literal

Algorithm = Literal["fixed_window", "sliding_window", "sliding_log", "token_bucket", "gcra"]
DEFAULT_ALGORITHM: Algorithm = "sliding_window"

# (allowed, remaining, reset, retry after, new state)
AlgorithmResult = tuple[bool, int, int, int, Any]
AlgorithmFn = Callable[[Any, int, int, int, int, int, bool], AlgorithmResult]
# (state, at, amount, period, capacity, cost) -> the state to store, or None
RefundFn = Callable[[Any, int, int, int, int, int], Any]

# Tolerance for float comparisons, so a hit made exactly at retry_after passes.
_EPS = 1e-9


def fixed_window(
    state: tuple[int, int] | None, now: int, amount: int, period: int, capacity: int, cost: int, commit: bool
) -> AlgorithmResult:
    window = now // period
    count = state[1] if state is not None and state[0] == window else 0
    until_end = (window + 1) * period - now
    if count + cost > amount:
        return False, amount - count, until_end, until_end, None
    if commit:
        count += cost
        return True, amount - count, until_end, 0, (window, count)
    return True, amount - count, until_end if count else 0, 0, None


def sliding_window(
    state: tuple[int, int, int] | None,
    now: int,
    amount: int,
    period: int,
    capacity: int,
    cost: int,
    commit: bool,
) -> AlgorithmResult:
    window = now // period
    elapsed = now - window * period
    cur = prev = 0
    if state is not None:
        if state[0] == window:
            cur, prev = state[1], state[2]
        elif state[0] == window - 1:
            prev = state[1]
    used = float(prev) * (period - elapsed) / period + cur
    allowed = used + cost <= amount + _EPS
    new_state = None
    if allowed:
        if commit:
            cur += cost
            used += cost
            new_state = (window, cur, prev)
        retry = 0
    else:
        spare = amount - cost - cur
        if spare >= 0:
            # The previous window's weight must fall to `spare`.
            retry = max(1, ceil((period - elapsed) - float(spare) * period / prev))
        else:
            # Only the next window helps, once this window's weight has fallen.
            retry = (period - elapsed) + max(0, ceil(period - float(amount - cost) * period / cur))
    if cur > 0:
        reset = 2 * period - elapsed
    elif prev > 0:
        reset = period - elapsed
    else:
        reset = 0
    return allowed, max(0, floor(amount - used + _EPS)), reset, retry, new_state


def sliding_log(
    log: list[int] | None, now: int, amount: int, period: int, capacity: int, cost: int, commit: bool
) -> AlgorithmResult:
    if log is None:
        log = []
    else:
        # Entries at or before the cutoff no longer count: dropping them
        # changes no decision, so it is done even when not committing.
        expired = bisect_right(log, now - period)
        if expired:
            del log[:expired]
    count = len(log)
    if count + cost > amount:
        oldest_needed = log[count + cost - amount - 1]
        return False, amount - count, log[-1] + period - now, oldest_needed + period - now, None
    if commit:
        log.extend([now] * cost)
        return True, amount - count - cost, period, 0, log
    return True, amount - count, (log[-1] + period - now) if log else 0, 0, None


def token_bucket(
    state: tuple[float, int] | None,
    now: int,
    amount: int,
    period: int,
    capacity: int,
    cost: int,
    commit: bool,
) -> AlgorithmResult:
    # The bucket is kept as `debt`, the time it needs to be full again, as
    # gcra keeps its arrival time: whole microseconds stay whole, so the
    # state usually packs into one integer (see pack_state).
    interval = period / amount
    debt = 0.0 if state is None else max(0.0, state[0] - float(now - state[1]))
    tokens = capacity - debt / interval
    allowed = tokens + _EPS >= cost
    new_state = None
    if allowed:
        retry = 0
        if commit:
            tokens -= cost
            debt += cost * interval
            new_state = (debt, now)
    else:
        retry = ceil((cost - tokens) * interval)
    return allowed, max(0, floor(tokens + _EPS)), ceil(debt), retry, new_state


def gcra(
    state: tuple[float, int] | None,
    now: int,
    amount: int,
    period: int,
    capacity: int,
    cost: int,
    commit: bool,
) -> AlgorithmResult:
    # The theoretical arrival time is kept as `debt`, its distance ahead of
    # the last update: small numbers keep full precision where absolute
    # microsecond timestamps (~1.7e15) would lose a quarter microsecond.
    interval = period / amount
    tolerance = capacity * interval
    debt = 0.0 if state is None else max(0.0, state[0] - float(now - state[1]))
    new_debt = debt + cost * interval
    allowed = new_debt <= tolerance + interval * _EPS
    new_state = None
    if allowed:
        retry = 0
        if commit:
            debt = new_debt
            new_state = (debt, now)
    else:
        retry = ceil(new_debt - tolerance)
    remaining = max(0, floor((tolerance - debt) / interval + _EPS))
    return allowed, remaining, ceil(debt), retry, new_state


def refund_fixed_window(
    state: tuple[int, int] | None, at: int, amount: int, period: int, capacity: int, cost: int
) -> tuple[int, int] | None:
    if state is None or state[0] != at // period:
        return None
    return state[0], max(0, state[1] - cost)


def refund_sliding_window(
    state: tuple[int, int, int] | None, at: int, amount: int, period: int, capacity: int, cost: int
) -> tuple[int, int, int] | None:
    if state is None:
        return None
    # The hit went into the current count of its window, which is the
    # previous window once a later hit has rolled the key over.
    window = at // period
    if state[0] == window:
        return state[0], max(0, state[1] - cost), state[2]
    if state[0] == window + 1:
        return state[0], state[1], max(0, state[2] - cost)
    return None


def refund_sliding_log(
    log: list[int] | None, at: int, amount: int, period: int, capacity: int, cost: int
) -> list[int] | None:
    if log is None:
        return None
    end = bisect_right(log, at)
    del log[max(end - cost, bisect_left(log, at)) : end]
    return log


def refund_token_bucket(
    state: tuple[float, int] | None, at: int, amount: int, period: int, capacity: int, cost: int
) -> tuple[float, int] | None:
    if state is None:
        return None
    # cost * interval, as the hit added it.
    return max(0.0, state[0] - cost * (period / amount)), state[1]


def refund_gcra(
    state: tuple[float, int] | None, at: int, amount: int, period: int, capacity: int, cost: int
) -> tuple[float, int] | None:
    if state is None:
        return None
    # cost * interval, as the hit added it.
    return max(0.0, state[0] - cost * (period / amount)), state[1]


ALGORITHMS: dict[str, AlgorithmFn] = {
    "fixed_window": fixed_window,
    "sliding_window": sliding_window,
    "sliding_log": sliding_log,
    "token_bucket": token_bucket,
    "gcra": gcra,
}

# Stored states. A state of fixed_window, sliding_window, token_bucket or gcra that fits
# exactly in a double (below 2**53) is kept as ONE integer, which Redis
# stores in 16 B where a string of doubles takes 48 B; any other is kept as
# the tuple (on Redis: a string of little-endian doubles). The Lua scripts
# (counts.lua, debt.lua) pack and unpack alike, and the memory backend stores what
# these functions give, so both backends compute on the same numbers.
#
# - fixed_window: the window number, then the count in `width` bits, then
#   `width` in the low 6 bits;
# - sliding_window: the same with two counts (this window's, the last's);
# - gcra and token_bucket: the time the debt is paid off (last update +
#   debt: gcra's theoretical arrival time, the time the bucket is full),
#   when the debt is whole; it unpacks as (that time, 0), which gives the
#   same debt.
_EXACT = 2**53


def _pack_counts(window: int, *counts: int) -> int | None:
    width = max(counts).bit_length()
    value = window
    for count in counts:
        value = value << width | count
    value = value << 6 | width
    return value if value < _EXACT else None


def _unpack_counts(value: int, size: int) -> tuple[int, ...]:
    width = value & 63
    value >>= 6
    mask = (1 << width) - 1
    counts = []
    for _ in range(size):
        counts.append(value & mask)
        value >>= width
    return (value, *reversed(counts))


_DEBTS = frozenset({"gcra", "token_bucket"})
_COUNTS = {"fixed_window": 1, "sliding_window": 2}


def pack_state(algorithm: str, state: Any) -> Any:
    """The form in which ``state`` (a tuple, or sliding_log's list) is stored."""
    if algorithm in _DEBTS:
        debt, ts = state
        paid_off = ts + debt
        return int(paid_off) if paid_off < _EXACT and debt == floor(debt) else state
    if algorithm in _COUNTS:
        packed = _pack_counts(*state)
        return state if packed is None else packed
    return state


def unpack_state(algorithm: str, stored: Any) -> Any:
    """Undo :func:`pack_state`; ``None`` stays ``None``."""
    if type(stored) is not int:
        return stored
    if algorithm in _DEBTS:
        return float(stored), 0
    return _unpack_counts(stored, _COUNTS[algorithm])


REFUNDS: dict[str, RefundFn] = {
    "fixed_window": refund_fixed_window,
    "sliding_window": refund_sliding_window,
    "sliding_log": refund_sliding_log,
    "token_bucket": refund_token_bucket,
    "gcra": refund_gcra,
}
