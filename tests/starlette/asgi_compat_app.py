"""slowapi's and fastapi-limiter's quickstarts in one FastAPI app, for the tests over real HTTP.

The storage comes from ``BISMAN_RATELIMIT_STORAGE_URL`` (memory when unset),
as the compatibility modules read it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio
from fastapi import Depends, FastAPI
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from bisman_ratelimit import AsyncLimiter
from bisman_ratelimit.web import storage_url_from_env
from bisman_ratelimit_starlette.fastapi_limiter import FastAPILimiter, RateLimiter
from bisman_ratelimit_starlette.slowapi import (
    Limiter,
    RateLimitExceeded,
    SlowAPIMiddleware,
    _rate_limit_exceeded_handler,
    get_remote_address,
)

STORAGE = storage_url_from_env("memory://") or "memory://"


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    if STORAGE.startswith("redis"):
        await FastAPILimiter.init(redis.asyncio.from_url(STORAGE.split("?")[0], socket_timeout=5))
    else:
        await FastAPILimiter.init(AsyncLimiter())
    yield
    await FastAPILimiter.close()
    await limiter.aclose()


limiter = Limiter(key_func=get_remote_address, default_limits=["5/minute"])
app = FastAPI(lifespan=lifespan)
app.state.limiter = limiter
app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)
app.add_middleware(SlowAPIMiddleware)


@app.get("/home")
@limiter.limit("5/minute")
async def homepage(request: Request) -> Response:
    return PlainTextResponse("test")


@app.get("/default")
async def default(request: Request) -> Response:
    return PlainTextResponse("default")


# fastapi-limiter's route, left alone by slowapi's default limits.
@app.get("/", dependencies=[Depends(RateLimiter(times=5, minutes=1))])
@limiter.exempt
async def index() -> dict[str, str]:
    return {"msg": "Hello World"}


@app.get("/storage")
@limiter.exempt
async def storage(request: Request) -> dict[str, str]:
    return {"storage": STORAGE.split(":")[0]}
