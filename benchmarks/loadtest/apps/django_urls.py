"""The load test's Django views, the same routes as the ASGI apps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import path
from loadtest_settings import BODY, PER_CLIENT, SHARED, client_of, declared, library, tenant_of

View = Callable[..., HttpResponse]


def ok(request: HttpRequest) -> HttpResponse:
    return HttpResponse(BODY, content_type="application/json")


def limited(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """django-ratelimit's refusal (its default is 403)."""
    return HttpResponse(status=429)


def scrape(request: HttpRequest) -> HttpResponse:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return HttpResponse(generate_latest(settings.METRICS_REGISTRY), content_type=CONTENT_TYPE_LATEST)


def views() -> tuple[View, View]:
    if library() == "ours" and declared() == "decorator":
        from bisman_ratelimit_django import ratelimit as declare

        # limits.toml's limits, written on the views.
        calls: Any = declare(f"{PER_CLIENT}/second", key="header:x-client", algorithm="fixed_window")(ok)
        shared: Any = declare(f"{SHARED}/second", key="header:x-tenant", algorithm="fixed_window")(ok)
        return calls, shared
    if library() != "django-ratelimit":
        return ok, ok
    from django_ratelimit.decorators import ratelimit

    def by_client(group: str, request: HttpRequest) -> str:
        return client_of(request.headers)

    def by_tenant(group: str, request: HttpRequest) -> str:
        return tenant_of(request.headers)

    return (
        ratelimit(key=by_client, rate=f"{PER_CLIENT}/s", block=True)(ok),
        ratelimit(key=by_tenant, rate=f"{SHARED}/s", block=True)(ok),
    )


calls, shared = views()
urlpatterns = [path("api/calls", calls), path("api/global", shared), path("health", ok)]
if library() == "ours":
    urlpatterns.append(path("metrics", scrape))
