"""Settings of the example project.

The limits come from ``example_apps/ratelimits.toml``, shared with the
Starlette and FastAPI examples. Counters, sessions, chat context, presence
and flags live in memory unless ``BISMAN_RATELIMIT_STORAGE_URL`` names a
Redis server, e.g. ``redis://127.0.0.1:6379/0``.

The admin site and the rate-limit admin panel (``/admin/``) keep their users
and permissions in SQLite: ``build/example.sqlite3`` here (git-ignored), or the
file ``DJANGO_DATABASE`` names. Start-up migrates it and adds the demo users.
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
    "django.contrib.admin",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.messages",
    "django.contrib.staticfiles",  # the admin site's CSS
    "bisman_ratelimit_django",
    # The panel's pages in the admin site, one permission each (docs/admin.md).
    "bisman_ratelimit_django.admin_panel",
    "example_site",  # its templates
]

MIDDLEWARE = [
    # A session store that cannot be reached answers 503, never an empty session.
    "bisman_ratelimit_django.sessions.SessionStoreUnavailableMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    # Stands in for AuthenticationMiddleware: the user the example's own login put in the session.
    "example_site.auth.DemoUserMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
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
                "django.contrib.messages.context_processors.messages",
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
DATABASE_FILE = Path(os.environ.get("DJANGO_DATABASE") or BASE_DIR / "build" / "example.sqlite3")
DATABASE_FILE.parent.mkdir(parents=True, exist_ok=True)
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": DATABASE_FILE}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
# The admin site signs in through the example's own login, which returns to where it was sent from.
LOGIN_URL = "/login"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "/static/"

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
