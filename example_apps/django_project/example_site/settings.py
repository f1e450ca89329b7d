"""Settings of the example project.

The limits come from ``example_apps/ratelimits.toml``, shared with the
Starlette and FastAPI examples. Counters, sessions, chat context, presence
and flags live in memory unless ``BISMAN_RATELIMIT_STORAGE_URL`` names a
Redis server, e.g. ``redis://127.0.0.1:6379/0``.
"""

from __future__ import annotations

import os
from pathlib import Path

from example_site import stores

BASE_DIR = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = BASE_DIR.parent

# A demo project: never deploy this key.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-insecure-key-never-deploy-this-one")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "bisman_ratelimit_django",
    "example_site",  # its templates
]

MIDDLEWARE = [
    # A session store that cannot be reached answers 503, never an empty session.
    "bisman_ratelimit_django.sessions.SessionStoreUnavailableMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    # Stands in for AuthenticationMiddleware, so the example needs no database.
    "example_site.auth.DemoUserMiddleware",
    "bisman_ratelimit_django.middleware.RateLimitMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
            ]
        },
    }
]

# Server-side sessions in the same storage as the limits: Redis hashes with a rolling TTL.
SESSION_ENGINE = "bisman_ratelimit_django.sessions"
BISMAN_SESSIONS = {"URL": stores.STORAGE_URL}
SESSION_COOKIE_AGE = 1800  # the idle timeout, renewed by every request: the seed's auth:sess TTL

ROOT_URLCONF = "example_site.urls"
WSGI_APPLICATION = "example_site.wsgi.application"
ASGI_APPLICATION = "example_site.asgi.application"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

BISMAN_RATELIMIT = {
    # The one name every plugin, example and the command line read; a near miss warns.
    "STORAGE_URL": stores.STORAGE_URL,
    "CONFIG": EXAMPLES_DIR / "ratelimits.toml",
    # Behind one reverse proxy, set BISMAN_RATELIMIT_TRUSTED_PROXIES=1 to read X-Forwarded-For.
    "TRUSTED_PROXIES": int(os.environ.get("BISMAN_RATELIMIT_TRUSTED_PROXIES", "0")),
    "METRICS": stores.metrics,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"named": {"format": "%(levelname)s [%(name)s] %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "named"}},
    "loggers": {
        "django": {"handlers": ["console"], "level": "INFO"},
        # Shadow refusals, outages and the breaker's changes (recoveries at INFO).
        "bisman_ratelimit": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
