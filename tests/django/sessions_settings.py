"""Settings that switch the test project to the session engine."""

from __future__ import annotations

from typing import Any

SECRET = "k" * 50

SESSION_SETTINGS: dict[str, Any] = {
    "SECRET_KEY": SECRET,
    "SECRET_KEY_FALLBACKS": [],
    "SESSION_ENGINE": "bisman_ratelimit_django.sessions",
    "SESSION_COOKIE_AGE": 1800,
    "ROOT_URLCONF": "sessions_urls",
    "MIDDLEWARE": [
        "bisman_ratelimit_django.sessions.SessionStoreUnavailableMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
    ],
}
