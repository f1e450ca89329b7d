"""The Starlette app of the load test; ``LOADTEST_LIB`` picks the limiter.

- ``bare``: no limiter;
- ``floor``: one raw EVALSHA of INCR and PEXPIRE per request (redis.asyncio),
  the least a Redis-backed limit can cost;
- ``ours``: ``RateLimitMiddleware`` with ``limits.toml``, on the storage
  ``BISMAN_RATELIMIT_STORAGE_URL`` names (memory, or Redis with the fallback);
  with ``LOADTEST_DECLARE=decorator`` the same limits in ``@limit`` decorators;
- ``slowapi``: slowapi's ASGI middleware and decorators on the same Redis.

    LOADTEST_LIB=ours uvicorn --app-dir benchmarks/loadtest/apps starlette_app:app --workers 2
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from loadtest_settings import (
    BODY,
    LIMITS_FILE,
    PER_CLIENT,
    SHARED,
    client_of,
    declared,
    library,
    redis_url,
    tenant_of,
)
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

Endpoint = Callable[[Request], Any]


async def calls(request: Request) -> Response:
    return Response(BODY, media_type="application/json")


async def shared(request: Request) -> Response:
    return Response(BODY, media_type="application/json")


async def health(request: Request) -> Response:
    return Response(BODY, media_type="application/json")


def routes(calls: Endpoint = calls, shared: Endpoint = shared, extra: tuple[Route, ...] = ()) -> list[Route]:
    return [Route("/api/calls", calls), Route("/api/global", shared), Route("/health", health), *extra]


def bare() -> Starlette:
    return Starlette(routes=routes())


def floor() -> Starlette:
    import redis.asyncio

    # As many connections as ours may hold (64), waited for rather than refused when all are busy.
    pool = redis.asyncio.BlockingConnectionPool.from_url(redis_url(), max_connections=64, timeout=5)
    client = redis.asyncio.Redis(connection_pool=pool)
    script = client.register_script(
        "local n = redis.call('INCR', KEYS[1]) "
        "if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end "
        "return n"
    )

    def limited(endpoint: Endpoint, limit: int, key: Callable[[Request], str]) -> Endpoint:
        async def guarded(request: Request) -> Response:
            if await script(keys=[key(request)], args=[1000]) > limit:
                return Response(status_code=429)
            return await endpoint(request)

        return guarded

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

    return Starlette(
        routes=routes(
            limited(calls, PER_CLIENT, lambda r: "floor:c:" + client_of(r.headers)),
            limited(shared, SHARED, lambda r: "floor:t:" + tenant_of(r.headers)),
        ),
        lifespan=lifespan,
    )


def ours() -> Starlette:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    from bisman_ratelimit import AsyncLimiter
    from bisman_ratelimit.metrics import RateLimitMetrics
    from bisman_ratelimit.web import storage_url_from_env
    from bisman_ratelimit_starlette import RateLimitMiddleware, limit

    registry = CollectorRegistry()
    metrics = RateLimitMetrics(registry=registry)
    limiter = AsyncLimiter.from_url(storage_url_from_env("memory://"))

    async def scrape(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await limiter.aclose()

    extra = (Route("/metrics", scrape),)
    if declared() == "decorator":
        # limits.toml's limits, written on the endpoints.
        per_client = limit(f"{PER_CLIENT}/second", key="header:x-client", algorithm="fixed_window")(calls)
        all_clients = limit(f"{SHARED}/second", key="header:x-tenant", algorithm="fixed_window")(shared)
        return Starlette(
            routes=routes(per_client, all_clients, extra),
            middleware=[Middleware(RateLimitMiddleware, limiter=limiter, metrics=metrics)],
            lifespan=lifespan,
        )
    return Starlette(
        routes=routes(extra=extra),
        middleware=[Middleware(RateLimitMiddleware, limiter=limiter, config=LIMITS_FILE, metrics=metrics)],
        lifespan=lifespan,
    )


def slowapi() -> Starlette:
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded
    from slowapi.middleware import SlowAPIASGIMiddleware

    limiter = Limiter(
        key_func=lambda request: client_of(request.headers),
        storage_uri=redis_url(),
        strategy="fixed-window",
        headers_enabled=False,
    )
    per_client = limiter.limit(f"{PER_CLIENT}/second")(calls)
    all_clients = limiter.limit(f"{SHARED}/second", key_func=lambda request: tenant_of(request.headers))(
        shared
    )
    app = Starlette(routes=routes(per_client, all_clients), middleware=[Middleware(SlowAPIASGIMiddleware)])
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
    return app


app = {"bare": bare, "floor": floor, "ours": ours, "slowapi": slowapi}[library()]()
