"""FastAPI: Depends(RateLimit(...)) with and without the middleware; one round trip per request."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
import redis
from fastapi import APIRouter, Depends, FastAPI
from starlette.requests import Request
from support import ManualClock

from bisman_ratelimit import AsyncLimiter, ConfigurationError
from bisman_ratelimit.backends import MemoryStorage
from bisman_ratelimit_starlette import (
    RateLimit,
    RateLimitExceeded,
    RateLimitMiddleware,
    limit,
    rate_limit_exceeded_handler,
)


def client(app: Any, ip: str = "198.51.100.7") -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app, client=(ip, 5000)), base_url="http://testserver"
    )


def make_app(limiter: AsyncLimiter | None, **options: Any) -> FastAPI:
    app = FastAPI()

    # The endpoint has no request parameter: the dependency needs none.
    @app.get("/quotes/{quote_id}", dependencies=[Depends(RateLimit("2/minute", algorithm="fixed_window"))])
    async def quote(quote_id: int) -> dict[str, int]:
        return {"quote": quote_id}

    router = APIRouter(
        prefix="/admin", dependencies=[Depends(RateLimit("1/minute", algorithm="fixed_window"))]
    )

    @router.get("/stats")
    async def stats() -> dict[str, str]:
        return {"stats": "ok"}

    app.include_router(router)
    if limiter is not None:
        app.add_middleware(RateLimitMiddleware, limiter=limiter, **options)
    return app


async def test_dependency_enforced_by_the_middleware(clock: ManualClock) -> None:
    app = make_app(AsyncLimiter(MemoryStorage(clock=clock)))
    async with client(app) as c:
        first = await c.get("/quotes/1")
        assert first.json() == {"quote": 1}
        assert first.headers["ratelimit-policy"] == '"/quotes/{quote_id}";q=2;w=60'
        assert first.headers["ratelimit"] == '"/quotes/{quote_id}";r=1;t=60'
        assert (await c.get("/quotes/2")).status_code == 200
        refused = await c.get("/quotes/3")
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "60"
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["violated-policies"] == ["/quotes/{quote_id}"]


async def test_router_level_dependency(clock: ManualClock) -> None:
    app = make_app(AsyncLimiter(MemoryStorage(clock=clock)))
    async with client(app) as c:
        assert (await c.get("/admin/stats")).status_code == 200
        assert (await c.get("/admin/stats")).status_code == 429


async def test_one_round_trip_per_request_on_redis(redis_url: str) -> None:
    limiter = AsyncLimiter.from_url(redis_url)
    app = make_app(limiter, default_limits="100/minute", global_limits="1000/minute")

    @app.get("/both")
    @limit("5/minute")
    async def both() -> dict[str, str]:
        return {"both": "yes"}

    try:
        with redis.Redis.from_url(redis_url) as admin:
            async with client(app) as c:
                await c.get("/both")  # loads the script
                admin.config_resetstat()
                for left in (3, 2, 1):
                    response = await c.get("/both")
                    assert response.status_code == 200
                    # The global limit is checked in the same call, and stays out of the headers.
                    assert re.fullmatch(rf'"/both";r={left};t=\d+', response.headers["ratelimit"])
                stats = admin.info("commandstats")
            # One script call per request; nothing else went over the wire but the reset.
            assert stats["cmdstat_evalsha"]["calls"] == 3
            assert not {"cmdstat_eval", "cmdstat_script|load", "cmdstat_get", "cmdstat_incr"} & set(stats)
    finally:
        await limiter.aclose()


async def test_limit_decorator_on_a_fastapi_endpoint_in_either_order(clock: ManualClock) -> None:
    app = FastAPI()

    @app.get("/inside")
    @limit("1/minute", algorithm="fixed_window")
    async def inside() -> dict[str, str]:
        return {"where": "inside"}

    @limit("1/minute", algorithm="fixed_window")
    @app.get("/outside")
    async def outside() -> dict[str, str]:
        return {"where": "outside"}

    app.add_middleware(RateLimitMiddleware, limiter=AsyncLimiter(MemoryStorage(clock=clock)))
    async with client(app) as c:
        for path in ("/inside", "/outside"):
            assert (await c.get(path)).status_code == 200
            assert (await c.get(path)).status_code == 429, path


async def test_standalone_dependency_with_a_limiter(clock: ManualClock) -> None:
    limiter = AsyncLimiter(MemoryStorage(clock=clock))
    app = FastAPI()
    app.add_exception_handler(RateLimitExceeded, rate_limit_exceeded_handler)

    @app.get(
        "/alone", dependencies=[Depends(RateLimit("2/minute", algorithm="fixed_window", limiter=limiter))]
    )
    async def alone() -> dict[str, str]:
        return {"alone": "yes"}

    async with client(app) as c:
        first = await c.get("/alone")
        assert first.headers["ratelimit"] == '"/alone";r=1;t=60'
        assert first.headers["ratelimit-policy"] == '"/alone";q=2;w=60'
        await c.get("/alone")
        refused = await c.get("/alone")
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "60"
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["detail"] == "Rate limit exceeded; retry in 60 seconds."


async def test_standalone_without_the_handler_still_sends_retry_after(clock: ManualClock) -> None:
    limiter = AsyncLimiter(MemoryStorage(clock=clock))
    app = FastAPI()

    @app.get("/plain")
    async def plain(
        _: None = Depends(RateLimit("1/minute", algorithm="fixed_window", limiter=limiter)),
    ) -> str:
        return "ok"

    async with client(app) as c:
        await c.get("/plain")
        refused = await c.get("/plain")
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "60"
    assert refused.json() == {"detail": "Rate limit exceeded; retry in 60 seconds."}


async def test_no_middleware_and_no_limiter_is_an_error() -> None:
    app = FastAPI()

    @app.get("/oops", dependencies=[Depends(RateLimit("1/minute"))])
    async def oops(request: Request) -> str:
        return "never"

    async with client(app) as c:
        with pytest.raises(ConfigurationError, match=r"RateLimit\('1/minute'\) is not enforced"):
            await c.get("/oops")
