"""Rate limits for Starlette and FastAPI apps, on bisman-ratelimit.

- :class:`RateLimitMiddleware`: every route, from a limits file or defaults;
- :func:`limit` / :func:`exempt`: declarations on Starlette endpoints;
- :class:`RateLimit`: a FastAPI dependency.
"""

from __future__ import annotations

from .decorators import exempt, limit
from .dependencies import RateLimit, RateLimitExceeded, rate_limit_exceeded_handler
from .middleware import RateLimitMiddleware
from .sessions import SessionMiddleware

__all__ = [
    "RateLimit",
    "RateLimitExceeded",
    "RateLimitMiddleware",
    "SessionMiddleware",
    "exempt",
    "limit",
    "rate_limit_exceeded_handler",
]
