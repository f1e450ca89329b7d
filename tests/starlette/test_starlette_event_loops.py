"""RateLimitMiddleware on a limiter built from a URL, in several event loops (``backends/_loops.py``)."""

from __future__ import annotations

import warnings
from collections import Counter

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bisman_ratelimit import AsyncLimiter
from bisman_ratelimit_starlette import RateLimitMiddleware

with warnings.catch_warnings():
    # Starlette 1.x would have its TestClient on httpx2; on httpx it works and says so.
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient` is deprecated")
    from starlette.testclient import TestClient


def test_the_middleware_in_several_test_clients_answers_every_request(redis_url: str) -> None:
    limiter = AsyncLimiter.from_url(redis_url + "?timeout=50ms")

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hi")

    app = Starlette(
        routes=[Route("/", hello)],
        middleware=[
            Middleware(RateLimitMiddleware, limiter=limiter, default_limits=["1000/hour"], on_outage="closed")
        ],
    )
    for _ in range(2):
        with TestClient(app) as client:
            statuses = Counter(client.get("/").status_code for _ in range(20))
        assert statuses == {200: 20}
    # And a TestClient used without `with`: a loop per request.
    client = TestClient(app)
    assert Counter(client.get("/").status_code for _ in range(5)) == {200: 5}
