"""Namespace routing over real servers: each namespace on its own Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from support import ManualClock, stored_state

from bisman_ratelimit import AsyncLimiter, InvalidArgument, Limiter
from bisman_ratelimit.backends import (
    AsyncAdapter,
    AsyncRoutingStorage,
    FallbackStorage,
    MemoryStorage,
    NamespaceRouter,
    RedisStorage,
    RoutingStorage,
    routed_storage,
    storage_from_url,
)
from bisman_ratelimit.testing import RedisServer


@pytest.fixture
def two_servers() -> Iterator[tuple[RedisServer, RedisServer]]:
    with RedisServer() as limits, RedisServer() as sessions:
        yield limits, sessions


def keys_on(server: RedisServer) -> list[str]:
    with redis.Redis(port=server.port) as client:
        return sorted(key.decode() for key in client.keys("*"))


def test_longest_namespace_wins() -> None:
    router = NamespaceRouter({"auth": "a", "auth:sess": "s", "rl": "r"}, default="d")
    assert router.route("auth:sess:user:1") == "s"
    assert router.route("auth:sess") == "s"
    assert router.route("auth:session:1") == "a"
    assert router.route("auth") == "a"
    assert router.route("rl:global:minute") == "r"
    assert router.route("rlx") == "d"
    assert router.route(":x") == "d"


@pytest.mark.parametrize("prefix", ["", "auth:", ":auth"])
def test_bad_namespaces_are_named(prefix: str) -> None:
    with pytest.raises(InvalidArgument, match=f"bad namespace {prefix!r} in routes"):
        NamespaceRouter({prefix: 1}, default=0)


@pytest.mark.redis
def test_each_namespace_lands_on_its_server(two_servers: tuple[RedisServer, RedisServer]) -> None:
    limits, sessions = two_servers
    storage = routed_storage({"rl": limits.url, "auth:sess": sessions.url}, default=limits.url)
    assert isinstance(storage, RoutingStorage) and len(storage.backends) == 2
    with Limiter(storage) as limiter:
        limiter.hit("rl:user:1", "5/minute")
        limiter.hit("auth:sess:user:1", "5/minute")
        limiter.hit("other", "5/minute")
        lease = limiter.acquire("auth:sess:upload", max_in_flight=1, ttl=5)
        assert lease is not None
        assert keys_on(limits) == ["other:s1m", "rl:user:1:s1m"]
        assert keys_on(sessions) == ["auth:sess:upload:lease", "auth:sess:user:1:s1m"]
        # An eviction storm on the rate-limit server leaves the sessions' keys alone.
        with redis.Redis(port=limits.port) as client:
            client.flushall()
        assert limiter.peek("auth:sess:user:1", "5/minute").remaining == 4
        lease.release()
        limiter.reset("auth:sess:user:1", "5/minute")
        assert keys_on(sessions) == []


@pytest.mark.redis
def test_hit_many_across_servers_refunds_on_denial(
    two_servers: tuple[RedisServer, RedisServer], clock: ManualClock
) -> None:
    limits, sessions = two_servers
    routes = {"auth:sess": RedisStorage(redis.Redis(port=sessions.port), clock=clock)}
    storage = RoutingStorage(routes, default=RedisStorage(redis.Redis(port=limits.port), clock=clock))
    with Limiter(storage) as limiter:
        entries = [("rl:global", "100/minute", "fixed_window"), ("auth:sess:1", "1/minute", "fixed_window")]
        assert limiter.hit_many(entries).allowed
        denied = limiter.hit_many(entries)
        assert [d.allowed for d in denied.decisions] == [True, False]
        assert denied.decisions[0].remaining == 99
        assert limiter.peek("rl:global", "100/minute", "fixed_window").remaining == 99


@pytest.mark.redis
def test_a_memory_route_gives_its_hits_back_too(
    two_servers: tuple[RedisServer, RedisServer], clock: ManualClock
) -> None:
    limits, _ = two_servers
    memory = MemoryStorage(clock=clock)
    storage = RoutingStorage(
        {"local": memory}, default=RedisStorage(redis.Redis(port=limits.port), clock=clock)
    )
    with Limiter(storage) as limiter:
        assert limiter.hit_many([("local:a", "1/minute"), ("b", "5/minute")]).allowed
        # Denied on the local route: the Redis route gives its hit back.
        assert not limiter.hit_many([("local:a", "1/minute"), ("b", "5/minute")]).allowed
        assert limiter.peek("b", "5/minute").remaining == 4
        # Denied on Redis: the memory route gives its hit back.
        limiter.hit("c", "1/minute")
        assert not limiter.hit_many([("local:x", "2/minute"), ("c", "1/minute")]).allowed
        assert limiter.peek("local:x", "2/minute").remaining == 2


@pytest.mark.redis
def test_hits_on_one_route_are_given_back_there(
    two_servers: tuple[RedisServer, RedisServer], clock: ManualClock
) -> None:
    limits, _ = two_servers
    storage = RoutingStorage(
        {"local": MemoryStorage(clock=clock)},
        default=RedisStorage(redis.Redis(port=limits.port), clock=clock),
    )
    with Limiter(storage) as limiter:
        for entries in ([("local:a", "2/minute")], [("b", "2/minute"), ("c", "2/minute")]):
            taken = limiter.hit_many(entries)
            assert taken.at == int(clock.now * 1_000_000)
            assert [d.remaining for d in limiter.refund_many(entries, taken.at).decisions] == [2] * len(
                entries
            )
        # Spread over routes, the hits were made at two times: they stay, and the refund only looks.
        spread = [("local:a", "2/minute"), ("b", "2/minute")]
        taken = limiter.hit_many(spread)
        assert taken.allowed and taken.at is None
        assert [d.remaining for d in limiter.refund_many(spread, taken.at).decisions] == [1, 1]


async def test_async_hits_on_one_route_are_given_back_there(clock: ManualClock) -> None:
    storage = AsyncRoutingStorage(
        {"local": AsyncAdapter(MemoryStorage(clock=clock))}, default=AsyncAdapter(MemoryStorage(clock=clock))
    )
    async with AsyncLimiter(storage) as limiter:
        entries = [("local:a", "2/minute"), ("local:b", "2/minute")]
        taken = await limiter.hit_many(entries)
        assert [d.remaining for d in (await limiter.refund_many(entries, taken.at)).decisions] == [2, 2]
        spread = [("local:a", "2/minute"), ("b", "2/minute")]
        taken = await limiter.hit_many(spread)
        assert taken.allowed and taken.at is None
        assert [d.remaining for d in (await limiter.refund_many(spread, taken.at)).decisions] == [1, 1]


@pytest.mark.redis
async def test_async_routing(two_servers: tuple[RedisServer, RedisServer]) -> None:
    limits, sessions = two_servers
    storage = routed_storage({"auth:sess": sessions.url}, default=limits.url, asyncio=True)
    async with AsyncLimiter(storage) as limiter:
        await limiter.hit("auth:sess:u", "1/minute")
        await limiter.hit("rl:u", "1/minute")
        many = await limiter.hit_many([("auth:sess:u", "1/minute"), ("rl:v", "1/minute")])
        assert [d.allowed for d in many.decisions] == [False, True]
        assert (await limiter.peek("rl:v", "1/minute")).remaining == 1
        lease = await limiter.acquire("auth:sess:job", max_in_flight=1, ttl=5)
        assert lease is not None
        await lease.release()
        await limiter.reset("auth:sess:u", "1/minute")
    assert keys_on(sessions) == []
    # rl:v's hit was given back: its key stays, with nothing counted.
    with redis.Redis(port=limits.port) as client:
        assert stored_state(client, "rl:v:s1m")[1] == 0


@pytest.mark.redis
def test_each_route_has_its_own_fallback(two_servers: tuple[RedisServer, RedisServer]) -> None:
    limits, sessions = two_servers
    storage = routed_storage(
        {"auth:sess": sessions.url + "?fallback=memory"}, default=limits.url + "?fallback=memory"
    )
    with Limiter(storage) as limiter:
        sessions.kill()
        # The breaker's defaults: 5 failures among at least 20 calls.
        for _ in range(20):
            assert limiter.hit("auth:sess:u", "100/minute").allowed
        assert limiter.hit("rl:u", "100/minute").allowed
        routes = {id(b): b for b in storage.backends}
        session_route = storage.router.route("auth:sess:u")
        limits_route = storage.router.route("rl:u")
        assert isinstance(session_route, FallbackStorage) and session_route.breaker.state == "open"
        assert isinstance(limits_route, FallbackStorage) and limits_route.breaker.state == "closed"
        assert len(routes) == 2
    assert keys_on(limits) == ["rl:u:s1m"]


def test_routes_must_match_the_router_kind(redis_url: str) -> None:
    async_storage = storage_from_url(redis_url, asyncio=True)
    with pytest.raises(InvalidArgument, match="route 'rl' must be a synchronous storage, got"):
        RoutingStorage({"rl": async_storage}, default=MemoryStorage())
    with pytest.raises(InvalidArgument, match="default must be a synchronous storage, got 42"):
        RoutingStorage({}, default=42)  # type: ignore[arg-type]
