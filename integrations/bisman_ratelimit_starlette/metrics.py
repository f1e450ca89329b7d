"""A ``/metrics`` endpoint for Prometheus, as a pure ASGI app.

::

    from starlette.routing import Route
    from bisman_ratelimit_starlette.metrics import MetricsEndpoint

    routes = [Route("/metrics", MetricsEndpoint(registry=registry))]

It answers ``GET`` and ``HEAD`` with the registry's exposition, in
OpenMetrics when the scraper asks for it, else the Prometheus text format;
under several worker processes with ``PROMETHEUS_MULTIPROC_DIR`` set, the
figures of every worker added up (docs/metrics.md).
``RateLimitMiddleware`` never limits it (``exempt=False`` to count it like
any route), so the scrape still answers while the global limit sheds load.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from bisman_ratelimit import InvalidArgument
from bisman_ratelimit.metrics import exposition

from ._spec import MARKER, Marker

__all__ = ["MetricsEndpoint"]


class MetricsEndpoint:
    """Serves ``registry`` (default: prometheus' default ``REGISTRY``); exempt from rate limits
    unless ``exempt=False``."""

    def __init__(self, *, registry: CollectorRegistry | None = None, exempt: bool = True) -> None:
        if not isinstance(exempt, bool):
            raise InvalidArgument(f"exempt must be True or False, got {exempt!r}")
        self.registry = REGISTRY if registry is None else registry
        if exempt:
            # Read by the middleware as the @exempt decorator's mark: the scrape that shows an
            # overload must not be shed by it.
            setattr(self, MARKER, Marker(exempt=True))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise RuntimeError(f"MetricsEndpoint serves HTTP only, got a {scope['type']!r} scope")
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            response = Response("method not allowed\n", status_code=405, headers={"Allow": "GET, HEAD"})
        else:
            # Collectors such as RedisCollector do blocking I/O; a scrape every few seconds keeps it short.
            body, content_type = exposition(self.registry, Headers(scope=scope).get("accept", ""))
            response = Response(b"" if method == "HEAD" else body, headers={"Content-Type": content_type})
        await response(scope, receive, send)
