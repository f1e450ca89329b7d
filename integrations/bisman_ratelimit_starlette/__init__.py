"""Rate limits for Starlette and FastAPI apps, on bisman-ratelimit.

- :class:`RateLimitMiddleware`: every route, from a limits file or defaults;
- :func:`limit` / :func:`exempt`: declarations on Starlette endpoints;
- :class:`RateLimit`: a FastAPI dependency.
"""

from __future__ import annotations

from ._decorators import exempt, limit
from ._dependencies import RateLimit, RateLimitExceeded, rate_limit_exceeded_handler
from ._middleware import RateLimitMiddleware
from ._sessions import SessionMiddleware

__all__ = [
    "RateLimit",
    "RateLimitExceeded",
    "RateLimitMiddleware",
    "SessionMiddleware",
    "exempt",
    "limit",
    "rate_limit_exceeded_handler",
]
