"""A pool with no free connection is load, not an outage: no request goes through unchecked."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bisman_ratelimit import AsyncLimiter
from bisman_ratelimit.backends import AsyncRedisStorage
from bisman_ratelimit.metrics import RateLimitMetrics
from bisman_ratelimit_starlette import RateLimitMiddleware


async def item(request: Request) -> Response:
    return PlainTextResponse("item")


@pytest.mark.parametrize(
    "limits",
    [{"default_limits": "1/day"}, {"default_limits": "1/day", "global_limits": "100/day"}],
    ids=["fast path", "general path"],
)
async def test_a_busy_pool_is_decided_in_this_process_even_when_failing_open(
    redis_url: str, caplog: pytest.LogCaptureFixture, limits: dict[str, str]
) -> None:
    registry = CollectorRegistry()
    metrics = RateLimitMetrics(registry=registry)
    async with AsyncLimiter.from_url(redis_url + "?max_connections=4") as limiter:
        storage = limiter.storage
        assert isinstance(storage, AsyncRedisStorage)
        lender: Any = storage._wire.lender
        lender.pool.timeout = 0.05
        held = [await lender._take() for _ in range(4)]
        app = Starlette(
            routes=[Route("/items/{id}", item)],
            # fail_open is the default: a Redis outage lets requests through.
            middleware=[Middleware(RateLimitMiddleware, limiter=limiter, metrics=metrics, **limits)],
        )
        transport = httpx.ASGITransport(app, client=("198.51.100.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            statuses = [(await client.get("/items/1")).status_code for _ in range(3)]
        for conn in held:
            await lender._give_back(conn)
    # This process's counters decide: one a day, then 429.
    assert statuses == [200, 429, 429]
    assert (
        registry.get_sample_value("app_rate_limit_undecided_total", {"cause": "busy", "reaction": "fallback"})
        == 3
    )
    assert "letting" not in caplog.text
    assert (
        "rate-limit storage unavailable (no Redis connection came free within 0.05 s (all 4 of the pool "
        "in use)): the outage policy answers requests until it is back "
        "(GET /items/1: counted in this process)"
    ) in caplog.text
