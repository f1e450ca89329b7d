"""What every app of the load test shares: the limits, the routes' answers, the environment it reads.

Each app serves the same three routes:

- ``GET /api/calls``: limited per client (``X-Client`` header) to
  ``PER_CLIENT`` requests per second, fixed window;
- ``GET /api/global``: one counter for every client (``X-Tenant: all``),
  ``SHARED`` requests per second: the overload phase drives it;
- ``GET /health``: never limited.

Ours also serves ``GET /metrics`` (Prometheus text of this worker).
The harness sets ``LOADTEST_LIB`` (which limiter), ``LOADTEST_REDIS_URL``
and, for ours, ``BISMAN_RATELIMIT_STORAGE_URL`` (and ``LOADTEST_LIMITS``,
another limits file, to measure another algorithm: ``cpu.py``; and
``LOADTEST_DECLARE``, where ours declares the same limits: ``paths.py``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

PER_CLIENT = 50
SHARED = 200
LIMITS_FILE = Path(os.environ.get("LOADTEST_LIMITS") or Path(__file__).with_name("limits.toml"))
BODY = b'{"ok":true}'
DECLARATIONS = ("file", "decorator", "dependency", "file+noop")


def library() -> str:
    return os.environ.get("LOADTEST_LIB", "bare")


def declared() -> str:
    """Where ours declares the limits: ``file`` (limits.toml, the default), ``decorator``
    (``@limit``, Django's ``@ratelimit``), ``dependency`` (FastAPI's ``Depends(RateLimit)``)
    or ``file+noop`` (the file, and on FastAPI a dependency that does nothing on both
    limited routes: what FastAPI spends on solving one)."""
    value = os.environ.get("LOADTEST_DECLARE", "file")
    if value not in DECLARATIONS:
        raise SystemExit(f"LOADTEST_DECLARE must be one of {', '.join(DECLARATIONS)}, not {value!r}")
    return value


def redis_url() -> str:
    return os.environ.get("LOADTEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class Headers(Protocol):
    def get(self, key: str) -> str | None: ...


def client_of(headers: Headers) -> str:
    """The client a request says it is; the peers' key functions call this."""
    return headers.get("x-client") or "anonymous"


def tenant_of(headers: Headers) -> str:
    return headers.get("x-tenant") or "all"
