"""Settings of the load test's Django project; ``LOADTEST_LIB`` picks the limiter.

- ``bare``: no limiter;
- ``ours``: ``bisman_ratelimit_django``'s middleware with ``limits.toml``
  (with ``LOADTEST_DECLARE=decorator``, the same limits in ``@ratelimit`` on the views);
- ``django-ratelimit``: its ``@ratelimit`` on Django's own Redis cache.
"""

from __future__ import annotations

from typing import Any

from loadtest_settings import LIMITS_FILE, declared, library, redis_url

SECRET_KEY = "load test only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "django_urls"
INSTALLED_APPS: list[str] = []
DATABASES: dict[str, Any] = {}
USE_TZ = True
MIDDLEWARE: list[str] = []
LOGGING_CONFIG = None

if library() == "ours":
    from prometheus_client import CollectorRegistry

    from bisman_ratelimit.metrics import RateLimitMetrics

    METRICS_REGISTRY = CollectorRegistry()
    MIDDLEWARE = ["bisman_ratelimit_django.middleware.RateLimitMiddleware"]
    BISMAN_RATELIMIT: dict[str, Any] = {"METRICS": RateLimitMetrics(registry=METRICS_REGISTRY)}
    if declared() != "decorator":
        BISMAN_RATELIMIT["CONFIG"] = LIMITS_FILE
elif library() == "django-ratelimit":
    # Its middleware turns the refusal into RATELIMIT_VIEW's answer (429), not a 403.
    MIDDLEWARE = ["django_ratelimit.middleware.RatelimitMiddleware"]
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": redis_url()}}
    RATELIMIT_USE_CACHE = "default"
    RATELIMIT_VIEW = "django_urls.limited"
