"""Rate limits for Flask, with Flask-Limiter's conventions: ``Limiter(key_func, app=...)``,
``@limiter.limit(...)``, ``@limiter.exempt``, ``shared_limit``, blueprint limits and the
``RATELIMIT_*`` settings. See docs/flask.md."""

from __future__ import annotations

from ._errors import RateLimitExceeded
from ._extension import Limiter

__all__ = ["Limiter", "RateLimitExceeded"]
