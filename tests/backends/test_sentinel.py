"""Sentinel: URLs and clients, and a forced failover in the middle of a stream of hits.

A ``SENTINEL FAILOVER`` promotes the replica at once, but Sentinel demotes
the old primary only some seconds later (after it has reported its role a
few times); until then clients still connected to it keep being served by
it. The tests demote it themselves as soon as the promotion is done, which
is what Sentinel would do next, so that the limiter meets READONLY on its
old connections and has to find the new primary.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest
import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from support import stored_state

from bisman_ratelimit import AsyncLimiter, Limiter, StorageError
from bisman_ratelimit.backends import AsyncRedisStorage, FallbackStorage, RedisStorage

if TYPE_CHECKING:
    from sentinel_fixtures import SentinelSetup

# The sentinel_setup fixture.
pytest_plugins = ["sentinel_fixtures"]

KEY = "user:1"
LIMIT = "1000000/minute"


def count_on(setup: SentinelSetup, port: int) -> int:
    """The hits a server holds for KEY (fixed window)."""
    with setup.client_for(port) as client:
        keys = client.keys("*")
        state = stored_state(client, keys[0]) if keys else None
        return int(state[1]) if state else 0


def test_sentinel_url_reaches_the_primary(sentinel_setup: SentinelSetup) -> None:
    sentinel_setup.flush()
    with Limiter.from_url(sentinel_setup.url) as limiter:
        assert isinstance(limiter.storage, RedisStorage)
        assert [limiter.hit(KEY, "2/minute", "fixed_window").allowed for _ in range(3)] == [True, True, False]
    assert count_on(sentinel_setup, sentinel_setup.primary_port()) == 2


async def test_async_sentinel_url_reaches_the_primary(sentinel_setup: SentinelSetup) -> None:
    sentinel_setup.flush()
    limiter = AsyncLimiter.from_url(sentinel_setup.url + "&timeout=0.5")
    assert isinstance(limiter.storage, AsyncRedisStorage) and limiter.storage.budget == 0.5
    assert [(await limiter.hit(KEY, "2/minute", "fixed_window")).allowed for _ in range(3)] == [
        True,
        True,
        False,
    ]
    await limiter.aclose()
    assert count_on(sentinel_setup, sentinel_setup.primary_port()) == 2


def test_existing_sentinel_clients_are_accepted(sentinel_setup: SentinelSetup) -> None:
    sentinel_setup.flush()
    setup = sentinel_setup
    sentinel = redis.sentinel.Sentinel(
        setup.sentinel_addresses, sentinel_kwargs={"password": setup.sentinel_password}
    )
    with Limiter(sentinel.master_for(setup.service, password=setup.password)) as limiter:
        assert limiter.hit(KEY, "2/minute", "fixed_window").remaining == 1
    for client in sentinel.sentinels:
        client.close()


async def test_existing_async_sentinel_clients_are_accepted(sentinel_setup: SentinelSetup) -> None:
    sentinel_setup.flush()
    setup = sentinel_setup
    sentinel = redis.asyncio.sentinel.Sentinel(
        setup.sentinel_addresses, sentinel_kwargs={"password": setup.sentinel_password}
    )
    async with AsyncLimiter(sentinel.master_for(setup.service, password=setup.password)) as limiter:
        assert (await limiter.hit(KEY, "2/minute", "fixed_window")).remaining == 1
    for client in sentinel.sentinels:
        await client.aclose()


@dataclass
class Stream:
    """What a stream of hits saw: when each decision came, and the errors raised."""

    decided_at: list[float] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def longest_gap(self) -> float:
        times = self.decided_at
        return max(b - a for a, b in itertools.pairwise(times))


def fail_over_and_demote(setup: SentinelSetup) -> tuple[int, int]:
    old, new = setup.failover()
    with setup.client_for(old) as client:
        client.replicaof("127.0.0.1", new)
    return old, new


def wait_until_served_by(setup: SentinelSetup, port: int, stream: Stream) -> None:
    """Until the stream's hits land on ``port`` (then a little longer)."""
    deadline = time.monotonic() + 15
    start = count_on(setup, port)
    while count_on(setup, port) <= start + 20:
        assert time.monotonic() < deadline, "the hits never reached the new primary"
        time.sleep(0.05)


@pytest.mark.parametrize("fallback", [True, False], ids=["fallback", "bare"])
def test_forced_failover_during_a_stream_of_hits(sentinel_setup: SentinelSetup, fallback: bool) -> None:
    sentinel_setup.flush()
    url = sentinel_setup.url + "&timeout=0.2" + ("&fallback=memory" if fallback else "")
    limiter = Limiter.from_url(url)
    stream = Stream()

    def run() -> None:
        while not stream.stop.is_set():
            try:
                limiter.hit(KEY, LIMIT, "fixed_window")
                stream.decided_at.append(time.monotonic())
            except StorageError as exc:
                stream.errors.append(exc)
            time.sleep(0.002)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        time.sleep(0.2)
        _, new = fail_over_and_demote(sentinel_setup)
        wait_until_served_by(sentinel_setup, new, stream)
    finally:
        stream.stop.set()
        worker.join()
        limiter.close()
    # Decisions went on throughout, and no error reached the caller: the
    # READONLY on the old connections made the client ask the sentinels
    # again, within the time budget.
    assert stream.errors == []
    assert stream.longest_gap() < 0.5
    if fallback:
        assert isinstance(limiter.storage, FallbackStorage)
        assert limiter.storage.breaker.state == "closed"


async def test_forced_failover_during_an_async_stream_of_hits(sentinel_setup: SentinelSetup) -> None:
    sentinel_setup.flush()
    limiter = AsyncLimiter.from_url(sentinel_setup.url + "&timeout=0.2")
    stream = Stream()

    async def run() -> None:
        while not stream.stop.is_set():
            try:
                await limiter.hit(KEY, LIMIT, "fixed_window")
                stream.decided_at.append(time.monotonic())
            except StorageError as exc:
                stream.errors.append(exc)
            await asyncio.sleep(0.002)

    task = asyncio.create_task(run())
    await asyncio.sleep(0.2)
    _, new = await asyncio.to_thread(fail_over_and_demote, sentinel_setup)
    await asyncio.to_thread(wait_until_served_by, sentinel_setup, new, stream)
    stream.stop.set()
    await task
    await limiter.aclose()
    assert stream.errors == []
    assert stream.longest_gap() < 0.5
