"""What shadow limits would have refused, in the log that default logging shows.

A shadow limit never refuses, so the log is where a rollout learns what it
would do. Python's and uvicorn's default logging show WARNING and above
from a library's logger, and nothing below: a :class:`ShadowLog` writes

- one WARNING the first time each shadow limit would refuse a request,
  naming the limit and the request;
- after that, at most one WARNING per limit every ``interval`` seconds,
  counting the requests it would have refused since the last line,

so a flood costs a line per limit and interval, never a line per request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from bisman_ratelimit.core import InvalidArgument

# Limits are named by the plans (file entries, declarations): few. A bound all the same.
_MAX_NAMES = 1000


class ShadowLog:
    """Logs shadow refusals for one plugin, rate-limited per limit; ``clock`` returns seconds."""

    def __init__(
        self, logger: logging.Logger, *, interval: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not interval > 0:
            raise InvalidArgument(
                f"shadow log interval must be a positive number of seconds, got {interval!r}"
            )
        self.logger = logger
        self.interval = float(interval)
        self.clock = clock
        self._lock = threading.Lock()
        # Per limit: when its last line was written, and the refusals since.
        self._reported: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def would_refuse(self, names: Iterable[str], what: str) -> None:
        """Shadow limits ``names`` would have refused the request ``what`` (e.g. ``"GET /search"``)."""
        now = self.clock()
        lines: list[tuple[str, int, float]] = []
        with self._lock:
            for name in names:
                count = self._counts.get(name, 0) + 1
                last = self._reported.get(name)
                if last is not None and now - last < self.interval:
                    self._counts[name] = count
                    continue
                if last is None and len(self._reported) >= _MAX_NAMES:
                    self._reported.clear()
                    self._counts.clear()
                self._reported[name] = now
                self._counts[name] = 0
                lines.append((name, count, -1.0 if last is None else now - last))
        for name, count, elapsed in lines:
            if elapsed < 0:
                self.logger.warning(
                    "shadow limit %s would refuse %s (let through: shadow mode); "
                    "further refusals are counted, one line per %g s",
                    name,
                    what,
                    self.interval,
                )
            else:
                self.logger.warning(
                    "shadow limit %s would have refused %d requests in the last %.0f s (the last: %s)",
                    name,
                    count,
                    elapsed,
                    what,
                )
