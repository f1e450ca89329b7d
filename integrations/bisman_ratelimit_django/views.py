"""A Prometheus metrics view for Django.

::

    from bisman_ratelimit_django.views import metrics_view
    urlpatterns = [path("metrics", metrics_view)]

or, for a registry of your own, ``path("metrics", make_metrics_view(registry))``.
Keep the URL off the public internet (a firewall, or a view wrapper that
checks the caller): the figures describe your traffic.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder

__all__ = ["make_metrics_view", "metrics_view"]


def make_metrics_view(registry: CollectorRegistry | None = None) -> Callable[[HttpRequest], HttpResponse]:
    """A view that answers ``GET``/``HEAD`` with ``registry``'s exposition (default ``REGISTRY``)."""
    target = REGISTRY if registry is None else registry

    def metrics(request: HttpRequest) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            return HttpResponseNotAllowed(["GET", "HEAD"])
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return HttpResponse(encoder(target), content_type=content_type)

    return metrics


metrics_view = make_metrics_view()
"""The view for prometheus' default registry."""
