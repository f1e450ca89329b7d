"""Routes written as the shared limits file names them (``/chat/threads/{thread_id}/messages``)."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.staticfiles.views import serve
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from bisman_ratelimit_django.views import make_metrics_view

from . import stores, views

urlpatterns = [
    path("", views.index),
    path("auth/login", views.login),
    path("api/calls", views.calls),
    path("chat/threads/<str:thread_id>/messages", views.messages),
    path("health", views.health),
    path("search", views.search),
    # Exempt from every limit, so the scrape still answers while the global limit sheds load.
    path("metrics", make_metrics_view(stores.registry)),
    path("login", views.login_page),
    path("logout", views.logout),
    path("session", views.session_page),
    path("chat/<str:thread_id>", views.chat_page),
    path("calls/<str:room>", views.call_page),
    path("calls/<str:room>/<str:action>", views.call_action),
    path("api/calls/<str:room>/participants", views.participants),
    path("flags", views.flags_view),
]

# The admin site and, under it, the rate-limit panel for staff with the panel's permissions.
urlpatterns += [
    # The admin site's CSS, served by Django itself even without DEBUG: a demo has no web server.
    re_path(r"^static/(?P<path>.*)$", serve, {"insecure": True}),
    # The admin site signs in through the example's login, then returns (?next= is kept).
    path("admin/login/", RedirectView.as_view(url="/login", query_string=True)),
    path("admin/ratelimit/", include("bisman_ratelimit_django.admin_panel.urls")),
    path("admin/", admin.site.urls),
]
