"""An app for the tests of metrics under several worker processes (uvicorn ``--workers``).

``WORKERS_STORAGE`` is the storage URL; one limit, 20 a minute per client
address. Every response names the worker that served it in ``X-Worker``.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bisman_ratelimit import AsyncLimiter
from bisman_ratelimit.backends import AsyncFallbackStorage
from bisman_ratelimit.metrics import RateLimitMetrics
from bisman_ratelimit_starlette import RateLimitMiddleware
from bisman_ratelimit_starlette.metrics import MetricsEndpoint

registry = CollectorRegistry()
metrics = RateLimitMetrics(registry=registry)
limiter = AsyncLimiter.from_url(os.environ["WORKERS_STORAGE"], fallback="memory")
if isinstance(limiter.storage, AsyncFallbackStorage):
    metrics.watch_breaker(limiter.storage.breaker)


class NameTheWorker:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.pid = str(os.getpid()).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_named(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"x-worker", self.pid)]
            await send(message)

        await self.app(scope, receive, send_named)


async def home(request: Request) -> Response:
    return PlainTextResponse("ok")


app = Starlette(routes=[Route("/", home), Route("/metrics", MetricsEndpoint(registry=registry))])
app.add_middleware(RateLimitMiddleware, limiter=limiter, default_limits="20/minute", metrics=metrics)
app.add_middleware(NameTheWorker)
