"""The FastAPI app of the load test; ``LOADTEST_LIB`` picks the limiter.

- ``bare``: no limiter;
- ``ours``: ``RateLimitMiddleware`` with ``limits.toml`` (as for Starlette);
  with ``LOADTEST_DECLARE=dependency`` the same limits as ``Depends(RateLimit(...))``,
  with ``decorator`` as ``@limit``, with ``file+noop`` the file and a dependency
  that does nothing;
- ``fastapi-limiter``: fastapi-limiter 0.1.x dependencies on the same Redis.

    LOADTEST_LIB=fastapi-limiter uvicorn --app-dir benchmarks/loadtest/apps fastapi_app:app --workers 2
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
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


def build(
    lifespan: Any = None,
    calls_deps: Sequence[Any] = (),
    shared_deps: Sequence[Any] = (),
    decorate: tuple[Callable[[Any], Any], Callable[[Any], Any]] = (lambda f: f, lambda f: f),
) -> FastAPI:
    """The routes; ``decorate`` wraps the two limited endpoints (``@limit``), under the route."""
    app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/api/calls", dependencies=list(calls_deps))
    @decorate[0]
    async def calls() -> Response:
        return Response(BODY, media_type="application/json")

    @app.get("/api/global", dependencies=list(shared_deps))
    @decorate[1]
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
    from bisman_ratelimit_starlette import RateLimit, RateLimitMiddleware, limit

    registry = CollectorRegistry()
    metrics = RateLimitMetrics(registry=registry)
    limiter = AsyncLimiter.from_url(storage_url_from_env("memory://"))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await limiter.aclose()

    async def noop() -> None:
        pass

    # limits.toml's limits, for the declarations in code.
    per_client: dict[str, Any] = {"key": "header:x-client", "algorithm": "fixed_window"}
    all_clients: dict[str, Any] = {"key": "header:x-tenant", "algorithm": "fixed_window"}
    config: Any = LIMITS_FILE
    if declared() == "dependency":
        config = None
        app = build(
            lifespan,
            [Depends(RateLimit(f"{PER_CLIENT}/second", **per_client))],
            [Depends(RateLimit(f"{SHARED}/second", **all_clients))],
        )
    elif declared() == "decorator":
        config = None
        app = build(
            lifespan,
            decorate=(limit(f"{PER_CLIENT}/second", **per_client), limit(f"{SHARED}/second", **all_clients)),
        )
    elif declared() == "file+noop":
        app = build(lifespan, [Depends(noop)], [Depends(noop)])
    else:
        app = build(lifespan)

    @app.get("/metrics")
    async def scrape() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(RateLimitMiddleware, limiter=limiter, config=config, metrics=metrics)
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
