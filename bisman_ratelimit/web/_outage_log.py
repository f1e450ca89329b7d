"""Storage failures in the log by state, not by request.

While the storage is down every request fails the same way: a line each
would bury the log (and cost a formatted record per request when the app
is already struggling). An :class:`OutageLog` writes instead:

- one WARNING when the storage fails, with the error and what the outage
  policy did with that first request;
- while it stays down, at most one WARNING per ``interval`` seconds
  counting the requests the policy answered since the last line, by answer;
- one WARNING when a request reaches the storage again, with how long the
  outage lasted and the requests answered since the last line (a WARNING
  too, so that the default logging that showed the outage shows its end).

So an outage of ``d`` seconds costs at most ``2 + d / interval`` lines.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from bisman_ratelimit.core import InvalidArgument, OutageReaction, StorageError

# What each answer did to a request, as the log says it. None: a hit after the response was lost.
_DONE: dict[OutageReaction | None, str] = {
    "open": "let through",
    "closed": "refused",
    "fallback": "counted in this process",
    None: "not counted after the response",
}


class OutageLog:
    """Logs the storage's failures and recovery for one plugin; ``clock`` returns seconds."""

    def __init__(
        self, logger: logging.Logger, *, interval: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not interval > 0:
            raise InvalidArgument(
                f"outage log interval must be a positive number of seconds, got {interval!r}"
            )
        self.logger = logger
        self.interval = float(interval)
        self.clock = clock
        # Read without the lock on every request that reached the storage: one attribute.
        self.down = False
        self._lock = threading.Lock()
        self._started = 0.0
        self._reported = 0.0
        self._counts: dict[OutageReaction | None, int] = dict.fromkeys(_DONE, 0)

    def failed(self, exc: StorageError, reaction: OutageReaction | None, what: str) -> None:
        """A request (``what``, e.g. ``"GET /login"``) met a storage error and got ``reaction``."""
        now = self.clock()
        with self._lock:
            first = not self.down
            if first:
                self.down = True
                self._started = self._reported = now
            self._counts[reaction] += 1
            report = None
            if not first and now - self._reported >= self.interval:
                report = self._take(now)
        if first:
            self.logger.warning(
                "rate-limit storage unavailable (%s): the outage policy answers requests until it is back "
                "(%s: %s)",
                exc,
                what,
                _DONE[reaction],
            )
        elif report is not None:
            total, elapsed, detail = report
            self.logger.warning(
                "%d requests answered by the outage policy in the last %g s (%s); last error: %s",
                total,
                elapsed,
                detail,
                exc,
            )

    def recovered(self) -> None:
        """A request reached the storage: log the end of the outage, if one was going on."""
        now = self.clock()
        with self._lock:
            if not self.down:
                return  # another thread saw it first
            self.down = False
            lasted = now - self._started
            total, _, detail = self._take(now)
        self.logger.warning(
            "rate-limit storage available again after %.1f s; %d requests answered by the outage policy "
            "since the last report (%s)",
            lasted,
            total,
            detail,
        )

    def _take(self, now: float) -> tuple[int, float, str]:
        """The counts since the last line, reset (under the lock)."""
        counts = self._counts
        total = sum(counts.values())
        detail = ", ".join(f"{n} {_DONE[answer]}" for answer, n in counts.items() if n) or "none"
        elapsed = now - self._reported
        self._counts = dict.fromkeys(_DONE, 0)
        self._reported = now
        return total, round(elapsed, 3), detail
