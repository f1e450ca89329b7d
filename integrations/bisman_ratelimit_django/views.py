"""A Prometheus metrics view for Django.

::

    from bisman_ratelimit_django.views import metrics_view
    urlpatterns = [path("metrics", metrics_view)]

or, for a registry of your own, ``path("metrics", make_metrics_view(registry))``.
Under several worker processes with ``PROMETHEUS_MULTIPROC_DIR`` set, it
answers with the figures of every worker added up (docs/metrics.md).
The view is exempt from rate limits (``exempt=False`` counts it like any
view), so the scrape still answers while the global limit sheds load.
Keep the URL off the public internet (a firewall, or a view wrapper that
checks the caller): the figures describe your traffic.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from prometheus_client import REGISTRY, CollectorRegistry

from bisman_ratelimit import InvalidArgument
from bisman_ratelimit.metrics import exposition

from ._decorators import ratelimit_exempt

__all__ = ["make_metrics_view", "metrics_view"]


def make_metrics_view(
    registry: CollectorRegistry | None = None, *, exempt: bool = True
) -> Callable[[HttpRequest], HttpResponse]:
    """A view that answers ``GET``/``HEAD`` with ``registry``'s exposition (default ``REGISTRY``),
    exempt from rate limits unless ``exempt=False``."""
    if not isinstance(exempt, bool):
        raise InvalidArgument(f"exempt must be True or False, got {exempt!r}")
    target = REGISTRY if registry is None else registry

    def metrics(request: HttpRequest) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            return HttpResponseNotAllowed(["GET", "HEAD"])
        body, content_type = exposition(target, request.headers.get("Accept", ""))
        return HttpResponse(body, content_type=content_type)

    return ratelimit_exempt(metrics) if exempt else metrics


metrics_view = make_metrics_view()
"""The view for prometheus' default registry."""
