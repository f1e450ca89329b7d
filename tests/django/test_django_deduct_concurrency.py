"""``deduct_when`` under concurrent requests, sync (threads) and async (tasks): no more tries than the limit.

The gated views wait until all requests have reached the project, so none
is answered before the others have been checked: a check made before the
request and a count made after it would let them all through.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
import redis.asyncio
from django.test import AsyncClient, Client
from django_project.views import GATE

from bisman_ratelimit import AsyncLimiter, Limiter
from bisman_ratelimit.backends import AsyncRedisStorage, RedisStorage

ROUTES = """
[[routes]]
path = "gated/login/"
methods = ["POST"]
limits = ["5/minute", "20/hour"]
deduct_when = { status = [401, 403] }

[[routes]]
path = "gated/login-async/"
methods = ["POST"]
limits = ["5/minute", "20/hour"]
deduct_when = { status = [401, 403] }
"""
ATTEMPTS = 50
# (path, async view): the middleware with a limits file, and the decorator.
VIEWS = {
    "middleware": "/gated/login/",
    "middleware-async": "/gated/login-async/",
    "decorator": "/decorated/login/",
    "decorator-async": "/decorated/login-async/",
}


@pytest.fixture
def setup(
    configure: Any, limits_file: Callable[[str], str], backend: tuple[str, str | None], clock: Any
) -> Iterator[None]:
    if backend[1] is None:
        configure(CONFIG=limits_file(ROUTES))
        yield
        return
    client = redis.Redis.from_url(backend[1])
    async_client = redis.asyncio.Redis.from_url(backend[1])
    configure(
        CONFIG=limits_file(ROUTES),
        LIMITER=Limiter(RedisStorage(client, clock=clock, blocked_cache=True)),
        ASYNC_LIMITER=AsyncLimiter(AsyncRedisStorage(async_client, clock=clock, blocked_cache=True)),
    )
    yield
    client.close()


def post_sync(path: str, passwords: list[str]) -> list[int]:
    """POST every password at once, each from its own thread; the statuses in order."""
    GATE.reset(len(passwords))

    def one(password: str) -> int:
        return Client().post(path, {"password": password}, headers={"X-Test-Gate": "1"}).status_code

    with ThreadPoolExecutor(max_workers=len(passwords)) as pool:
        return list(pool.map(one, passwords))


async def post_async(path: str, passwords: list[str]) -> list[int]:
    """POST every password at once, as concurrent tasks; the statuses in order."""
    GATE.reset(len(passwords))
    client = AsyncClient()

    async def one(password: str) -> int:
        response = await client.post(path, {"password": password}, headers={"X-Test-Gate": "1"})
        return response.status_code

    return list(await asyncio.gather(*(one(password) for password in passwords)))


@pytest.mark.parametrize("view", ["middleware", "decorator"])
def test_concurrent_failed_logins_sync(setup: None, view: str) -> None:
    path = VIEWS[view]
    assert Counter(post_sync(path, ["wrong"] * ATTEMPTS)) == {401: 5, 429: 45}
    assert post_sync(path, ["right"]) == [429]


@pytest.mark.parametrize("view", ["middleware-async", "decorator-async"])
async def test_concurrent_failed_logins_async(setup: None, view: str) -> None:
    path = VIEWS[view]
    assert Counter(await post_async(path, ["wrong"] * ATTEMPTS)) == {401: 5, 429: 45}
    assert await post_async(path, ["right"]) == [429]


@pytest.mark.parametrize("view", ["middleware", "decorator"])
def test_successful_logins_are_given_back_sync(setup: None, view: str) -> None:
    path = VIEWS[view]
    for _ in range(3):
        assert post_sync(path, ["right"]) == [200]
    assert [post_sync(path, ["wrong"])[0] for _ in range(5)] == [401] * 5
    assert post_sync(path, ["wrong"]) == [429]


@pytest.mark.parametrize("view", ["middleware-async", "decorator-async"])
async def test_successful_logins_are_given_back_async(setup: None, view: str) -> None:
    path = VIEWS[view]
    for _ in range(3):
        assert await post_async(path, ["right"]) == [200]
    assert [(await post_async(path, ["wrong"]))[0] for _ in range(5)] == [401] * 5
    assert await post_async(path, ["wrong"]) == [429]
