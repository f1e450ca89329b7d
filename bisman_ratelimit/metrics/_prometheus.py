"""Application metrics for Prometheus: cache timings, rate-limit decisions, breaker state.

Nothing is registered when this module is imported. Each class registers
its metrics in the registry it is given (prometheus' default ``REGISTRY``
when none is), so an app, or a test, decides where they live::

    registry = CollectorRegistry()
    cache = CacheMetrics(registry=registry)
    limits = RateLimitMetrics(registry=registry, routes=["/api/calls/{id}"])
    limits.record_decision(route="/api/calls/{id}", allowed=False, reason="client")

Every label has a bounded set of values by construction: ``method`` and
``hit`` and ``reason``, breaker ``state``, and the ``cause`` and
``reaction`` of undecided requests come from fixed sets, and
``route`` is a route template taken from a closed list or capped at
``max_routes`` distinct values. Raw paths and client keys never become
labels, so a flood of distinct URLs or clients cannot grow the series count.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal, get_args

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from bisman_ratelimit.core import (
    OUTAGE_REACTIONS,
    UNDECIDED_CAUSES,
    BreakerState,
    ConfigurationError,
    InvalidArgument,
    OutageReaction,
    UndecidedCause,
)

if TYPE_CHECKING:
    from bisman_ratelimit.core import CircuitBreaker, Transition


HitLabel = Literal["hit", "miss", "n/a"]

Reason = Literal["global", "client", "concurrency", "unavailable", "shadow"]
"""Why a request was refused: the global limit, a per-client limit, a
concurrency cap, the store being unavailable with the limiter failing
closed, or (``shadow``) a limit in shadow mode that would have refused it."""

REASONS: tuple[str, ...] = get_args(Reason)
BREAKER_STATES: tuple[str, ...] = get_args(BreakerState)

CACHE_METHODS: tuple[str, ...] = (
    "get", "set", "incr", "evalsha", "eval", "delete", "expire",
    "hget", "hset", "hgetall", "hdel", "mget", "exists",
    "lpush", "ltrim", "lrange", "sadd", "srem", "smembers",
    "ratelimit", "refund", "reset", "acquire", "release",
    "session_load", "session_save", "session_delete", "flag_get", "flag_set",
    "other",
)  # fmt: skip
"""Values of the ``method`` label; anything else is recorded as ``other``."""

UNMATCHED_ROUTE = "<unmatched>"
"""The ``route`` label for requests that matched no route."""
OTHER_ROUTE = "<other>"
"""The ``route`` label for templates past ``max_routes`` or outside ``routes``."""

# Redis answers in tens of microseconds on a LAN and a busy one in
# milliseconds; past a second the request has failed in all but name.
DURATION_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip


def _registry(registry: CollectorRegistry | None) -> CollectorRegistry:
    return REGISTRY if registry is None else registry


def _register_error(exc: ValueError, owner: str) -> ConfigurationError:
    return ConfigurationError(
        f"cannot register {owner} metrics: {exc}; create one {owner} per registry and share it"
    )


class CacheMetrics:
    """``app_cache_op_duration_seconds{method, hit}``: how long each cache or store call took.

    ``hit`` is ``hit`` or ``miss`` for reads that find a value or not, and
    ``n/a`` for writes, scripts and failed calls.
    """

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = None,
        buckets: Iterable[float] = DURATION_BUCKETS,
    ) -> None:
        try:
            self.duration = Histogram(
                "app_cache_op_duration_seconds",
                "Time taken by one cache or store operation, by method and hit or miss.",
                ("method", "hit"),
                registry=_registry(registry),
                buckets=tuple(buckets),
            )
        except ValueError as exc:
            raise _register_error(exc, "CacheMetrics") from None
        self._children = {
            (method, hit): self.duration.labels(method, hit)
            for method in CACHE_METHODS
            for hit in get_args(HitLabel)
        }

    def observe(self, method: str, hit: HitLabel, seconds: float) -> None:
        """Record one operation. An unknown ``method`` is recorded as ``other``."""
        child = self._children.get((method, hit))
        if child is None:
            if hit not in get_args(HitLabel):
                raise InvalidArgument(f"hit must be one of {get_args(HitLabel)}, got {hit!r}")
            child = self._children[("other", hit)]
        child.observe(seconds)

    @contextmanager
    def time(self, method: str, hit: HitLabel = "n/a") -> Iterator[None]:
        """Time the block as one ``method`` operation."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.observe(method, hit, time.perf_counter() - start)


class RouteLabels:
    """Turns route templates into ``route`` label values from a bounded set.

    With ``routes`` the set is closed: those templates, :data:`UNMATCHED_ROUTE`
    and :data:`OTHER_ROUTE`. Without it the first ``max_routes`` distinct
    templates seen get their own value and later ones share
    :data:`OTHER_ROUTE`, so a caller that passes raw paths by mistake still
    cannot create more than ``max_routes + 2`` values.
    """

    def __init__(self, *, routes: Iterable[str] | None = None, max_routes: int = 200) -> None:
        if isinstance(max_routes, bool) or not isinstance(max_routes, int) or max_routes < 1:
            raise InvalidArgument(f"max_routes must be a whole number >= 1, got {max_routes!r}")
        self.closed = routes is not None
        self.max_routes = max_routes
        self._seen: set[str] = set()
        if routes is not None:
            for route in routes:
                if not isinstance(route, str) or not route:
                    raise InvalidArgument(f"routes must be non-empty strings, got {route!r}")
                self._seen.add(route)
        self._lock = threading.Lock()

    def label(self, route: str | None) -> str:
        """The label value for ``route`` (``None``: the request matched no route)."""
        if route is None or route == "":
            return UNMATCHED_ROUTE
        if route in self._seen:
            return route
        if self.closed:
            return OTHER_ROUTE
        with self._lock:
            if len(self._seen) < self.max_routes:
                self._seen.add(route)
                return route
        return OTHER_ROUTE


class RateLimitMetrics:
    """Counters of rate-limit decisions and the state of circuit breakers.

    - ``app_rate_limit_allowed_total{route}``: requests let through;
    - ``app_rate_limit_block_total{route, reason}``: requests refused, by the
      limit that tripped (see :data:`Reason`); ``reason="shadow"`` counts
      requests a shadow-mode limit would have refused, which were let through;
    - ``app_breaker_state{breaker, state}``: 1 for the state each breaker is in, else 0
      (summed over the live workers in prometheus_client's multi-process mode);
    - ``app_breaker_transitions_total{breaker, state}``: changes into each state;
    - ``app_rate_limit_undecided_total{cause, reaction}``: requests the storage
      could not decide, by why (``busy``: no free connection in time,
      ``unavailable``, ``error``) and what was done instead (``fallback``:
      decided on this process's counters, ``open``: let through,
      ``closed``: refused).
    """

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = None,
        routes: Iterable[str] | None = None,
        max_routes: int = 200,
        max_breakers: int = 16,
    ) -> None:
        self.routes = RouteLabels(routes=routes, max_routes=max_routes)
        self.breakers = RouteLabels(max_routes=max_breakers)
        target = _registry(registry)
        try:
            self.allowed = Counter(
                "app_rate_limit_allowed",
                "Requests let through by the rate limiter, by route template.",
                ("route",),
                registry=target,
            )
            self.blocked = Counter(
                "app_rate_limit_block",
                "Requests refused by the rate limiter, by route template and the limit that tripped "
                "(reason=shadow: would have been refused by a shadow-mode limit, let through).",
                ("route", "reason"),
                registry=target,
            )
            self.breaker_state = Gauge(
                "app_breaker_state",
                "1 for the state each circuit breaker is in (closed, open, half_open), else 0; "
                "with several worker processes, how many of them have their breaker in that state.",
                ("breaker", "state"),
                registry=target,
                # Each worker has its breakers; summed over the workers alive, in multi-process mode.
                multiprocess_mode="livesum",
            )
            self.breaker_transitions = Counter(
                "app_breaker_transitions",
                "Circuit breaker changes of state, by the state entered.",
                ("breaker", "state"),
                registry=target,
            )
            self.undecided = Counter(
                "app_rate_limit_undecided",
                "Requests the rate-limit storage could not decide, by cause (busy, unavailable, error) "
                "and reaction (fallback: decided in this process, open: let through, closed: refused).",
                ("cause", "reaction"),
                registry=target,
            )
        except ValueError as exc:
            raise _register_error(exc, "RateLimitMetrics") from None

    def record_decision(self, *, route: str | None, allowed: bool, reason: Reason | None = None) -> None:
        """Count one decision for a request to ``route`` (a route template, ``None`` if unmatched).

        A refusal needs the ``reason``. An allowed request takes no reason,
        except ``"shadow"`` when a shadow-mode limit would have refused it:
        that counts it as allowed and as a ``shadow`` block.
        """
        label = self.routes.label(route)
        if allowed:
            if reason is not None and reason != "shadow":
                raise InvalidArgument(
                    f"an allowed request takes reason=None or 'shadow', got {reason!r} (route {route!r})"
                )
            self.allowed.labels(label).inc()
            if reason == "shadow":
                self.blocked.labels(label, "shadow").inc()
            return
        if reason is None or reason not in REASONS or reason == "shadow":
            raise InvalidArgument(
                f"a refused request needs a reason from {', '.join(r for r in REASONS if r != 'shadow')}, "
                f"got {reason!r} (route {route!r}); shadow-mode refusals are recorded with allowed=True"
            )
        self.blocked.labels(label, reason).inc()

    def record_undecided(self, *, cause: UndecidedCause, reaction: OutageReaction) -> None:
        """Count one request the storage could not decide, and what was done with it."""
        if cause not in UNDECIDED_CAUSES:
            raise InvalidArgument(f"cause must be one of {', '.join(UNDECIDED_CAUSES)}, got {cause!r}")
        if reaction not in OUTAGE_REACTIONS:
            raise InvalidArgument(f"reaction must be one of {', '.join(OUTAGE_REACTIONS)}, got {reaction!r}")
        self.undecided.labels(cause, reaction).inc()

    def set_breaker_state(self, state: BreakerState, *, breaker: str = "redis") -> None:
        """Publish the state ``breaker`` is in now, without counting a transition."""
        if state not in BREAKER_STATES:
            raise InvalidArgument(f"breaker state must be one of {', '.join(BREAKER_STATES)}, got {state!r}")
        name = self.breakers.label(breaker)
        for each in BREAKER_STATES:
            self.breaker_state.labels(name, each).set(1 if each == state else 0)

    def record_breaker_transition(self, state: BreakerState, *, breaker: str = "redis") -> None:
        """``breaker`` has just entered ``state``: publish it and count the change."""
        self.set_breaker_state(state, breaker=breaker)
        self.breaker_transitions.labels(self.breakers.label(breaker), state).inc()

    def watch_breaker(self, breaker: CircuitBreaker) -> None:
        """Publish ``breaker``'s state now and on every change, under its name."""

        def on_change(transition: Transition) -> None:
            self.record_breaker_transition(transition.new, breaker=transition.breaker)

        self.set_breaker_state(breaker.state, breaker=breaker.name)
        breaker.add_listener(on_change)
