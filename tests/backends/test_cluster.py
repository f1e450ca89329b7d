"""Redis Cluster: hit_many across slots (parallel groups, refunds), cluster URLs and clients."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
import redis
from redis.crc import key_slot
from support import ManualClock, stored_state

from bisman_ratelimit import AsyncLimiter, Limiter
from bisman_ratelimit.backends import (
    AsyncFallbackStorage,
    AsyncRedisStorage,
    FallbackStorage,
    RedisStorage,
    Spec,
)

if TYPE_CHECKING:
    from cluster_fixtures import RedisClusterServers

ALGORITHMS = ["fixed_window", "sliding_window", "sliding_log", "token_bucket", "gcra"]

# The redis_cluster fixture.
pytest_plugins = ["cluster_fixtures"]


def test_the_keys_used_here_are_on_three_different_primaries(redis_cluster: RedisClusterServers) -> None:
    client = redis_cluster.client()
    storage = RedisStorage(client)
    spec = Spec("fixed_window", 1, 60_000_000, 1)
    nodes = {client.get_node_from_key(storage.key_for(key, spec)).port for key in "abc"}
    assert len(nodes) == 3
    assert len({key_slot(storage.key_for(key, spec).encode()) for key in "abc"}) == 3
    client.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_denied_group_refunds_the_others(
    make_cluster_limiter: Callable[[str, ManualClock], Any], clock: ManualClock, algorithm: str, mode: str
) -> None:
    limiter = make_cluster_limiter(mode, clock)
    entries = [
        ("a", "10/minute", algorithm, 3),
        ("b", "1/minute", algorithm),
        ("c", "10/minute", algorithm, 2),
    ]
    first = limiter.hit_many(entries)
    assert first.allowed and [d.remaining for d in first.decisions] == [7, 0, 8]
    before = [limiter.peek(key, "10/minute", algorithm) for key in "ac"]

    second = limiter.hit_many(entries)
    assert not second.allowed
    assert [d.allowed for d in second.decisions] == [True, False, True]
    # The allowed groups consumed, then gave back: figures as if untouched.
    assert [d.remaining for d in second.decisions] == [7, 0, 8]
    assert [limiter.peek(key, "10/minute", algorithm) for key in "ac"] == before
    assert second.most_restrictive.key == "b"
    if mode == "async":
        limiter.shutdown()
    else:
        limiter.close()


def test_refund_after_the_window_rolled_over(redis_client: redis.Redis, clock: ManualClock) -> None:
    """A refund dated before a window change gives back to the window the hit went into."""
    storage = RedisStorage(redis_client, clock=clock)
    spec = Spec("sliding_window", 10, 60_000_000, 10)
    checks = [("k", spec, 4)]
    ok, _, at = storage.check_timed(checks, True)
    assert ok
    clock.advance(60)  # next window: the 4 hits now weigh as the previous count
    storage.check("k", spec, 1, True)
    key = storage.key_for("k", spec)
    assert stored_state(redis_client, key)[1:] == (1.0, 4.0)
    (look,) = storage.refund(checks, at)
    assert stored_state(redis_client, key)[1:] == (1.0, 0.0)
    assert (look.allowed, look.remaining) == (True, 9)

    fixed = Spec("fixed_window", 10, 60_000_000, 10)
    _, _, at = storage.check_timed([("f", fixed, 3)], True)
    clock.advance(60)
    storage.check("f", fixed, 2, True)
    # The hits went into a window that is over: nothing to give back.
    (look,) = storage.refund([("f", fixed, 3)], at)
    assert look.remaining == 8


def test_refund_removes_exactly_the_hits_of_that_call(redis_client: redis.Redis, clock: ManualClock) -> None:
    storage = RedisStorage(redis_client, clock=clock)
    log = Spec("sliding_log", 10, 60_000_000, 10)
    storage.check("k", log, 2, True)
    clock.advance(1)
    _, _, at = storage.check_timed([("k", log, 3)], True)
    clock.advance(1)
    storage.check("k", log, 1, True)
    (look,) = storage.refund([("k", log, 3)], at)
    assert look.remaining == 7
    assert redis_client.zcard(storage.key_for("k", log)) == 3


def test_refund_of_more_hits_than_lua_unpacks_at_once(redis_client: redis.Redis, clock: ManualClock) -> None:
    storage = RedisStorage(redis_client, clock=clock)
    log = Spec("sliding_log", 20_000, 60_000_000, 20_000)
    _, _, at = storage.check_timed([("k", log, 9_000)], True)
    (look,) = storage.refund([("k", log, 9_000)], at)
    assert look.remaining == 20_000
    assert redis_client.exists(storage.key_for("k", log)) == 0


def scripts_held(admin: redis.Redis) -> int:
    """How many of the node's clients wait with a script call (held by CLIENT PAUSE)."""
    return sum(1 for c in admin.client_list() if "b" in c["flags"] and c["cmd"] == "evalsha")


def wait_until_held(admins: list[redis.Redis], timeout: float = 10.0) -> bool:
    """True once every node holds a script call; False if that never happens."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(scripts_held(admin) for admin in admins):
            return True
    return False


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_groups_run_at_the_same_time(redis_cluster: RedisClusterServers, mode: str) -> None:
    client: Any = redis_cluster.client() if mode == "sync" else redis_cluster.async_client()
    limiter: Any = Limiter(client) if mode == "sync" else AsyncLimiter(client)
    storage = RedisStorage(redis_cluster.client())
    spec = Spec("sliding_window", 100, 60_000_000, 100)
    ports = tuple(storage.client.get_node_from_key(storage.key_for(k, spec)).port for k in "ab")
    storage.close()
    checks = [("a", "100/minute"), ("b", "100/minute")]

    async def hit_many() -> Any:
        if mode == "async":
            return await limiter.hit_many(checks)
        return await asyncio.to_thread(limiter.hit_many, checks)

    assert (await hit_many()).allowed  # connections and threads warmed up
    # Both nodes hold script calls until unpaused. Groups asked at the same
    # time are both held at once; asked in turn, the second group would only
    # be sent once the first had its answer, which it never gets while paused.
    admins = [redis.Redis(port=port) for port in ports]
    for admin in admins:
        admin.client_pause(60_000, all=False)
    try:
        pending = asyncio.ensure_future(hit_many())
        both_held = await asyncio.to_thread(wait_until_held, admins)
    finally:
        for admin in admins:
            admin.client_unpause()
            admin.close()
    assert (await pending).allowed
    assert both_held
    if mode == "sync":
        limiter.close()
    else:
        await limiter.aclose()


def test_cluster_url_with_fallback(redis_cluster: RedisClusterServers) -> None:
    with Limiter.from_url(redis_cluster.url + "?fallback=memory&timeout=0.2") as limiter:
        assert isinstance(limiter.storage, FallbackStorage)
        primary = limiter.storage.primary
        assert isinstance(primary, RedisStorage) and primary.cluster and primary.budget == 0.2
        assert [limiter.hit("a", "2/minute").allowed for _ in range(3)] == [True, True, False]
        many = limiter.hit_many([("b", "5/minute"), ("c", "1/minute")])
        assert many.allowed and not limiter.hit_many([("b", "5/minute"), ("c", "1/minute")]).allowed
        assert limiter.peek("b", "5/minute").remaining == 4
        assert limiter.storage.breaker.stats().failures == 0


async def test_async_cluster_url(redis_cluster: RedisClusterServers) -> None:
    limiter = AsyncLimiter.from_url(redis_cluster.url + "?fallback=memory&timeout=1")
    assert isinstance(limiter.storage, AsyncFallbackStorage)
    assert isinstance(limiter.storage.primary, AsyncRedisStorage) and limiter.storage.primary.cluster
    decisions = [await limiter.hit("a", "2/minute") for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]
    many = await limiter.hit_many([("a", "1/hour"), ("b", "1/hour"), ("c", "1/hour")])
    assert many.allowed
    again = await limiter.hit_many([("a", "1/hour"), ("b", "1/hour"), ("c", "1/hour")])
    assert [d.allowed for d in again.decisions] == [False, False, False]
    await limiter.aclose()


def test_existing_cluster_clients_are_accepted(redis_cluster: RedisClusterServers) -> None:
    with Limiter(redis_cluster.client()) as limiter:
        assert isinstance(limiter.storage, RedisStorage) and limiter.storage.cluster
        assert limiter.hit_many([("a", "1/minute"), ("b", "1/minute")]).allowed


async def test_existing_async_cluster_clients_are_accepted(redis_cluster: RedisClusterServers) -> None:
    async with AsyncLimiter(redis_cluster.async_client()) as limiter:
        assert isinstance(limiter.storage, AsyncRedisStorage) and limiter.storage.cluster
        assert (await limiter.hit_many([("a", "1/minute"), ("b", "1/minute")])).allowed
        await asyncio.sleep(0)
