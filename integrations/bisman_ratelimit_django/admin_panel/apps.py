from __future__ import annotations

from django.apps import AppConfig, apps

__all__ = ["AdminPanelConfig"]


class AdminPanelConfig(AppConfig):
    """The admin panel's app: its permissions, its entry in the admin site, its templates."""

    name = "bisman_ratelimit_django.admin_panel"
    label = "bisman_ratelimit_admin"
    verbose_name = "Rate limits and flags"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        if apps.is_installed("django.contrib.admin"):
            from ._admin import register

            register()
