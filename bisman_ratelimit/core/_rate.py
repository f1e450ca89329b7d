"""Rate limits: ``Limit`` values and the string notation that produces them.

The notation is the one Flask-Limiter, slowapi and ``limits`` users know
(``"100/minute"``, ``"10 per second"``, ``"5 per 30 seconds"``); several limits
are joined with ``;`` or ``,``. Parsing is delegated to ``limits``.
django-ratelimit's short form is an alias: ``"5/m"``, ``"100/h"``,
``"1000/d"``, ``"10/s"``, ``"100/5m"`` (one unit letter, optionally after a
count of units).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from limits import parse_many as _parse_many

from bisman_ratelimit.core._errors import InvalidLimit

# Redis scripts count in doubles, exact for whole numbers up to 2**53: amounts
# and periods (in microseconds) above it would be counted or timed wrongly
# there, while the memory backend, in Python numbers, would not notice.
MAX_AMOUNT = 2**53
MAX_PERIOD_US = 2**53
MAX_PERIOD_YEARS_TEXT = f"{MAX_PERIOD_US // (365 * 86400 * 1_000_000)} years"

# ``limits`` reads a period count of 0 ("1/0 seconds") as 1.
_ZERO_PERIOD = re.compile(r"(?:/|\bper\b)\s*0+\s*[a-z]", re.IGNORECASE)

# django-ratelimit's "5/m" and "100/5m": spelled out for ``limits``, which knows only whole unit names.
_SHORT = re.compile(r"(?<![\w.])(\d+)\s*/\s*(\d*)\s*([smhd])(?![\w.])", re.IGNORECASE)
_UNIT_NAMES = {"s": "second", "m": "minute", "h": "hour", "d": "day"}

_NOTATION_HELP = (
    "expected '<amount>/<period>' or '<amount> per [<n>] <period>', e.g. '100/minute', "
    "'10 per second', '5 per 30 seconds' or the short '5/m' and '100/5m'; join several with ';'"
)


def _spell_out(match: re.Match[str]) -> str:
    amount, count, unit = match.groups()
    name = _UNIT_NAMES[unit.lower()]
    return f"{amount}/{count} {name}" if count else f"{amount}/{name}"


@dataclass(frozen=True)
class Limit:
    """``amount`` hits per ``period`` seconds.

    ``burst`` is the bucket capacity for ``token_bucket`` and ``gcra``; it
    defaults to ``amount``. Window algorithms ignore it.
    """

    amount: int
    period: float
    burst: int | None = None
    # Derived once, used on every check.
    period_us: int = field(init=False, repr=False, compare=False)
    capacity: int = field(init=False, repr=False, compare=False)
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        amount, period, burst = self.amount, self.period, self.burst
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < 1:
            raise InvalidLimit(f"limit amount must be a whole number >= 1, got {amount!r}")
        if amount > MAX_AMOUNT:
            raise InvalidLimit(
                f"limit amount must be at most 2**53 ({MAX_AMOUNT}), the largest count a Redis "
                f"script keeps exactly, got {amount}"
            )
        if isinstance(period, bool) or not isinstance(period, (int, float)):
            raise InvalidLimit(f"limit period must be a number of seconds, got {period!r}")
        if not math.isfinite(period) or period <= 0:
            raise InvalidLimit(f"limit period must be a positive number of seconds, got {period!r}")
        period_us = round(period * 1_000_000)
        if period_us < 1000:
            raise InvalidLimit(f"limit period must be at least 1 millisecond, got {period!r} s")
        if period_us > MAX_PERIOD_US:
            raise InvalidLimit(
                f"limit period must be at most {MAX_PERIOD_YEARS_TEXT} (2**53 microseconds, the longest "
                f"a Redis script times exactly), got {period!r} s"
            )
        if burst is not None and (isinstance(burst, bool) or not isinstance(burst, int) or burst < 1):
            raise InvalidLimit(f"limit burst must be a whole number >= 1 or None, got {burst!r}")
        if burst is not None and burst > MAX_AMOUNT:
            raise InvalidLimit(f"limit burst must be at most 2**53 ({MAX_AMOUNT}), got {burst}")
        object.__setattr__(self, "period_us", period_us)
        object.__setattr__(self, "capacity", amount if burst is None else burst)
        object.__setattr__(self, "_hash", hash((amount, period, burst)))

    def __hash__(self) -> int:
        # Limiters look limits up on every check: hash once, not per lookup.
        return self._hash

    @classmethod
    def parse(cls, text: str) -> Limit:
        """Parse exactly one limit, e.g. ``"100/minute"``."""
        limits = parse_limits(text)
        if len(limits) != 1:
            raise InvalidLimit(f"expected one rate limit, got {len(limits)} in {text!r}")
        return limits[0]

    def __str__(self) -> str:
        period = self.period
        text = f"{self.amount}/{_format_period(period)}"
        if self.burst is not None:
            text += f" (burst {self.burst})"
        return text


LimitLike = str | Limit

_UNITS = ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second"))


def _format_period(period: float) -> str:
    for seconds, name in _UNITS:
        if period == seconds:
            return name
    for seconds, name in _UNITS:
        count = period / seconds
        if count == int(count) and count >= 1:
            return f"{int(count)} {name}s"
    return f"{period:g} seconds"


def parse_limits(value: LimitLike | tuple[Limit, ...] | list[LimitLike]) -> tuple[Limit, ...]:
    """Turn a string, a ``Limit`` or a list of either into a tuple of limits."""
    if isinstance(value, Limit):
        return (value,)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise InvalidLimit(f"empty rate limit string {value!r}: {_NOTATION_HELP}")
        if _ZERO_PERIOD.search(text):
            raise InvalidLimit(f"invalid rate limit {value!r}: a period of 0 is no period: {_NOTATION_HELP}")
        try:
            items = _parse_many(_SHORT.sub(_spell_out, text))
        except ValueError:
            raise InvalidLimit(f"invalid rate limit {value!r}: {_NOTATION_HELP}") from None
        try:
            return tuple(Limit(item.amount, item.get_expiry()) for item in items)
        except InvalidLimit as exc:
            raise InvalidLimit(f"invalid rate limit {value!r}: {exc}") from None
    if isinstance(value, (list, tuple)):
        if not value:
            raise InvalidLimit("an empty list of rate limits")
        out: list[Limit] = []
        for entry in value:
            if not isinstance(entry, (str, Limit)):
                raise InvalidLimit(f"a rate limit must be a string or a Limit, got {entry!r}")
            out.extend(parse_limits(entry))
        return tuple(out)
    raise InvalidLimit(f"a rate limit must be a string or a Limit, got {value!r}")
