"""``path("admin/ratelimit/", include("bisman_ratelimit_django.admin_panel.urls"))``."""

from __future__ import annotations

from django.urls import path

from . import _views as views

__all__ = ["app_name", "urlpatterns"]

app_name = "bisman_ratelimit_admin"
urlpatterns = [
    path("", views.flags, name="index"),
    path("flags", views.flags, name="flags"),
    path("flags/set", views.set_flag, name="set_flag"),
    path("flags/delete", views.delete_flag, name="delete_flag"),
    path("limits", views.limits, name="limits"),
    path("limits/reset", views.reset_client, name="reset_client"),
    path("sessions", views.sessions, name="sessions"),
    path("sessions/logout", views.logout_everywhere, name="logout_everywhere"),
    path("namespaces", views.namespaces, name="namespaces"),
    path("health", views.health, name="health"),
]
