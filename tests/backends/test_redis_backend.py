"""What only the Redis backend has: server time, TTLs, scripts, hash tags, errors."""

from __future__ import annotations

import time

import pytest
import redis
import redis.asyncio
from redis.crc import key_slot
from support import period_with_room_left

from bisman_ratelimit import (
    AsyncLimiter,
    InvalidArgument,
    Limit,
    Limiter,
    StorageResponseError,
    StorageUnavailable,
)
from bisman_ratelimit.backends._redis import SINGLE, RedisStorage
from bisman_ratelimit.testing import RedisServer, free_port

ALGORITHMS = ["fixed_window", "sliding_window", "sliding_log", "token_bucket", "gcra"]


def evalsha_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_server_time_allows_again_after_retry_after(redis_client: redis.Redis, algorithm: str) -> None:
    limiter = Limiter(redis_client)
    # The three hits fall in one window (on the server's clock, which runs on).
    limit = Limit(2, period_with_room_left(redis_client, near=0.4, room=0.15))
    assert [limiter.hit("k", limit, algorithm).allowed for _ in range(2)] == [True, True]
    denied = limiter.hit("k", limit, algorithm)
    assert not denied.allowed
    assert 0 < denied.retry_after <= 0.8
    time.sleep(denied.retry_after + 0.005)
    assert limiter.hit("k", limit, algorithm).allowed


def test_every_key_gets_a_ttl_no_longer_than_needed(redis_client: redis.Redis) -> None:
    limiter = Limiter(redis_client)
    for algorithm in ALGORITHMS:
        limiter.hit("user:1", "5/minute", algorithm)
    limiter.hit_many([("a", "10/hour", "gcra"), ("b", "1/day", "sliding_log")])
    limiter.acquire("uploads", max_in_flight=2, ttl=30)
    keys = redis_client.keys("*")
    assert len(keys) == 8
    for key in keys:
        ttl_ms = redis_client.pttl(key)
        # sliding_window keeps its count for two windows; nothing else beyond one.
        assert 0 < ttl_ms <= 120_000 if key.endswith(b":s1m") else 0 < ttl_ms <= 86_400_000, key


def test_keys_of_one_identity_share_a_hash_slot(redis_client: redis.Redis) -> None:
    limiter = Limiter(redis_client)
    for algorithm in ALGORITHMS:
        limiter.hit("user:{42}", "5/minute;100/day", algorithm)
    limiter.acquire("user:{42}", max_in_flight=1, ttl=5)
    keys = redis_client.keys("*")
    assert len(keys) == 11
    assert len({key_slot(key) for key in keys}) == 1
    # The key holds a hash tag: it is stored as it is, with each limit's tag after it.
    assert sorted(keys) == sorted(
        f"user:{{42}}:{tag}".encode()
        for tag in ("f1m", "f1d", "s1m", "s1d", "l1m", "l1d", "t1m", "t1d", "g1m", "g1d", "lease")
    )


def test_hit_many_is_one_script_call(redis_client: redis.Redis) -> None:
    limiter = Limiter(redis_client)
    limiter.hit("warm", "1/minute")
    before = evalsha_calls(redis_client)
    result = limiter.hit_many(
        [
            ("rl:global", "10000/minute", "fixed_window"),
            ("user:1", "100/minute"),
            ("user:1", "10/second", "gcra"),
        ]
    )
    assert result.allowed
    assert evalsha_calls(redis_client) - before == 1


def test_hit_many_of_more_keys_than_lua_unpacks_at_once(redis_client: redis.Redis) -> None:
    limiter = Limiter(redis_client)
    entries = [(f"user:{i}", "1/minute", "token_bucket") for i in range(9_000)]
    assert limiter.hit_many(entries).allowed
    denied = limiter.hit_many([*entries[:-1], ("user:new", "1/minute", "token_bucket")])
    assert not denied.allowed
    assert [d.allowed for d in denied.decisions[-2:]] == [False, True]
    # Nothing consumed by the denied call.
    assert limiter.peek("user:new", "1/minute", "token_bucket").remaining == 1


def test_script_is_reloaded_after_script_flush(redis_client: redis.Redis) -> None:
    limiter = Limiter(redis_client)
    assert limiter.hit("k", "3/minute").remaining == 2
    redis_client.script_flush()
    assert redis_client.script_exists(SINGLE["sliding_window"].sha) == [False]
    assert limiter.hit("k", "3/minute").remaining == 1
    assert redis_client.script_exists(SINGLE["sliding_window"].sha) == [True]


def test_prefix_from_url(redis_url: str, redis_client: redis.Redis) -> None:
    Limiter.from_url(redis_url + "?prefix=app1").hit("k", "1/minute", "fixed_window")
    assert [key.decode() for key in redis_client.keys("*")] == ["app1:k:f1m"]


async def test_async_limiter_on_redis(async_redis_client: redis.asyncio.Redis) -> None:
    limiter = AsyncLimiter(async_redis_client)
    decisions = [await limiter.hit("k", "2/minute", "token_bucket") for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]
    async with await limiter.acquire("job", max_in_flight=1, ttl=5) as lease:
        assert lease is not None
        assert await limiter.acquire("job", max_in_flight=1, ttl=5) is None
    assert await limiter.acquire("job", max_in_flight=1, ttl=5) is not None


def test_sync_and_async_clients_are_not_mixed_up(redis_url: str) -> None:
    with pytest.raises(InvalidArgument, match="AsyncLimiter needs a redis.asyncio.Redis client"):
        AsyncLimiter(redis.Redis.from_url(redis_url))
    with pytest.raises(
        InvalidArgument, match="Limiter needs a synchronous client or storage; use AsyncLimiter"
    ):
        Limiter(redis.asyncio.Redis.from_url(redis_url))
    with pytest.raises(InvalidArgument, match="Limiter needs a redis.Redis client or a storage, got 42"):
        Limiter(42)


def test_unreachable_server_raises_storage_unavailable() -> None:
    limiter = Limiter.from_url(f"redis://127.0.0.1:{free_port()}/0?socket_connect_timeout=0.2")
    with pytest.raises(StorageUnavailable, match="Redis is unavailable") as info:
        limiter.hit("k", "1/minute")
    assert isinstance(info.value.__cause__, redis.ConnectionError)


@pytest.mark.redis
def test_killed_server_raises_storage_unavailable() -> None:
    with RedisServer() as server:
        limiter = Limiter.from_url(server.url)
        assert limiter.hit("k", "1/minute").allowed
        server.kill()
        with pytest.raises(StorageUnavailable):
            limiter.hit("k", "1/minute")


def test_server_errors_are_translated(redis_client: redis.Redis) -> None:
    limiter = Limiter(redis_client)
    # A key of another type under the limiter's name: the script fails, and says so.
    spec = limiter._resolve("1/minute", "sliding_log")[0][0]
    redis_client.set(RedisStorage(redis_client).key_for("k", spec), "x")
    with pytest.raises(StorageResponseError, match="Redis answered with an error.*WRONGTYPE") as info:
        limiter.hit("k", "1/minute", "sliding_log")
    assert isinstance(info.value.__cause__, redis.ResponseError)


@pytest.mark.parametrize("algorithm", ["fixed_window", "sliding_window", "token_bucket", "gcra"])
def test_a_key_of_another_layout_counts_as_empty(redis_client: redis.Redis, algorithm: str) -> None:
    # A hash, as an older layout left it, or a string that is not a packed
    # state: the check starts afresh and replaces it, with a TTL.
    limiter = Limiter(redis_client)
    key = RedisStorage(redis_client).key_for("k", limiter._resolve("2/minute", algorithm)[0][0])
    for stale in ({"w": "1", "c": "7"}, "x"):
        redis_client.delete(key)
        if isinstance(stale, dict):
            redis_client.hset(key, mapping=stale)
        else:
            redis_client.set(key, stale)
        decision = limiter.hit("k", "2/minute", algorithm)
        assert (decision.allowed, decision.remaining) == (True, 1)
        assert redis_client.type(key) == b"string"
        assert (redis_client.get(key) or b"").isdigit()
        assert 0 < redis_client.pttl(key) <= 120_000


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "memcached://x",
            "unsupported storage URL scheme 'memcached://' in 'memcached://x': expected one of",
        ),
        (
            "localhost:1234",
            "bad storage URL 'localhost:1234': expected 'memory://' or 'redis://host:port/db'",
        ),
        ("memory://somewhere", "memory:// takes no host or path"),
        ("memory://?max_keys=lots", "max_keys must be a whole number"),
        ("redis://127.0.0.1:1/notanumber", "bad storage URL 'redis://127.0.0.1:1/notanumber'"),
    ],
)
def test_bad_urls_are_named(url: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        Limiter.from_url(url)
    assert message in str(info.value)
