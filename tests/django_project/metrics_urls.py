"""URL patterns with the library's metrics view, on a registry of their own."""

from __future__ import annotations

from django.urls import path
from prometheus_client import CollectorRegistry

from bisman_ratelimit.metrics import RateLimitMetrics
from bisman_ratelimit_django.views import make_metrics_view

from . import views

REGISTRY = CollectorRegistry()
METRICS = RateLimitMetrics(registry=REGISTRY)

urlpatterns = [
    path("plain/", views.plain),
    path("metrics", make_metrics_view(REGISTRY)),
    path("metrics-counted", make_metrics_view(REGISTRY, exempt=False)),
]
