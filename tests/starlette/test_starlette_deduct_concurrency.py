"""``deduct_when`` under concurrent requests: a brute force gets no more tries than the limit.

Every login waits in the view until each request has either reached the
view or been refused, so none is answered before the others have been
checked: a check made before the request and a count made after it would
let all 50 through.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio
from fastapi import FastAPI
from fastapi import Request as FastAPIRequest
from fastapi import Response as FastAPIResponse
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from support import ManualClock

from bisman_ratelimit import AsyncLimiter
from bisman_ratelimit.backends import AsyncRedisStorage, MemoryStorage
from bisman_ratelimit.web import load_config
from bisman_ratelimit_starlette import RateLimitMiddleware, limit

# /auth/login: ["5/minute", "20/hour"] per IP, sliding window, only 401 and 403 count.
CONFIG = load_config(Path(__file__).resolve().parents[2] / "example_apps" / "ratelimits.toml")
ATTEMPTS = 50


class Gate:
    """An ASGI wrapper that opens once ``expected`` requests have been checked:
    reached the view (which calls :meth:`settle`) or been refused with 429."""

    def __init__(self, app: Any, expected: int) -> None:
        self.app = app
        self.expected = expected
        self.settled = 0
        self.open = asyncio.Event()

    def settle(self) -> None:
        self.settled += 1
        if self.settled >= self.expected:
            self.open.set()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def watch(message: Any) -> None:
            if message["type"] == "http.response.start" and message["status"] == 429:
                self.settle()
            await send(message)

        await self.app(scope, receive, watch)


GATES: dict[str, Gate] = {}


async def wait_for_everyone(request: Request) -> None:
    gate = GATES["current"]
    gate.settle()
    await gate.open.wait()


def password_ok(request: Request) -> bool:
    return request.query_params.get("password") == "correct horse"


async def login(request: Request) -> Response:
    await wait_for_everyone(request)
    if password_ok(request):
        return PlainTextResponse("welcome")
    return PlainTextResponse("no", status_code=401)


@limit("5/minute", deduct_when=[401, 403])
async def signin(request: Request) -> Response:
    return await login(request)


def starlette_middleware(limiter: AsyncLimiter) -> Any:
    routes = [Route("/auth/login", login, methods=["POST"])]
    middleware = [Middleware(RateLimitMiddleware, limiter=limiter, config=CONFIG)]
    return Starlette(routes=routes, middleware=middleware)


def starlette_decorator(limiter: AsyncLimiter) -> Any:
    routes = [Route("/auth/login", signin, methods=["POST"])]
    return Starlette(routes=routes, middleware=[Middleware(RateLimitMiddleware, limiter=limiter)])


def fastapi_middleware(limiter: AsyncLimiter) -> Any:
    app = FastAPI()

    @app.post("/auth/login")
    async def fastapi_login(request: FastAPIRequest, response: FastAPIResponse) -> dict[str, str]:
        await wait_for_everyone(request)
        if not password_ok(request):
            response.status_code = 401
            return {"login": "failed"}
        return {"login": "ok"}

    app.add_middleware(RateLimitMiddleware, limiter=limiter, config=CONFIG)
    return app


APPS: dict[str, Callable[[AsyncLimiter], Any]] = {
    "starlette": starlette_middleware,
    "starlette-decorator": starlette_decorator,
    "fastapi": fastapi_middleware,
}


@pytest.fixture
async def make_limiter(
    backend: tuple[str, str | None], clock: ManualClock
) -> AsyncIterator[Callable[[], AsyncLimiter]]:
    made: list[AsyncLimiter] = []

    def make() -> AsyncLimiter:
        if backend[1] is None:
            limiter = AsyncLimiter(MemoryStorage(clock=clock))
        else:
            client = redis.asyncio.Redis.from_url(backend[1])
            limiter = AsyncLimiter(AsyncRedisStorage(client, clock=clock, blocked_cache=True))
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.aclose()


async def logins(app: Any, passwords: list[str], *, gate: int) -> list[int]:
    """POST every password at once, from one client; the statuses in order."""
    GATES["current"] = Gate(app, gate)
    transport = httpx.ASGITransport(GATES["current"], client=("198.51.100.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:

        async def one(password: str) -> int:
            return (await client.post("/auth/login", params={"password": password})).status_code

        calls: list[Awaitable[int]] = [one(password) for password in passwords]
        return list(await asyncio.gather(*calls))


@pytest.mark.parametrize("framework", list(APPS))
async def test_concurrent_failed_logins_get_exactly_the_limit(
    framework: str, make_limiter: Callable[[], AsyncLimiter]
) -> None:
    app = APPS[framework](make_limiter())
    statuses = await logins(app, ["nope"] * ATTEMPTS, gate=ATTEMPTS)
    assert Counter(statuses) == {401: 5, 429: 45}
    # Later tries, right password or not, are refused.
    assert await logins(app, ["correct horse", "nope"], gate=1) == [429, 429]


@pytest.mark.parametrize("framework", list(APPS))
async def test_successful_logins_are_given_back(
    framework: str, make_limiter: Callable[[], AsyncLimiter]
) -> None:
    app = APPS[framework](make_limiter())
    for _ in range(3):
        assert await logins(app, ["correct horse"], gate=1) == [200]
    assert await logins(app, ["nope"] * 5, gate=1) == [401] * 5
    assert await logins(app, ["nope"], gate=1) == [429]


@pytest.mark.parametrize("framework", list(APPS))
async def test_concurrent_mixed_logins_count_only_the_failures(
    framework: str, make_limiter: Callable[[], AsyncLimiter]
) -> None:
    app = APPS[framework](make_limiter())
    # Three at a time: each batch holds three of the five units, then gives back its two successes.
    for _ in range(3):
        statuses = await logins(app, ["correct horse", "nope", "correct horse"], gate=3)
        assert Counter(statuses) == {200: 2, 401: 1}
    # Three failures counted: two more tries.
    assert Counter(await logins(app, ["nope"] * 3, gate=3)) == {401: 2, 429: 1}


@pytest.mark.parametrize("framework", list(APPS))
async def test_refunds_lift_the_denials_they_caused(
    framework: str, make_limiter: Callable[[], AsyncLimiter]
) -> None:
    app = APPS[framework](make_limiter())
    # Five right passwords hold the five units while a sixth try is refused (and, on
    # Redis, remembered as blocked); once they answer, their units are back.
    statuses = await logins(app, ["correct horse"] * 6, gate=6)
    assert Counter(statuses) == {200: 5, 429: 1}
    assert await logins(app, ["nope"] * 5, gate=1) == [401] * 5
    assert await logins(app, ["nope"], gate=1) == [429]


@pytest.mark.parametrize("framework", list(APPS))
async def test_units_given_back_by_one_process_reach_another(framework: str, redis_url: str) -> None:
    """Two app processes on one Redis, each with its blocked-keys cache: the one that refused while
    the other's logins held every unit lets the next login in once those units are given back."""
    limiters = [AsyncLimiter.from_url(redis_url + "?timeout=2s") for _ in range(2)]
    first, second = (APPS[framework](limiter) for limiter in limiters)
    # Opened below, by hand.
    holding = GATES["current"] = Gate(first, ATTEMPTS)
    client = ("198.51.100.7", 50000)
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(holding, client=client), base_url="http://a") as a,
        httpx.AsyncClient(transport=httpx.ASGITransport(second, client=client), base_url="http://b") as b,
    ):
        login_a = [
            asyncio.create_task(a.post("/auth/login", params={"password": "correct horse"})) for _ in range(5)
        ]
        while holding.settled < 5:
            await asyncio.sleep(0.001)
        # Every unit is held by a login in the first process.
        assert (await b.post("/auth/login", params={"password": "correct horse"})).status_code == 429
        holding.open.set()
        assert [(await task).status_code for task in login_a] == [200] * 5
        # Given back: the second process lets the next ones in, as Redis does.
        GATES["current"] = Gate(second, 0)
        GATES["current"].open.set()
        statuses = [(await b.post("/auth/login", params={"password": "nope"})).status_code for _ in range(6)]
        assert statuses == [401] * 5 + [429]
    for limiter in limiters:
        await limiter.aclose()
