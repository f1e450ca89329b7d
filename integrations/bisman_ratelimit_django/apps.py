"""The Django app: add ``"bisman_ratelimit_django"`` to ``INSTALLED_APPS`` for the system checks."""

from __future__ import annotations

from django.apps import AppConfig
from django.core import checks

from ._checks import check_settings

__all__ = ["BismanRateLimitConfig"]


class BismanRateLimitConfig(AppConfig):
    name = "bisman_ratelimit_django"
    verbose_name = "bisman-ratelimit"

    def ready(self) -> None:
        checks.register(check_settings, "bisman_ratelimit")
