"""A Django app in one module for the tests of metrics under gunicorn's worker processes.

``WORKERS_STORAGE`` is the storage URL; one limit, 20 a minute per client
address. Every response names the worker that served it in ``X-Worker``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import django
from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest, HttpResponse
from django.urls import path
from prometheus_client import CollectorRegistry

from bisman_ratelimit import AsyncLimiter, Limiter
from bisman_ratelimit.backends import FallbackStorage
from bisman_ratelimit.metrics import RateLimitMetrics

REGISTRY = CollectorRegistry()
METRICS = RateLimitMetrics(registry=REGISTRY)
LIMITER = Limiter.from_url(os.environ["WORKERS_STORAGE"], fallback="memory")
assert isinstance(LIMITER.storage, FallbackStorage)
METRICS.watch_breaker(LIMITER.storage.breaker)
# Asked for with LIMITER (for async views), which this app has none of.
ASYNC_LIMITER = AsyncLimiter.from_url(os.environ["WORKERS_STORAGE"], fallback="memory")


def name_the_worker(
    get_response: Callable[[HttpRequest], HttpResponse],
) -> Callable[[HttpRequest], HttpResponse]:
    pid = str(os.getpid())

    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        response["X-Worker"] = pid
        return response

    return middleware


def home(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


settings.configure(
    SECRET_KEY="test-only-not-secret",
    DEBUG=False,
    ALLOWED_HOSTS=["127.0.0.1"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=["bisman_ratelimit_django"],
    MIDDLEWARE=[f"{__name__}.name_the_worker", "bisman_ratelimit_django.middleware.RateLimitMiddleware"],
    DATABASES={},
    BISMAN_RATELIMIT={
        "LIMITER": LIMITER,
        "ASYNC_LIMITER": ASYNC_LIMITER,
        "DEFAULT_LIMITS": "20/minute",
        "METRICS": METRICS,
    },
)
django.setup()

from bisman_ratelimit_django.views import make_metrics_view  # noqa: E402

urlpatterns = [path("", home), path("metrics", make_metrics_view(REGISTRY))]
application = get_wsgi_application()
