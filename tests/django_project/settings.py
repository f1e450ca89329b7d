"""Settings of the test project. Tests change BISMAN_RATELIMIT with override_settings."""

from __future__ import annotations

SECRET_KEY = "test-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "bisman_ratelimit_django",
    # Its models module is imported by the tests of the public surface.
    "bisman_ratelimit_django.admin_panel",
]
MIDDLEWARE = [
    "django_project.middleware.HeaderUserMiddleware",
    "bisman_ratelimit_django.middleware.RateLimitMiddleware",
]
ROOT_URLCONF = "django_project.urls"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
BISMAN_RATELIMIT: dict[str, object] = {}
