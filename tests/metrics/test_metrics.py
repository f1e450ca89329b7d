"""Application metrics: values after known operations, bounded labels, registries."""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis
import redis.asyncio
from prometheus_client import REGISTRY, CollectorRegistry

from bisman_ratelimit import AsyncLimiter, ConfigurationError, InvalidArgument, Limiter
from bisman_ratelimit.backends import AsyncAdapter, AsyncRedisStorage, MemoryStorage, RedisStorage
from bisman_ratelimit.core import CircuitBreaker
from bisman_ratelimit.metrics import (
    AsyncInstrumentedStorage,
    InstrumentedRedis,
    InstrumentedStorage,
    instrument_storage,
)
from bisman_ratelimit.metrics._prometheus import (
    OTHER_ROUTE,
    UNMATCHED_ROUTE,
    CacheMetrics,
    RateLimitMetrics,
    RouteLabels,
)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def series(registry: CollectorRegistry) -> int:
    return sum(len(metric.samples) for metric in registry.collect())


def test_importing_registers_nothing() -> None:
    code = (
        "import prometheus_client\n"
        "before = set(prometheus_client.REGISTRY._names_to_collectors)\n"
        "import bisman_ratelimit.metrics, bisman_ratelimit.ops\n"
        "import bisman_ratelimit.ops.cli._ops_cmd, bisman_ratelimit_starlette.metrics\n"
        "print(sorted(set(prometheus_client.REGISTRY._names_to_collectors) - before))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_default_registry_is_prometheus_default() -> None:
    metrics = RateLimitMetrics()
    try:
        metrics.record_decision(route="/a", allowed=True)
        assert REGISTRY.get_sample_value("app_rate_limit_allowed_total", {"route": "/a"}) == 1.0
    finally:
        for collector in (
            metrics.allowed,
            metrics.blocked,
            metrics.breaker_state,
            metrics.breaker_transitions,
        ):
            REGISTRY.unregister(collector)


def test_second_instance_on_one_registry_is_a_clear_error(registry: CollectorRegistry) -> None:
    RateLimitMetrics(registry=registry)
    with pytest.raises(ConfigurationError, match="create one RateLimitMetrics per registry and share it"):
        RateLimitMetrics(registry=registry)
    CacheMetrics(registry=registry)
    with pytest.raises(ConfigurationError, match="create one CacheMetrics per registry"):
        CacheMetrics(registry=registry)


def test_decisions_are_counted_by_route_and_reason(registry: CollectorRegistry) -> None:
    metrics = RateLimitMetrics(registry=registry)
    for _ in range(3):
        metrics.record_decision(route="/api/calls/{id}", allowed=True)
    metrics.record_decision(route="/api/calls/{id}", allowed=False, reason="client")
    metrics.record_decision(route="/api/calls/{id}", allowed=False, reason="client")
    metrics.record_decision(route="/api/calls/{id}", allowed=False, reason="global")
    metrics.record_decision(route="/login", allowed=True, reason="shadow")
    metrics.record_decision(route=None, allowed=False, reason="unavailable")

    assert value(registry, "app_rate_limit_allowed_total", route="/api/calls/{id}") == 3
    assert value(registry, "app_rate_limit_block_total", route="/api/calls/{id}", reason="client") == 2
    assert value(registry, "app_rate_limit_block_total", route="/api/calls/{id}", reason="global") == 1
    # A shadow refusal lets the request through: counted both ways.
    assert value(registry, "app_rate_limit_allowed_total", route="/login") == 1
    assert value(registry, "app_rate_limit_block_total", route="/login", reason="shadow") == 1
    assert value(registry, "app_rate_limit_block_total", route=UNMATCHED_ROUTE, reason="unavailable") == 1


def test_decision_arguments_are_checked(registry: CollectorRegistry) -> None:
    metrics = RateLimitMetrics(registry=registry)
    with pytest.raises(InvalidArgument, match=r"a refused request needs a reason .* got None \(route '/x'\)"):
        metrics.record_decision(route="/x", allowed=False)
    with pytest.raises(InvalidArgument, match="got 'burst'"):
        metrics.record_decision(route="/x", allowed=False, reason="burst")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="shadow-mode refusals are recorded with allowed=True"):
        metrics.record_decision(route="/x", allowed=False, reason="shadow")
    with pytest.raises(
        InvalidArgument, match="an allowed request takes reason=None or 'shadow', got 'client'"
    ):
        metrics.record_decision(route="/x", allowed=True, reason="client")
    assert series(registry) == 0


def test_closed_route_list_sends_everything_else_to_other() -> None:
    labels = RouteLabels(routes=["/users/{id}", "/calls"])
    assert labels.label("/users/{id}") == "/users/{id}"
    assert labels.label("/users/42") == OTHER_ROUTE
    assert labels.label(None) == UNMATCHED_ROUTE
    assert labels.label("") == UNMATCHED_ROUTE


def test_open_route_labels_stop_at_max_routes() -> None:
    labels = RouteLabels(max_routes=2)
    assert [labels.label(route) for route in ("/a", "/b", "/c", "/a", "/d")] == [
        "/a",
        "/b",
        OTHER_ROUTE,
        "/a",
        OTHER_ROUTE,
    ]
    with pytest.raises(InvalidArgument, match="max_routes must be a whole number >= 1, got 0"):
        RouteLabels(max_routes=0)


def test_ten_thousand_paths_and_clients_give_a_fixed_number_of_series(registry: CollectorRegistry) -> None:
    cache = CacheMetrics(registry=registry)
    decisions = RateLimitMetrics(registry=registry, max_routes=5)
    limiter = Limiter(instrument_storage(MemoryStorage(), metrics=cache))

    def traffic(count: int, offset: int) -> None:
        for i in range(offset, offset + count):
            decision = limiter.hit(f"client:{i}", "1/minute")
            # A caller that wrongly passes raw paths, one per request.
            decisions.record_decision(route=f"/users/{i}/calls", allowed=decision.allowed, reason=None)
            limiter.hit(f"client:{i}", "1/minute")
            decisions.record_decision(route=f"/users/{i}/calls", allowed=False, reason="client")

    traffic(100, 0)
    after_hundred = series(registry)
    traffic(10_000, 100)
    assert series(registry) == after_hundred
    # 5 routes seen first, then everything shares <other>.
    routes = {s.labels["route"] for m in registry.collect() for s in m.samples if "route" in s.labels}
    assert routes == {
        "/users/0/calls",
        "/users/1/calls",
        "/users/2/calls",
        "/users/3/calls",
        "/users/4/calls",
        OTHER_ROUTE,
    }
    assert value(registry, "app_cache_op_duration_seconds_count", method="ratelimit", hit="n/a") == 2 * 10_100


def test_breaker_state_and_transitions(registry: CollectorRegistry) -> None:
    metrics = RateLimitMetrics(registry=registry)
    now = [0.0]
    breaker = CircuitBreaker(name="redis", failure_threshold=2, min_calls=1, open_for=5, clock=lambda: now[0])
    metrics.watch_breaker(breaker)
    assert value(registry, "app_breaker_state", breaker="redis", state="closed") == 1
    assert value(registry, "app_breaker_state", breaker="redis", state="open") == 0

    for _ in range(2):
        ticket = breaker.begin()
        assert ticket is not None
        breaker.failure(ticket)
    assert value(registry, "app_breaker_state", breaker="redis", state="open") == 1
    assert value(registry, "app_breaker_state", breaker="redis", state="closed") == 0
    assert value(registry, "app_breaker_transitions_total", breaker="redis", state="open") == 1

    now[0] = 5.0
    assert breaker.state == "half_open"
    assert value(registry, "app_breaker_state", breaker="redis", state="half_open") == 1
    assert value(registry, "app_breaker_state", breaker="redis", state="open") == 0
    with pytest.raises(
        InvalidArgument, match="breaker state must be one of closed, open, half_open, got 'broken'"
    ):
        metrics.set_breaker_state("broken")  # type: ignore[arg-type]


def test_instrumented_storage_on_redis(redis_client: redis.Redis, registry: CollectorRegistry) -> None:
    cache = CacheMetrics(registry=registry)
    limiter = Limiter(instrument_storage(RedisStorage(redis_client), metrics=cache))
    assert isinstance(limiter.storage, InstrumentedStorage)
    for _ in range(4):
        limiter.hit("user:1", "3/minute")
    limiter.reset("user:1", "3/minute")
    lease = limiter.acquire("job", max_in_flight=1, ttl=5)
    assert lease is not None
    lease.release()
    assert value(registry, "app_cache_op_duration_seconds_count", method="ratelimit", hit="n/a") == 4
    assert value(registry, "app_cache_op_duration_seconds_count", method="reset", hit="n/a") == 1
    assert value(registry, "app_cache_op_duration_seconds_count", method="acquire", hit="n/a") == 1
    assert value(registry, "app_cache_op_duration_seconds_count", method="release", hit="n/a") == 1
    assert 0 < value(registry, "app_cache_op_duration_seconds_sum", method="ratelimit", hit="n/a") < 4


async def test_instrumented_async_storage(
    async_redis_client: redis.asyncio.Redis, registry: CollectorRegistry
) -> None:
    cache = CacheMetrics(registry=registry)
    limiter = AsyncLimiter(instrument_storage(AsyncRedisStorage(async_redis_client), metrics=cache))
    assert isinstance(limiter.storage, AsyncInstrumentedStorage)
    decisions = [await limiter.hit("user:1", "2/minute") for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]
    assert value(registry, "app_cache_op_duration_seconds_count", method="ratelimit", hit="n/a") == 3

    memory = AsyncLimiter(instrument_storage(AsyncAdapter(MemoryStorage()), metrics=cache))
    await memory.hit("k", "1/minute")
    assert value(registry, "app_cache_op_duration_seconds_count", method="ratelimit", hit="n/a") == 4


def test_instrumented_storages_still_give_hits_back(
    redis_client: redis.Redis, registry: CollectorRegistry
) -> None:
    cache = CacheMetrics(registry=registry)
    for storage in (RedisStorage(redis_client), MemoryStorage()):
        limiter = Limiter(instrument_storage(storage, metrics=cache))
        entries = [("user:1", "2/minute", "fixed_window")]
        taken = limiter.hit_many(entries)
        assert taken.decisions[0].remaining == 1
        assert limiter.refund_many(entries, taken.at).decisions[0].remaining == 2
    assert value(registry, "app_cache_op_duration_seconds_count", method="ratelimit", hit="n/a") == 2
    assert value(registry, "app_cache_op_duration_seconds_count", method="refund", hit="n/a") == 2


async def test_instrumented_async_storages_still_give_hits_back(
    async_redis_client: redis.asyncio.Redis, registry: CollectorRegistry
) -> None:
    cache = CacheMetrics(registry=registry)
    for storage in (AsyncRedisStorage(async_redis_client), AsyncAdapter(MemoryStorage())):
        limiter = AsyncLimiter(instrument_storage(storage, metrics=cache))
        entries = [("user:1", "2/minute", "fixed_window")]
        taken = await limiter.hit_many(entries)
        assert (await limiter.refund_many(entries, taken.at)).decisions[0].remaining == 2
    assert value(registry, "app_cache_op_duration_seconds_count", method="refund", hit="n/a") == 2


def test_instrumented_redis_labels_hits_and_misses(
    redis_client: redis.Redis, registry: CollectorRegistry
) -> None:
    cache = CacheMetrics(registry=registry)
    client = InstrumentedRedis(redis_client, metrics=cache)
    assert client.get("chat:ctx:thread:1") is None
    client.set("chat:ctx:thread:1", "x", ex=120)
    assert client.get("chat:ctx:thread:1") == b"x"
    assert client.incr("rl:global:minute:1") == 1
    sha = client.script_load("return redis.call('incr', KEYS[1])")
    assert client.evalsha(sha, 1, "rl:global:minute:1") == 2
    with pytest.raises(redis.exceptions.NoScriptError):
        client.evalsha("0" * 40, 0)
    assert client.hgetall("auth:sess:user:1") == {}

    count = "app_cache_op_duration_seconds_count"
    assert value(registry, count, method="get", hit="miss") == 1
    assert value(registry, count, method="get", hit="hit") == 1
    assert value(registry, count, method="set", hit="n/a") == 1
    assert value(registry, count, method="incr", hit="n/a") == 1
    # One that ran and one that failed: failures are timed too.
    assert value(registry, count, method="evalsha", hit="n/a") == 2
    assert value(registry, count, method="hgetall", hit="miss") == 1
    # SCRIPT LOAD is not a data command: passed through, not timed.
    assert all(value(registry, count, method="other", hit=hit) == 0 for hit in ("hit", "miss", "n/a"))


async def test_instrumented_async_redis(
    async_redis_client: redis.asyncio.Redis, registry: CollectorRegistry
) -> None:
    cache = CacheMetrics(registry=registry)
    client = InstrumentedRedis(async_redis_client, metrics=cache)
    assert await client.get("k") is None
    await client.set("k", "v")
    assert await client.get("k") == b"v"
    # Storage on top of the wrapped client: its EVALSHA calls are timed.
    limiter = AsyncLimiter(AsyncRedisStorage(client))
    await limiter.hit("user:1", "5/minute")
    count = "app_cache_op_duration_seconds_count"
    assert value(registry, count, method="get", hit="miss") == 1
    assert value(registry, count, method="get", hit="hit") == 1
    assert value(registry, count, method="set", hit="n/a") == 1
    assert value(registry, count, method="evalsha", hit="n/a") >= 1


def test_observe_rejects_a_bad_hit_label(registry: CollectorRegistry) -> None:
    cache = CacheMetrics(registry=registry)
    cache.observe("made_up", "hit", 0.001)
    assert value(registry, "app_cache_op_duration_seconds_count", method="other", hit="hit") == 1
    with pytest.raises(InvalidArgument, match=r"hit must be one of \('hit', 'miss', 'n/a'\), got 'found'"):
        cache.observe("get", "found", 0.001)  # type: ignore[arg-type]
