"""Response header values for rate-limited HTTP responses.

The fields follow draft-ietf-httpapi-ratelimit-headers-11:

- ``RateLimit-Policy: "login";q=5;w=60`` -- one quota policy item per limit:
  the quota ``q`` in requests and the window ``w`` in whole seconds;
- ``RateLimit: "login";r=2;t=41`` -- the quota left ``r`` and the effective
  window ``t`` in whole seconds (rounded up), from the very decision that
  let the request through or turned it away;
- ``Retry-After: 41`` on 429 and 503, integer seconds rounded up, never 0.

The legacy ``X-RateLimit-Limit/Remaining/Reset`` trio (``Reset`` in seconds
from now, like ``t``) describes the single most restrictive decision.

Everything here is text in, text out: no I/O and no framework.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from bisman_ratelimit.core import Decision, InvalidArgument, Limit


def sf_string(text: str) -> str:
    """``text`` as a Structured Field String (RFC 9651 section 3.3.3)."""
    if not isinstance(text, str) or not text.isascii() or not text.isprintable():
        raise InvalidArgument(f"a rate-limit policy name must be printable ASCII text, got {text!r}")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def seconds(value: float) -> int:
    """Whole seconds, rounded up: a client that waits this long is never early."""
    # Decisions carry whole microseconds divided by 1e6: float noise (far
    # below half a microsecond) must not add a second. Shifting by half a
    # microsecond before rounding up does what rounding to microseconds
    # first would, for a tenth of its cost (this runs on every response).
    whole = math.ceil(value - 5e-7)
    return whole if whole > 0 else 0


def policy_item(name: str, limit: Limit) -> str:
    """One ``RateLimit-Policy`` list member, e.g. ``"default";q=100;w=60``."""
    # w is a non-zero integer; sub-second windows are advertised as one second.
    return f"{sf_string(name)};q={limit.amount};w={max(1, seconds(limit.period))}"


def ratelimit_item(quoted_name: str, decision: Decision) -> str:
    """One ``RateLimit`` list member, e.g. ``"default";r=50;t=30``.

    ``quoted_name`` is the output of :func:`sf_string`, computed once per
    policy. For a denied decision ``t`` is the time until the same request
    would pass, so it never ends before ``Retry-After``.
    """
    if decision.allowed:
        return f"{quoted_name};r={decision.remaining};t={seconds(decision.reset_after)}"
    return f"{quoted_name};r={decision.remaining};t={retry_after(decision)}"


def retry_after(decision: Decision) -> int:
    """The ``Retry-After`` value for a denied decision: at least one second."""
    return max(1, seconds(decision.retry_after))


def legacy_headers(decision: Decision) -> list[tuple[str, str]]:
    """``X-RateLimit-Limit``, ``-Remaining`` and ``-Reset`` (seconds from now)."""
    reset = seconds(decision.reset_after) if decision.allowed else retry_after(decision)
    return [
        ("X-RateLimit-Limit", str(decision.limit)),
        ("X-RateLimit-Remaining", str(decision.remaining)),
        ("X-RateLimit-Reset", str(reset)),
    ]


def join(items: Iterable[str]) -> str:
    """Members of a Structured Field List."""
    return ", ".join(items)


def ratelimit_value(quoted_names: Sequence[str], decisions: Sequence[Decision]) -> str:
    """A whole ``RateLimit`` field value: one member per (policy name, decision) pair."""
    if len(quoted_names) != len(decisions):
        raise InvalidArgument(
            f"{len(quoted_names)} policy names for {len(decisions)} decisions: they must pair up"
        )
    pairs = zip(quoted_names, decisions, strict=True)
    return ", ".join(ratelimit_item(name, decision) for name, decision in pairs)
