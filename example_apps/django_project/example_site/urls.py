"""Routes written as the shared limits file names them (``/chat/threads/{thread_id}/messages``)."""

from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("", views.index),
    path("auth/login", views.login),
    path("api/calls", views.calls),
    path("chat/threads/<str:thread_id>/messages", views.messages),
    path("health", views.health),
    path("search", views.search),
]
