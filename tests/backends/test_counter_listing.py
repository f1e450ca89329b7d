"""Listing what is counted (for the admin panel): blocked keys, sampled counters, keys read back."""

from __future__ import annotations

from collections.abc import Callable

import redis
from support import ManualClock

from bisman_ratelimit import Limiter
from bisman_ratelimit.backends import BlockedKeys, MemoryStorage, RedisStorage, Spec
from bisman_ratelimit.core import make_decision

SPEC = Spec("fixed_window", 10, 60_000_000, 10)
BUCKET = Spec("token_bucket", 5, 1_000_000, 8)


def known(*specs: Spec) -> Callable[[str, str, int], Spec | None]:
    """The limits a caller knows, found by the algorithm and window a stored counter carries."""

    def resolve(key: str, algorithm: str, window_us: int) -> Spec | None:
        return next((s for s in specs if (s.algorithm, s.period_us) == (algorithm, window_us)), None)

    return resolve


def test_blocked_lists_the_keys_denied_now(clock: ManualClock) -> None:
    cache = BlockedKeys(clock=clock)
    cache.remember(SPEC, 1, make_decision(False, 10, 0, 40_000_000, 30_000_000, "a", "fixed_window"))
    cache.remember(SPEC, 2, make_decision(False, 10, 1, 10_000_000, 5_000_000, "b", "fixed_window"))
    assert [(key, denial.retry_after) for key, _, denial in cache.blocked(10)] == [("a", 30.0), ("b", 5.0)]
    assert len(cache.blocked(1)) == 1
    clock.advance(5)
    assert [(key, spec, denial.retry_after) for key, spec, denial in cache.blocked(10)] == [("a", SPEC, 25.0)]


def test_memory_sample_lists_the_counters_of_known_limits(clock: ManualClock) -> None:
    storage = MemoryStorage(clock=clock)
    limiter = Limiter(storage)
    limiter.hit("free", "10/minute", "fixed_window")
    limiter.hit("full", "10/minute", "fixed_window", cost=10)
    limiter.acquire("leased", 2, 10)  # not a counter: left out
    assert sorted(storage.sample(10, known(SPEC))) == [("free", SPEC), ("full", SPEC)]
    assert len(storage.sample(1, known(SPEC))) == 1
    assert storage.sample(10, known(BUCKET)) == []  # counters of limits the caller does not know


def test_redis_keys_are_read_back_and_sampled(redis_client: redis.Redis) -> None:
    storage = RedisStorage(redis_client, prefix="rl")
    for key, spec in (("ip:{198.51.100.7}", SPEC), ("user:{odd} näme", BUCKET), ("a:b:c", SPEC)):
        assert storage.parse_key(storage.key_for(key, spec)) == (key, spec.algorithm, spec.period_us)
    assert storage.key_for("ip:{198.51.100.7}", SPEC) == "rl:ip:{198.51.100.7}:f1m"
    for other in (
        "rl",
        "rl:x:lease",
        "rl:x:z1m",
        "rl:x:f0s",
        "rl:f1m",
        "flags:config",
        "rlx:a:f1m",
    ):
        assert storage.parse_key(other) is None
    limiter = Limiter(storage)
    for i in range(30):
        limiter.hit(f"client{i}", "10/minute", "fixed_window")
    limiter.acquire("leased", 2, 10)
    redis_client.set("chat:ctx:thread:1:seq", 1)
    sampled = storage.sample(1000, known(SPEC, BUCKET))
    assert sorted(sampled) == sorted((f"client{i}", SPEC) for i in range(30))
    assert len(storage.sample(7, known(SPEC))) == 7
