"""A small app for the tests under load: one limit per client address, on Redis.

Settings come from the environment: ``LOADED_STORAGE`` (the storage URL),
``LOADED_LIMIT``, and ``LOADED_STALL`` (seconds ``/stall`` holds the loop).
``/stats`` tells what the test cannot see from outside: requests decided
without Redis, and how often the breaker opened.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bisman_ratelimit import AsyncLimiter
from bisman_ratelimit.backends import AsyncFallbackStorage
from bisman_ratelimit.metrics import RateLimitMetrics
from bisman_ratelimit_starlette import RateLimitMiddleware, exempt


class Warnings(logging.Handler):
    """Keeps the middleware's warnings, e.g. of a request let through undecided (the first few)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.messages) < 5:
            self.messages.append(record.getMessage())


warnings = Warnings()
logging.getLogger("bisman_ratelimit.starlette").addHandler(warnings)
registry = CollectorRegistry()
metrics = RateLimitMetrics(registry=registry)
limiter = AsyncLimiter.from_url(os.environ["LOADED_STORAGE"])
STALL = float(os.environ.get("LOADED_STALL", "0.08"))


async def home(request: Request) -> Response:
    return PlainTextResponse("ok")


async def stall(request: Request) -> Response:
    # Work that holds the event loop, as a careless handler does.
    time.sleep(STALL)
    return PlainTextResponse("stalled")


@exempt
async def stats(request: Request) -> Response:
    storage = limiter.storage
    breaker = storage.breaker if isinstance(storage, AsyncFallbackStorage) else None
    undecided = {
        f"{sample.labels['cause']}/{sample.labels['reaction']}": sample.value
        for family in registry.collect()
        if family.name == "app_rate_limit_undecided"
        for sample in family.samples
        if sample.name.endswith("_total")
    }
    return JSONResponse(
        {
            "warnings": warnings.messages,
            "undecided": undecided,
            "opened": breaker.stats().opened if breaker is not None else None,
            "answered_locally": storage.answered_locally if breaker is not None else None,
        }
    )


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    yield
    await limiter.aclose()


app = Starlette(
    routes=[Route("/", home), Route("/stall", stall), Route("/stats", stats)],
    lifespan=lifespan,
)
app.add_middleware(
    RateLimitMiddleware,
    limiter=limiter,
    default_limits=os.environ["LOADED_LIMIT"],
    metrics=metrics,
    routes=app.routes,
)
