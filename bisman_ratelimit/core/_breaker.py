"""A circuit breaker: a state machine with no I/O and an injectable clock.

::

    closed ── failure_threshold failures and min_calls calls
              within failure_window s ─────────────────────────────▶ open
    open ──────────── open_for s later ──────────────────────────▶ half_open
    half_open ─────── probes successes in a row ─────────────────▶ closed
    half_open ─────── any failure ───────────────────────────────▶ open

A handful of failures among a handful of calls (a cold start, a stall of
the caller's own) is no evidence that the dependency is down, so the
breaker opens only once ``min_calls`` calls (failed or not) have ended
within the window too. A call abandoned with
:meth:`~CircuitBreaker.abandon` (it never reached the dependency, e.g. no
pooled connection was free) counts neither way.

In ``closed`` every call is tried; in ``open`` none is; in ``half_open`` at
most ``probes`` calls are in flight at once and the rest are turned away.
A caller asks :meth:`CircuitBreaker.begin` for a ticket before trying, and
reports the outcome with :meth:`~CircuitBreaker.success` or
:meth:`~CircuitBreaker.failure`. Outcomes of calls begun before the last
transition are counted but move nothing: a slow call started while closed
cannot close a breaker that has since opened.

Transitions reach listeners (``on_change`` and :meth:`add_listener`) as
:class:`Transition` values; :meth:`~CircuitBreaker.stats` gives counters
for metrics.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from bisman_ratelimit.core._errors import InvalidArgument

BreakerState = Literal["closed", "open", "half_open"]

_log = logging.getLogger("bisman_ratelimit.breaker")


@dataclass(frozen=True)
class Transition:
    """One change of state. ``at`` is a reading of the breaker's clock."""

    breaker: str
    old: BreakerState
    new: BreakerState
    at: float
    reason: str


@dataclass(frozen=True)
class BreakerStats:
    """Counters since the breaker was made, for metrics."""

    name: str
    state: BreakerState
    failures: int
    successes: int
    # Calls turned away without being tried (open, or half-open and busy).
    rejected: int
    # (old, new) -> how many times.
    transitions: dict[tuple[BreakerState, BreakerState], int] = field(default_factory=dict)

    @property
    def opened(self) -> int:
        """How many times the breaker has opened."""
        return sum(n for (_, new), n in self.transitions.items() if new == "open")


Listener = Callable[[Transition], None]


def _positive(name: str, value: float, whole: bool = False) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise InvalidArgument(f"breaker {name} must be a positive number, got {value!r}")
    if whole and not isinstance(value, int):
        raise InvalidArgument(f"breaker {name} must be a whole number, got {value!r}")


class CircuitBreaker:
    """Decides whether a call may go to a dependency that has been failing.

    ``clock`` returns seconds (default ``time.monotonic``). Thread-safe;
    listeners run outside the lock, in the thread that caused the change.
    """

    def __init__(
        self,
        *,
        name: str = "redis",
        failure_threshold: int = 5,
        failure_window: float = 10.0,
        min_calls: int = 20,
        open_for: float = 1.0,
        probes: int = 1,
        clock: Callable[[], float] = time.monotonic,
        on_change: Listener | None = None,
    ) -> None:
        _positive("failure_threshold", failure_threshold, whole=True)
        _positive("failure_window", failure_window)
        _positive("min_calls", min_calls, whole=True)
        _positive("open_for", open_for)
        _positive("probes", probes, whole=True)
        self.name = name
        self.failure_threshold = failure_threshold
        self.failure_window = float(failure_window)
        self.min_calls = min_calls
        self.open_for = float(open_for)
        self.probes = probes
        self.clock = clock
        self._listeners: list[Listener] = [on_change] if on_change is not None else []
        self._lock = threading.Lock()
        self._state: BreakerState = "closed"
        self._generation = 0
        self._opened_at = 0.0
        self._recent_failures: deque[float] = deque(maxlen=failure_threshold)
        # When the last min_calls calls ended: enough calls in the window
        # when the oldest of them is inside it.
        self._recent_calls: deque[float] = deque(maxlen=min_calls)
        self._probes_in_flight = 0
        self._probe_successes = 0
        self._failures = 0
        self._successes = 0
        self._rejected = 0
        self._transitions: dict[tuple[BreakerState, BreakerState], int] = {}

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(transition)`` on every change of state."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    @property
    def state(self) -> BreakerState:
        with self._lock:
            fired = self._tick(self.clock())
        self._fire(fired)
        return self._state

    def begin(self) -> int | None:
        """A ticket if a call may be tried now, else ``None`` (use the fallback)."""
        with self._lock:
            now = self.clock()
            fired = self._tick(now)
            if self._state == "closed":
                ticket: int | None = self._generation
            elif self._state == "half_open" and self._probes_in_flight < self.probes:
                self._probes_in_flight += 1
                ticket = self._generation
            else:
                self._rejected += 1
                ticket = None
        self._fire(fired)
        return ticket

    def success(self, ticket: int) -> None:
        """The call holding ``ticket`` succeeded."""
        with self._lock:
            self._successes += 1
            fired = None
            if self._state == "closed":
                self._recent_calls.append(self.clock())
            elif ticket == self._generation and self._state == "half_open":
                self._probes_in_flight -= 1
                self._probe_successes += 1
                if self._probe_successes >= self.probes:
                    fired = self._move("closed", self.clock(), f"{self._probe_successes} probe(s) succeeded")
        self._fire(fired)

    def failure(self, ticket: int, error: object = None) -> None:
        """The call holding ``ticket`` failed or timed out; ``error`` goes into the reason."""
        with self._lock:
            self._failures += 1
            fired = None
            now = self.clock()
            if ticket == self._generation:
                detail = f": {error}" if error is not None else ""
                if self._state == "half_open":
                    fired = self._move("open", now, f"a probe failed{detail}")
                elif self._state == "closed":
                    since = now - self.failure_window
                    recent = self._recent_failures
                    recent.append(now)
                    while recent and recent[0] <= since:
                        recent.popleft()
                    calls = self._recent_calls
                    calls.append(now)
                    if (
                        len(recent) >= self.failure_threshold
                        and len(calls) >= self.min_calls
                        and calls[0] > since
                    ):
                        fired = self._move(
                            "open",
                            now,
                            f"{len(recent)} failure(s) within {self.failure_window:g} s{detail}",
                        )
        self._fire(fired)

    def abandon(self, ticket: int) -> None:
        """The call holding ``ticket`` never reached the dependency: neither a success nor a failure."""
        with self._lock:
            if ticket == self._generation and self._state == "half_open":
                self._probes_in_flight -= 1

    def retry_after(self) -> float:
        """Seconds until calls are tried again (0.0 unless open)."""
        with self._lock:
            if self._state != "open":
                return 0.0
            return max(0.0, self._opened_at + self.open_for - self.clock())

    def reset(self) -> None:
        """Close the breaker now, forgetting recent failures."""
        with self._lock:
            fired = self._move("closed", self.clock(), "reset") if self._state != "closed" else None
            self._recent_failures.clear()
            self._recent_calls.clear()
        self._fire(fired)

    def stats(self) -> BreakerStats:
        state = self.state
        with self._lock:
            return BreakerStats(
                self.name, state, self._failures, self._successes, self._rejected, dict(self._transitions)
            )

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} {self._state}>"

    # The methods below run under the lock.

    def _tick(self, now: float) -> Transition | None:
        if self._state == "open" and now >= self._opened_at + self.open_for:
            return self._move("half_open", now, f"{self.open_for:g} s elapsed since opening")
        return None

    def _move(self, new: BreakerState, now: float, reason: str) -> Transition:
        old = self._state
        self._state = new
        self._generation += 1
        self._probes_in_flight = 0
        self._probe_successes = 0
        if new == "open":
            self._opened_at = now
        if new == "closed":
            self._recent_failures.clear()
            self._recent_calls.clear()
        self._transitions[(old, new)] = self._transitions.get((old, new), 0) + 1
        return Transition(self.name, old, new, now, reason)

    def _fire(self, transition: Transition | None) -> None:
        if transition is None:
            return
        for listener in list(self._listeners):
            try:
                listener(transition)
            except Exception:
                # A broken metrics hook must not break rate limiting.
                _log.exception("circuit breaker %r: listener %r failed", self.name, listener)
