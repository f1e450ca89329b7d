"""A store's ``warm()``: the connections of a store built from a URL, opened before the first calls."""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis

from bisman_ratelimit import StorageUnavailable
from bisman_ratelimit.stores import AsyncSessionStore, SessionStore
from bisman_ratelimit.testing import RedisServer, free_port

# Far above what a refused connection takes, far below the 1 s a warm connection may take.
FAST = 0.5


def named(client: redis.Redis, name: str) -> int:
    return sum(1 for entry in client.client_list() if entry["name"] == name)


@pytest.mark.redis
def test_warm_opens_a_sync_stores_pool_and_keeps_its_budget() -> None:
    with (
        RedisServer() as server,
        redis.Redis.from_url(server.url) as probe,
        SessionStore(f"{server.url}?timeout=200ms&client_name=warm-sync") as store,
    ):
        assert named(probe, "warm-sync") == 0
        store.warm()
        assert named(probe, "warm-sync") == 64
        session = store.create({"a": 1})
        assert named(probe, "warm-sync") == 64
        # A warm connection was given a second to connect; a read on it has the budget.
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            started = time.perf_counter()
            with pytest.raises(StorageUnavailable, match="^Redis is unavailable: Timeout reading from"):
                store.load(session.id)
            assert time.perf_counter() - started < FAST
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        assert store.load(session.id) is not None


async def test_warm_opens_an_async_stores_pool(redis_url: str, redis_client: redis.Redis) -> None:
    store = AsyncSessionStore(f"{redis_url}?client_name=warm-async")
    try:
        await store.warm(8)
        assert named(redis_client, "warm-async") == 8
        sessions = [await store.create({"n": n}) for n in range(3)]
        loaded = [await store.load(session.id) for session in sessions]
        assert [None if found is None else found.data for found in loaded] == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert named(redis_client, "warm-async") == 8
    finally:
        await store.aclose()


def test_warm_on_a_dead_server_fails_fast() -> None:
    with SessionStore(f"redis://127.0.0.1:{free_port()}/0") as store:
        started = time.perf_counter()
        with pytest.raises(StorageUnavailable, match="^Redis is unavailable: "):
            store.warm()
        assert time.perf_counter() - started < FAST


async def test_async_warm_on_a_dead_server_fails_fast() -> None:
    store = AsyncSessionStore(f"redis://127.0.0.1:{free_port()}/0")
    started = time.perf_counter()
    with pytest.raises(StorageUnavailable, match="^Redis is unavailable: "):
        await store.warm()
    assert time.perf_counter() - started < FAST
    await store.aclose()


async def test_warm_is_nothing_for_a_memory_store() -> None:
    SessionStore("memory://").warm()
    await AsyncSessionStore("memory://").warm()
