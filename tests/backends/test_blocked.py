"""The blocked-keys cache: what it answers on a manual clock, and the Redis calls it saves."""

from __future__ import annotations

import time

import pytest
import redis
from support import ManualClock

from bisman_ratelimit import InvalidArgument, Limit, Limiter
from bisman_ratelimit.backends import RedisStorage, Spec
from bisman_ratelimit.backends._blocked import BlockedKeys
from bisman_ratelimit.core import make_decision

SPEC = Spec("fixed_window", 10, 60_000_000, 10)


def denial(
    key: str = "k", retry_us: int = 30_000_000, reset_us: int = 40_000_000, remaining: int = 0
) -> object:
    return make_decision(False, 10, remaining, reset_us, retry_us, key, "fixed_window")


def evalsha_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def test_a_denial_is_answered_aged_until_it_runs_out(clock: ManualClock) -> None:
    cache = BlockedKeys(clock=clock)
    cache.remember(SPEC, 1, denial(remaining=0))  # type: ignore[arg-type]
    assert cache.lookup("k", SPEC, 1) == denial()
    clock.advance(10)
    assert cache.lookup("k", SPEC, 1) == denial(retry_us=20_000_000, reset_us=30_000_000)
    clock.advance(19.999999)
    assert cache.lookup("k", SPEC, 1) == denial(retry_us=1, reset_us=10_000_001)
    clock.advance(0.000001)
    assert cache.lookup("k", SPEC, 1) is None
    assert len(cache) == 0
    assert cache.answered == 3


def test_only_the_same_key_limit_and_cost_are_answered(clock: ManualClock) -> None:
    cache = BlockedKeys(clock=clock)
    cache.remember(SPEC, 2, denial(remaining=1))  # type: ignore[arg-type]
    assert cache.lookup("k", SPEC, 2) == denial(remaining=1)
    assert cache.lookup("k", SPEC, 1) is None
    assert cache.lookup("k", SPEC, 3) is None
    assert cache.lookup("other", SPEC, 2) is None
    assert cache.lookup("k", SPEC._replace(amount=11), 2) is None


def test_allowed_and_instant_answers_are_not_remembered(clock: ManualClock) -> None:
    cache = BlockedKeys(clock=clock)
    cache.remember(SPEC, 1, make_decision(True, 10, 9, 60_000_000, 0, "k", "fixed_window"))
    cache.remember(SPEC, 1, denial(retry_us=0))  # type: ignore[arg-type]
    assert len(cache) == 0


def test_the_denial_is_dated_from_when_redis_was_asked(clock: ManualClock) -> None:
    cache = BlockedKeys(clock=clock)
    asked = cache.now()
    clock.advance(0.005)  # the round trip
    cache.remember(SPEC, 1, denial(), asked)  # type: ignore[arg-type]
    assert cache.lookup("k", SPEC, 1) == denial(retry_us=29_995_000, reset_us=39_995_000)


def test_provisional_keys_are_never_remembered(clock: ManualClock) -> None:
    cache = BlockedKeys(clock=clock)
    cache.remember(SPEC, 1, denial("rl:ip:{a}:api:/login"))  # type: ignore[arg-type]
    cache.remember(SPEC, 1, denial("rl:ip:{a}:api:/other"))  # type: ignore[arg-type]
    cache.provisional(":api:/login")
    # The denial already held is dropped, and later ones are not kept; other keys are as before.
    assert cache.lookup("rl:ip:{a}:api:/login", SPEC, 1) is None
    cache.remember(SPEC, 1, denial("rl:ip:{b}:api:/login"))  # type: ignore[arg-type]
    assert cache.lookup("rl:ip:{b}:api:/login", SPEC, 1) is None
    assert cache.lookup("rl:ip:{a}:api:/other", SPEC, 1) == denial("rl:ip:{a}:api:/other")
    assert len(cache) == 1


async def test_caches_in_finds_the_cache_through_the_wrappers(redis_url: str) -> None:
    from prometheus_client import CollectorRegistry

    from bisman_ratelimit import AsyncLimiter
    from bisman_ratelimit.backends import caches_in, routed_storage
    from bisman_ratelimit.metrics import CacheMetrics, instrument_storage

    plain = Limiter.from_url(redis_url)
    wrapped = Limiter.from_url(redis_url + "?fallback=memory")
    instrumented = instrument_storage(wrapped.storage, metrics=CacheMetrics(registry=CollectorRegistry()))
    routed = routed_storage({"auth": redis_url}, default=redis_url + "?blocked_cache=off")
    asynchronous = AsyncLimiter.from_url(redis_url + "?fallback=memory")
    assert caches_in(plain.storage) == [plain.storage.blocked]  # type: ignore[attr-defined]
    assert caches_in(instrumented) == [wrapped.storage.primary.blocked]  # type: ignore[attr-defined]
    assert len(caches_in(routed)) == 1
    assert caches_in(asynchronous.storage) == [asynchronous.storage.primary.blocked]  # type: ignore[attr-defined]
    assert caches_in(Limiter.from_url(redis_url + "?blocked_cache=off").storage) == []
    await asynchronous.aclose()


def test_forget_and_clear(clock: ManualClock) -> None:
    cache = BlockedKeys(clock=clock)
    cache.remember(SPEC, 1, denial("a"))  # type: ignore[arg-type]
    cache.remember(SPEC, 1, denial("b"))  # type: ignore[arg-type]
    cache.forget("a", SPEC)
    cache.forget("never", SPEC)
    assert cache.lookup("a", SPEC, 1) is None and cache.lookup("b", SPEC, 1) is not None
    cache.clear()
    assert len(cache) == 0


def test_size_is_capped_expired_entries_first_then_the_oldest(clock: ManualClock) -> None:
    cache = BlockedKeys(max_keys=16, clock=clock)
    for i in range(4):
        cache.remember(SPEC, 1, denial(f"short{i}", retry_us=1_000_000))  # type: ignore[arg-type]
    for i in range(12):
        cache.remember(SPEC, 1, denial(f"long{i}"))  # type: ignore[arg-type]
    clock.advance(2)
    cache.remember(SPEC, 1, denial("new"))  # type: ignore[arg-type]
    assert len(cache) == 13  # the four expired ones went
    for i in range(3):
        cache.remember(SPEC, 1, denial(f"more{i}"))  # type: ignore[arg-type]
    cache.remember(SPEC, 1, denial("last"))  # type: ignore[arg-type]
    # Full of live entries: the oldest eighth (two) made room.
    assert len(cache) == 15
    assert cache.lookup("long0", SPEC, 1) is None and cache.lookup("long1", SPEC, 1) is None
    assert cache.lookup("long2", SPEC, 1) is not None and cache.lookup("last", SPEC, 1) is not None


def test_bad_size_is_named() -> None:
    with pytest.raises(
        InvalidArgument, match="blocked-keys cache max_keys must be a whole number >= 8, got 2"
    ):
        BlockedKeys(max_keys=2)


def test_a_blocked_client_costs_no_redis_call(redis_url: str, redis_client: redis.Redis) -> None:
    with Limiter.from_url(redis_url) as limiter:
        assert [limiter.hit("abuser", "2/minute", "token_bucket").allowed for _ in range(3)] == [
            True,
            True,
            False,
        ]
        before = evalsha_calls(redis_client)
        denials = [limiter.hit("abuser", "2/minute", "token_bucket") for _ in range(50)]
        assert evalsha_calls(redis_client) == before
        assert not any(d.allowed for d in denials)
        assert denials[-1].retry_after <= denials[0].retry_after <= 60.0
        # Other keys, and other costs of this key, still go to Redis.
        assert limiter.hit("someone", "2/minute", "token_bucket").allowed
        assert not limiter.hit("abuser", "2/minute", "token_bucket", cost=2).allowed
        assert evalsha_calls(redis_client) == before + 2


def test_the_cache_is_on_for_clients_and_can_be_turned_off(redis_url: str, redis_client: redis.Redis) -> None:
    on = Limiter(redis.Redis.from_url(redis_url))
    off_by_url = Limiter.from_url(redis_url + "?blocked_cache=off")
    off_by_code = Limiter.from_url(redis_url, blocked_cache=False)
    direct = Limiter(RedisStorage(redis.Redis.from_url(redis_url)))
    for limiter, calls in [(on, 1), (off_by_url, 5), (off_by_code, 5), (direct, 5)]:
        redis_client.flushall()
        limiter.hit("k", "1/minute")
        before = evalsha_calls(redis_client)
        for _ in range(5):
            assert not limiter.hit("k", "1/minute").allowed
        assert evalsha_calls(redis_client) - before == calls
        limiter.close()


def test_reset_drops_the_cached_denial(redis_url: str) -> None:
    with Limiter.from_url(redis_url) as limiter:
        limiter.hit("k", "1/minute")
        assert not limiter.hit("k", "1/minute").allowed
        limiter.reset("k", "1/minute")
        assert limiter.hit("k", "1/minute").allowed


def test_the_cached_denial_ends_when_redis_would_allow(redis_url: str) -> None:
    with Limiter.from_url(redis_url) as limiter:
        limit = Limit(1, 0.3)
        limiter.hit("k", limit, "sliding_log")
        denied = limiter.hit("k", limit, "sliding_log")
        assert not denied.allowed
        time.sleep(denied.retry_after)
        assert limiter.hit("k", limit, "sliding_log").allowed


def test_peek_of_a_blocked_key_is_answered_too(redis_url: str, redis_client: redis.Redis) -> None:
    with Limiter.from_url(redis_url) as limiter:
        limiter.hit("k", "1/minute", "gcra")
        first = limiter.hit("k", "1/minute", "gcra")
        before = evalsha_calls(redis_client)
        look = limiter.peek("k", "1/minute", "gcra")
        assert not look.allowed and look.retry_after <= first.retry_after
        assert evalsha_calls(redis_client) == before
