"""Checks on connections borrowed from the client's pool (``backends/_wire.py``).

Each test that restarts or bounds a server starts its own.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
from support import ManualClock

from bisman_ratelimit import AsyncLimiter, Limiter
from bisman_ratelimit.backends import AsyncRedisStorage, RedisStorage, _wire
from bisman_ratelimit.backends._wire import async_lender_for, lender_for
from bisman_ratelimit.core import Decision
from bisman_ratelimit.testing import RedisServer

LIMIT = "1000/minute"


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as started:
        yield started


def in_use(pool: Any) -> int:
    return len(pool._in_use_connections)


def test_one_lender_per_pool(redis_client: redis.Redis) -> None:
    assert lender_for(redis_client) is lender_for(redis_client)
    other = redis.Redis(connection_pool=redis_client.connection_pool)
    assert lender_for(other) is lender_for(redis_client)
    assert lender_for(redis.Redis()) is not lender_for(redis_client)


def test_many_storages_on_one_client_share_a_few_connections(redis_url: str) -> None:
    # A pool that refuses a ninth connection: storages made per request
    # (wasteful, but seen in the wild) must not each keep one.
    client = redis.Redis.from_url(redis_url, max_connections=8)
    for n in range(50):
        assert Limiter(RedisStorage(client)).hit(f"user:{n}", LIMIT).allowed
    assert in_use(client.connection_pool) == 1
    client.close()


def test_idle_connections_are_bounded_by_a_quarter_of_the_pool(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, max_connections=8)
    limiter = Limiter(client)
    lender = lender_for(client)
    assert lender is not None and lender.keep == 2
    barrier = threading.Barrier(6)

    def hit(n: int) -> None:
        barrier.wait()
        for _ in range(20):
            assert limiter.hit(f"user:{n}", LIMIT).allowed

    threads = [threading.Thread(target=hit, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(lender.idle) <= 2 and in_use(client.connection_pool) == len(lender.idle)
    limiter.close()
    assert in_use(client.connection_pool) == 0


def test_a_small_pool_lends_nothing_while_idle(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, max_connections=3)
    limiter = Limiter(client)
    assert limiter.hit("a", LIMIT).allowed
    assert in_use(client.connection_pool) == 0
    # So the application can still take all three.
    held = [client.connection_pool.get_connection() for _ in range(3)]
    for conn in held:
        client.connection_pool.release(conn)
    limiter.close()


@pytest.mark.redis
def test_stale_connections_after_a_restart_cost_one_retry(server: RedisServer) -> None:
    client = redis.Redis.from_url(server.url, max_connections=64)
    limiter = Limiter(client)
    lender = lender_for(client)
    assert lender is not None
    # Three connections on the stack, all of which the restart leaves dead.
    conns = [lender.pool.get_connection() for _ in range(3)]
    for conn in conns:
        conn.connect()
    lender.idle.extend(conns)
    server.kill()
    server.start()
    assert limiter.hit("a", "2/minute").remaining == 1
    # The first failure closed the other idle ones: they connect afresh
    # when used, instead of failing one by one.
    assert [conn._sock is None for conn in conns] == [True, True, False]
    assert limiter.hit("a", "2/minute").remaining == 0
    limiter.close()


def test_a_forked_child_does_not_use_the_parents_connections(redis_url: str) -> None:
    limiter = Limiter.from_url(redis_url)
    assert limiter.hit("forked", "10/minute").remaining == 9
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_fork_child, args=(limiter, queue))
    child.start()
    child.join(timeout=20)
    assert child.exitcode == 0
    assert queue.get(timeout=5) == 8
    # The parent's connection was not disturbed by the child.
    assert limiter.hit("forked", "10/minute").remaining == 7
    limiter.close()


def _fork_child(limiter: Limiter, queue: Any) -> None:  # pragma: no cover - runs in the child
    queue.put(limiter.hit("forked", "10/minute").remaining)


class Traced(redis.Redis):
    """A client whose ``execute_command`` matters (tracing, say)."""

    calls = 0

    def execute_command(self, *args: Any, **options: Any) -> Any:
        Traced.calls += 1
        return super().execute_command(*args, **options)


def test_clients_that_override_execute_command_keep_it(redis_url: str) -> None:
    client = Traced.from_url(redis_url)
    assert lender_for(client) is None
    limiter = Limiter(client)
    before = Traced.calls
    assert limiter.hit("a", LIMIT).allowed
    assert Traced.calls > before
    limiter.close()


def test_clients_whose_execute_command_was_wrapped_in_place_keep_it(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What tracing instrumentation does: replace the method on the class,
    # keeping the original as __wrapped__.
    original = redis.Redis.execute_command
    calls = []

    @functools.wraps(original)
    def traced(self: redis.Redis, *args: Any, **options: Any) -> Any:
        calls.append(args[0])
        return original(self, *args, **options)

    monkeypatch.setattr(redis.Redis, "execute_command", traced)
    client = redis.Redis.from_url(redis_url)
    assert lender_for(client) is None
    limiter = Limiter(client)
    assert limiter.hit("a", LIMIT).allowed
    assert "EVALSHA" in calls
    limiter.close()


def test_resp3_clients_keep_execute_command(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, protocol=3)
    assert lender_for(client) is None
    limiter = Limiter(client)
    assert [limiter.hit("a", "2/minute").allowed for _ in range(3)] == [True, True, False]
    limiter.close()


def test_single_connection_clients_keep_execute_command(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url, single_connection_client=True) as client:
        assert lender_for(client) is None
    assert async_lender_for(redis.asyncio.Redis.from_url(redis_url, single_connection_client=True)) is None


async def test_async_lender(redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url, max_connections=8)
    assert async_lender_for(client) is async_lender_for(client)
    limiter = AsyncLimiter(AsyncRedisStorage(client))
    assert [(await limiter.hit("a", "2/minute")).allowed for _ in range(3)] == [True, True, False]
    pool = client.connection_pool
    assert in_use(pool) == 1
    await limiter.aclose()
    assert in_use(pool) == 0


@pytest.mark.redis
async def test_async_stale_connections_after_a_restart_cost_one_retry(server: RedisServer) -> None:
    client = redis.asyncio.Redis.from_url(server.url, max_connections=64)
    limiter = AsyncLimiter(client)
    lender = async_lender_for(client)
    assert lender is not None
    conns = [await lender.pool.get_connection() for _ in range(3)]
    lender.idle.extend(conns)
    server.kill()
    server.start()
    assert (await limiter.hit("a", "2/minute")).remaining == 1
    assert [conn.is_connected for conn in conns] == [False, False, True]
    await limiter.aclose()


@pytest.mark.redis
async def test_an_async_write_the_server_does_not_take_is_bounded_by_the_socket_timeout(
    server: RedisServer,
) -> None:
    client = redis.asyncio.Redis(port=server.port, socket_timeout=0.2)
    lender = async_lender_for(client)
    assert lender is not None
    assert await lender.call("PING") == b"PONG"
    # A stopped server reads nothing: a large command fills the socket
    # buffers, and the wait for room ends at the socket timeout.
    assert server.process is not None
    server.process.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError, match="Timeout writing to socket"):
            await lender.call("ECHO", "x" * 50_000_000)
        assert 0.2 <= time.monotonic() - started < 1.5
    finally:
        server.process.send_signal(signal.SIGCONT)
    # The half-written connection was closed, not handed out again as it is.
    assert [conn.is_connected for conn in lender.idle] == [False]
    assert await lender.call("PING") == b"PONG"
    await client.aclose()


# redis-py's private fields (backends/_wire.py): read on the supported
# releases, and never needed for a right answer.


def test_the_installed_redis_py_has_the_fields_the_lenders_read(redis_url: str) -> None:
    assert _wire.internals_hold(redis.Redis) and _wire.internals_hold(redis.asyncio.Redis)
    client = redis.Redis.from_url(redis_url)
    limiter = Limiter(client)
    assert limiter.hit("a", LIMIT).allowed
    # The connection stays on the lender's stack, in use in the pool's books.
    lender = lender_for(client)
    assert lender is not None and len(lender.idle) == 1 and in_use(client.connection_pool) == 1
    assert async_lender_for(redis.asyncio.Redis.from_url(redis_url)) is not None
    limiter.close()


def test_a_field_redis_py_no_longer_has_turns_the_lenders_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(_wire.PRIVATE_FIELDS, redis.Redis, "_renamed_socket")
    monkeypatch.setattr(_wire, "fields_hold", {})
    with caplog.at_level(logging.DEBUG, logger="bisman_ratelimit.wire"):
        assert _wire.internals_hold(redis.Redis) is False
        assert _wire.internals_hold(redis.Redis) is False
        assert lender_for(redis.Redis()) is None
        assert _wire.internals_hold(redis.asyncio.Redis) is True
    # Said once, at the check, and never per command.
    assert [record.getMessage() for record in caplog.records] == [
        f"redis-py {redis.__version__} connections have no _renamed_socket as expected: "
        "commands go through execute_command"
    ]


# What _decisions gives: three hits fill the minute, the fourth waits for the next one.
SCRIPT = [(True, 2, 0.0), (True, 1, 0.0), (True, 0, 0.0), (False, 0, 50.0), (True, 2, 0.0)]


def _decisions(limiter: Limiter, clock: ManualClock) -> list[Decision]:
    found = []
    for step in (0, 10, 0, 0, 50):
        clock.advance(step)
        found.append(limiter.hit("door", "3/minute", "fixed_window"))
    return found


def test_without_the_fields_the_same_decisions_come_through_execute_command(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = ManualClock()
    client = redis.Redis.from_url(redis_url)
    fast = Limiter(RedisStorage(client, clock=clock))
    expected = _decisions(fast, clock)
    fast.close()
    client.flushall()

    monkeypatch.setitem(_wire.fields_hold, redis.Redis, False)
    clock = ManualClock()
    plain = redis.Redis.from_url(redis_url)
    assert lender_for(plain) is None
    limiter = Limiter(RedisStorage(plain, clock=clock))
    assert _decisions(limiter, clock) == expected
    assert [(d.allowed, d.remaining, d.retry_after) for d in expected] == SCRIPT
    # execute_command hands its connection back after every command.
    assert in_use(plain.connection_pool) == 0
    limiter.close()
    client.close()


async def _async_decisions(limiter: AsyncLimiter, clock: ManualClock) -> list[Decision]:
    found = []
    for step in (0, 10, 0, 0, 50):
        clock.advance(step)
        found.append(await limiter.hit("door", "3/minute", "fixed_window"))
    return found


async def test_without_the_fields_the_same_async_decisions_come_through_execute_command(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = ManualClock()
    client = redis.asyncio.Redis.from_url(redis_url)
    assert async_lender_for(client) is not None
    fast = AsyncLimiter(AsyncRedisStorage(client, clock=clock))
    expected = await _async_decisions(fast, clock)
    await fast.aclose()
    await client.flushall()

    monkeypatch.setitem(_wire.fields_hold, redis.asyncio.Redis, False)
    clock = ManualClock()
    plain = redis.asyncio.Redis.from_url(redis_url)
    assert async_lender_for(plain) is None
    limiter = AsyncLimiter(AsyncRedisStorage(plain, clock=clock))
    assert await _async_decisions(limiter, clock) == expected
    assert [(d.allowed, d.remaining, d.retry_after) for d in expected] == SCRIPT
    assert in_use(plain.connection_pool) == 0
    await limiter.aclose()
    await plain.aclose()
    await client.aclose()


class _Elsewhere:
    """A connection class that is not redis-py's: where its socket lives is its own affair."""

    def __init__(self, **options: Any) -> None:
        self.options = options


def test_pools_of_other_connection_classes_keep_execute_command() -> None:
    pool = redis.ConnectionPool(connection_class=_Elsewhere)
    assert lender_for(redis.Redis(connection_pool=pool)) is None
