"""Settings of the example project.

The limits come from ``example_apps/ratelimits.toml``, shared with the
Starlette and FastAPI examples. Counters live in memory unless
``BISMAN_RATELIMIT_STORAGE_URL`` names a Redis server, e.g.
``redis://127.0.0.1:6379/0``.
"""

from __future__ import annotations

import os
from pathlib import Path

from bisman_ratelimit.web import storage_url_from_env

BASE_DIR = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = BASE_DIR.parent

# A demo project: never deploy this key.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-insecure-key")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "bisman_ratelimit_django",
]

MIDDLEWARE = [
    # Stands in for AuthenticationMiddleware, so the example needs no database.
    "example_site.auth.BearerUserMiddleware",
    "bisman_ratelimit_django.middleware.RateLimitMiddleware",
]

ROOT_URLCONF = "example_site.urls"
WSGI_APPLICATION = "example_site.wsgi.application"
ASGI_APPLICATION = "example_site.asgi.application"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

BISMAN_RATELIMIT = {
    # The one name every plugin, example and the command line read; a near miss warns.
    "STORAGE_URL": storage_url_from_env("memory://"),
    "CONFIG": EXAMPLES_DIR / "ratelimits.toml",
    # Behind one reverse proxy, set BISMAN_RATELIMIT_TRUSTED_PROXIES=1 to read X-Forwarded-For.
    "TRUSTED_PROXIES": int(os.environ.get("BISMAN_RATELIMIT_TRUSTED_PROXIES", "0")),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django": {"handlers": ["console"], "level": "INFO"}},
}
