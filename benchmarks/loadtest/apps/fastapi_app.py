"""The FastAPI app of the load test; ``LOADTEST_LIB`` picks the limiter.

- ``bare``: no limiter;
- ``ours``: ``RateLimitMiddleware`` with ``limits.toml`` (as for Starlette);
- ``fastapi-limiter``: fastapi-limiter 0.1.x dependencies on the same Redis.

    LOADTEST_LIB=fastapi-limiter uvicorn --app-dir benchmarks/loadtest/apps fastapi_app:app --workers 2
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from loadtest_settings import BODY, LIMITS_FILE, PER_CLIENT, SHARED, client_of, library, redis_url, tenant_of


def build(lifespan: Any = None, calls_deps: Sequence[Any] = (), shared_deps: Sequence[Any] = ()) -> FastAPI:
    app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/api/calls", dependencies=list(calls_deps))
    async def calls() -> Response:
        return Response(BODY, media_type="application/json")

    @app.get("/api/global", dependencies=list(shared_deps))
    async def shared() -> Response:
        return Response(BODY, media_type="application/json")

    @app.get("/health")
    async def health() -> Response:
        return Response(BODY, media_type="application/json")

    return app


def bare() -> FastAPI:
    return build()


def ours() -> FastAPI:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    from bisman_ratelimit import AsyncLimiter
    from bisman_ratelimit.metrics import RateLimitMetrics
    from bisman_ratelimit.web import storage_url_from_env
    from bisman_ratelimit_starlette import RateLimitMiddleware

    registry = CollectorRegistry()
    metrics = RateLimitMetrics(registry=registry)
    limiter = AsyncLimiter.from_url(storage_url_from_env("memory://"))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await limiter.aclose()

    app = build(lifespan)

    @app.get("/metrics")
    async def scrape() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(RateLimitMiddleware, limiter=limiter, config=LIMITS_FILE, metrics=metrics)
    return app


def fastapi_limiter() -> FastAPI:
    import redis.asyncio
    from fastapi_limiter import FastAPILimiter
    from fastapi_limiter.depends import RateLimiter

    async def by_client(request: Request) -> str:
        return client_of(request.headers)

    async def by_tenant(request: Request) -> str:
        return tenant_of(request.headers)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        connection = redis.asyncio.Redis.from_url(redis_url())
        await FastAPILimiter.init(connection)
        yield
        await FastAPILimiter.close()

    return build(
        lifespan,
        [Depends(RateLimiter(times=PER_CLIENT, seconds=1, identifier=by_client))],
        [Depends(RateLimiter(times=SHARED, seconds=1, identifier=by_tenant))],
    )


app = {"bare": bare, "ours": ours, "fastapi-limiter": fastapi_limiter}[library()]()
