"""Django integration of bisman-ratelimit.

- ``bisman_ratelimit_django.middleware.RateLimitMiddleware`` applies the
  limits of ``settings.BISMAN_RATELIMIT`` and its limits file;
- ``@ratelimit("5/minute", key="ip")`` limits one view;
- ``"bisman_ratelimit_django"`` in ``INSTALLED_APPS`` adds system checks.

See docs/django.md.
"""

from __future__ import annotations

from ._decorators import ratelimit, ratelimit_exempt
from ._guard import RateLimitResult

__all__ = ["RateLimitResult", "ratelimit", "ratelimit_exempt"]
