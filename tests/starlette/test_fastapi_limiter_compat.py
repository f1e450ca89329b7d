"""fastapi-limiter's README examples, run on ``bisman_ratelimit_starlette.fastapi_limiter``.

Only the imports change (and the startup event becomes a lifespan, as FastAPI
now asks). Each example runs on memory and on a real Redis (and Valkey),
with the client the README builds (``decode_responses=True``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio
from fastapi import APIRouter, Depends, FastAPI, HTTPException
from prometheus_client import CollectorRegistry
from starlette.requests import Request
from starlette.responses import Response
from support import ManualClock

from bisman_ratelimit import AsyncLimiter, ConfigurationError, InvalidArgument
from bisman_ratelimit.backends import MemoryStorage
from bisman_ratelimit.metrics import RateLimitMetrics
from bisman_ratelimit_starlette.fastapi_limiter import FastAPILimiter, RateLimiter

PEER = "198.51.100.7"


@pytest.fixture
def connection(backend: tuple[str, str | None], clock: ManualClock) -> Callable[[], Any]:
    """What the app passes to ``FastAPILimiter.init``: the README's client, or our memory limiter."""
    url = backend[1]
    if url is None:
        return lambda: AsyncLimiter(MemoryStorage(clock=clock))
    return lambda: redis.asyncio.from_url(url + "?socket_timeout=5", encoding="utf-8", decode_responses=True)


def app_with(connection: Callable[[], Any], **init: Any) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await FastAPILimiter.init(connection(), **init)
        yield
        await FastAPILimiter.close()

    return FastAPI(lifespan=lifespan)


@asynccontextmanager
async def serving(app: FastAPI, ip: str = PEER) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app, client=(ip, 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c


async def test_readme_example(connection: Callable[[], Any]) -> None:
    app = app_with(connection)

    @app.get("/", dependencies=[Depends(RateLimiter(times=2, seconds=5))])
    async def index() -> dict[str, str]:
        return {"msg": "Hello World"}

    async with serving(app) as c:
        answers = [await c.get("/") for _ in range(3)]
    assert [(r.status_code, r.json()) for r in answers] == [
        (200, {"msg": "Hello World"}),
        (200, {"msg": "Hello World"}),
        (429, {"detail": "Too Many Requests"}),
    ]
    # Whole seconds until the same request would pass: within two windows of 5 s (sliding window).
    assert 1 <= int(answers[2].headers["retry-after"]) <= 10
    # fastapi-limiter sends no rate-limit fields on allowed responses: ours are there.
    assert [r.headers.get("ratelimit-policy") for r in answers] == ['"/";q=2;w=5', '"/";q=2;w=5', None]
    assert answers[1].headers["ratelimit"].startswith('"/";r=0;t=')


async def test_the_window_adds_up_its_parts_and_clients_count_apart(clock: ManualClock) -> None:
    app = app_with(lambda: AsyncLimiter(MemoryStorage(clock=clock)))

    @app.get(
        "/", dependencies=[Depends(RateLimiter(times=1, minutes=1, seconds=30, algorithm="fixed_window"))]
    )
    async def index() -> dict[str, str]:
        return {"msg": "Hello World"}

    async with serving(app) as c:
        first = [(await c.get("/")).status_code for _ in range(2)]
        other = await c.get("/", headers={"X-Forwarded-For": "203.0.113.9, 10.0.0.1"})
        clock.advance(89)
        late = await c.get("/")
        clock.advance(1)
        again = await c.get("/")
    assert first == [200, 429]
    assert other.status_code == 200
    assert (late.status_code, late.headers["retry-after"]) == (429, "1")
    assert again.status_code == 200


async def test_several_limiters_on_a_route_and_a_router_in_one_round_trip(
    redis_url: str, redis_client: redis.Redis
) -> None:
    app = app_with(lambda: redis.asyncio.from_url(redis_url + "?socket_timeout=5", decode_responses=True))
    router = APIRouter(prefix="/api", dependencies=[Depends(RateLimiter(times=3, minutes=1))])

    @router.get("/multiple", dependencies=[Depends(RateLimiter(times=5, seconds=5))])
    async def multiple() -> dict[str, str]:
        return {"msg": "Hello World"}

    app.include_router(router)

    async with serving(app) as c:
        calls: list[int] = []
        answers = []
        for _ in range(4):
            before = redis_client.info("commandstats")["cmdstat_evalsha"]["calls"]
            answers.append(await c.get("/api/multiple"))
            calls.append(redis_client.info("commandstats")["cmdstat_evalsha"]["calls"] - before)
    assert calls == [1, 1, 1, 1]
    assert answers[0].headers["ratelimit-policy"] == '"/api/multiple";q=3;w=60, "/api/multiple#2";q=5;w=5'
    assert answers[2].headers["ratelimit"].startswith('"/api/multiple";r=0;t=')
    # The router's 3 a minute refuses the fourth.
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    keys = sorted(key.decode() for key in redis_client.keys("*"))
    # The identifier (address and path, as fastapi-limiter's) is the hash tag: one slot per client.
    assert keys == [
        "fastapi-limiter:{198.51.100.7:/api/multiple}:/api/multiple:0:s1m",
        "fastapi-limiter:{198.51.100.7:/api/multiple}:/api/multiple:1:s5s",
    ]


async def test_custom_identifier_and_callbacks(clock: ManualClock) -> None:
    async def by_user(request: Request) -> str:
        return request.headers.get("x-user", "anonymous")

    refused: list[int] = []

    async def teapot(request: Request, response: Response, pexpire: int) -> None:
        refused.append(pexpire)
        raise HTTPException(418, "Steep a while", headers={"Retry-After": str(pexpire // 1000)})

    async def own_callback(request: Request, response: Response, pexpire: int) -> None:
        raise HTTPException(429, f"wait {pexpire} ms")

    app = app_with(lambda: AsyncLimiter(MemoryStorage(clock=clock)), identifier=by_user, http_callback=teapot)

    @app.get("/tea", dependencies=[Depends(RateLimiter(times=1, seconds=10, algorithm="fixed_window"))])
    async def tea() -> dict[str, str]:
        return {"tea": "ready"}

    @app.get(
        "/own",
        dependencies=[
            Depends(RateLimiter(times=1, milliseconds=500, callback=own_callback, algorithm="fixed_window"))
        ],
    )
    async def own() -> dict[str, str]:
        return {"own": "ok"}

    async with serving(app) as c:
        tea = [await c.get("/tea", headers={"x-user": user}) for user in ("ann", "bob", "ann")]
        own = [await c.get("/own") for _ in range(2)]
    assert [r.status_code for r in tea] == [200, 200, 418]
    assert (tea[2].json(), tea[2].headers["retry-after"], refused) == (
        {"detail": "Steep a while"},
        "10",
        [10000],
    )
    assert [r.status_code for r in own] == [200, 429]
    assert own[1].json() == {"detail": "wait 500 ms"}


async def test_without_init_the_dependency_says_what_is_missing() -> None:
    app = FastAPI()

    @app.get("/", dependencies=[Depends(RateLimiter(times=2, seconds=5))])
    async def index() -> dict[str, str]:
        return {"msg": "Hello World"}

    await FastAPILimiter.close()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://testserver") as c:
        with pytest.raises(
            ConfigurationError, match="You must call FastAPILimiter.init in startup event of fastapi!"
        ):
            await c.get("/")


async def test_close_closes_the_client(redis_url: str, redis_client: redis.Redis) -> None:
    def ours() -> int:
        return sum(1 for c in redis_client.client_list() if c["name"] == "fastapi-limiter-app")

    await FastAPILimiter.init(redis.asyncio.from_url(redis_url, client_name="fastapi-limiter-app"))
    assert ours() >= 1  # init opened the connections
    await FastAPILimiter.close()
    assert FastAPILimiter.limiter is None and FastAPILimiter.redis is None
    assert ours() == 0


def test_bad_arguments_are_named() -> None:
    with pytest.raises(InvalidArgument, match="times must be a whole number >= 1, got 0"):
        RateLimiter(times=0, seconds=1)
    with pytest.raises(InvalidArgument, match="RateLimiter needs a window"):
        RateLimiter(times=2)


async def test_decisions_are_counted_by_route_template(clock: ManualClock) -> None:
    registry = CollectorRegistry()
    app = app_with(
        lambda: AsyncLimiter(MemoryStorage(clock=clock)), metrics=RateLimitMetrics(registry=registry)
    )

    @app.get("/items/{item_id}", dependencies=[Depends(RateLimiter(times=2, seconds=5))])
    async def item(item_id: int) -> dict[str, int]:
        return {"item": item_id}

    async with serving(app) as c:
        # The default identifier holds the path: one item, one counter.
        statuses = [(await c.get("/items/7")).status_code for _ in range(3)]
    route = {"route": "/items/{item_id}"}
    assert statuses == [200, 200, 429]
    assert registry.get_sample_value("app_rate_limit_allowed_total", route) == 2
    assert registry.get_sample_value("app_rate_limit_block_total", {**route, "reason": "client"}) == 1
