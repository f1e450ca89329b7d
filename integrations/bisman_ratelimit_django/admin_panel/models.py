"""The panel's permissions, one per page, on a model without a table."""

from __future__ import annotations

from django.db import models

__all__ = ["Panel"]


class Panel(models.Model):
    """Holds the panel's permissions; there is no table and no row."""

    class Meta:
        managed = False
        default_permissions = ()
        verbose_name = "admin panel"
        verbose_name_plural = "admin panel"
        permissions = [
            ("view_flags", "Can see and change feature flags"),
            ("view_limits", "Can see rate limits and reset a client's limit"),
            ("view_sessions", "Can see session counts and log a user out everywhere"),
            ("view_namespaces", "Can see namespaces"),
            ("view_health", "Can see the Redis server's health"),
        ]
