"""The slowapi and fastapi-limiter surfaces when the storage cannot be reached: the outage policy decides.

The storage is a port nothing listens on: connections are refused for real.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import redis.asyncio
from fastapi import Depends, FastAPI
from starlette.requests import Request

from bisman_ratelimit.testing import free_port
from bisman_ratelimit_starlette.fastapi_limiter import FastAPILimiter, RateLimiter
from bisman_ratelimit_starlette.slowapi import (
    Limiter,
    RateLimitExceeded,
    SlowAPIMiddleware,
    _rate_limit_exceeded_handler,
    get_remote_address,
)


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app, client=("198.51.100.7", 5000)), base_url="http://testserver"
    )


@pytest.mark.parametrize(
    ("on_outage", "statuses"),
    [(None, [200, 200, 200]), ("closed", [503, 503, 503]), ("fallback", [200, 429, 429])],
)
async def test_slowapi_limiter_with_its_storage_down(on_outage: str | None, statuses: list[int]) -> None:
    limiter = Limiter(
        key_func=get_remote_address,
        default_limits=["1/minute"],
        storage_uri=f"redis://127.0.0.1:{free_port()}/0",
        on_outage=on_outage,  # type: ignore[arg-type]
    )
    app = FastAPI()
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)
    app.add_middleware(SlowAPIMiddleware)

    @app.get("/")
    async def index(request: Request) -> dict[str, str]:
        return {"ok": "yes"}

    async with client(app) as c:
        answers = [await c.get("/") for _ in range(3)]
    await limiter.aclose()
    assert [r.status_code for r in answers] == statuses


@pytest.mark.parametrize(
    ("on_outage", "statuses"),
    [("open", [200, 200, 200]), ("closed", [503, 503, 503]), ("fallback", [200, 429, 429])],
)
async def test_fastapi_limiter_with_its_redis_down(on_outage: str, statuses: list[int]) -> None:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        down = redis.asyncio.from_url(f"redis://127.0.0.1:{free_port()}/0")
        await FastAPILimiter.init(down, on_outage=on_outage)  # type: ignore[arg-type]
        yield
        await FastAPILimiter.close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/", dependencies=[Depends(RateLimiter(times=1, minutes=1))])
    async def index() -> dict[str, str]:
        return {"msg": "Hello World"}

    async with app.router.lifespan_context(app), client(app) as c:
        answers = [await c.get("/") for _ in range(3)]
    assert [r.status_code for r in answers] == statuses
