"""Memory and Redis decide alike for the same hits at the same times.

The Lua scripts and the Python algorithms are two implementations of one
piece of math; Hypothesis drives both with the same sequence of hits, peeks
and clock steps and compares every figure.

Redis expires keys in real time while the test's clock is virtual: clock
steps are multiples of 0.5 s and every limit's refill interval a whole
number of seconds, so every non-empty key's reset (its TTL) is at least
0.5 s, far longer than an example takes to run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import ManualClock

from bisman_ratelimit import Decision, Limit, Limiter
from bisman_ratelimit.backends import MemoryStorage, RedisStorage
from bisman_ratelimit.testing import RedisServer

ALGORITHMS = ["fixed_window", "sliding_window", "sliding_log", "token_bucket", "gcra"]

limits = st.builds(
    Limit,
    amount=st.sampled_from([1, 2, 4, 5, 10, 20]),
    # 7200 s: a reset of 2^32 µs or more, which a single-limit script answers
    # as a table rather than one packed integer.
    period=st.sampled_from([20, 60, 100, 7200]),
    burst=st.sampled_from([None, 1, 3, 8]),
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("hit"), st.integers(min_value=1, max_value=3)),
        st.tuples(st.just("peek"), st.integers(min_value=1, max_value=3)),
        st.tuples(st.just("wait"), st.integers(min_value=0, max_value=240)),  # half seconds
        st.tuples(st.just("many"), st.integers(min_value=1, max_value=2)),
        # Give back an earlier hit_many: both its entries (0), or "k" (1) or "j" (2) alone.
        st.tuples(st.just("refund"), st.integers(min_value=0, max_value=2)),
    ),
    min_size=1,
    max_size=40,
)


@pytest.fixture
def flushed(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    algorithm=st.sampled_from(ALGORITHMS),
    limit=limits,
    other=limits,
    ops=operations,
    offset=st.integers(min_value=0, max_value=200),
)
def test_memory_and_redis_agree(
    flushed: redis.Redis, algorithm: str, limit: Limit, other: Limit, ops: list[tuple[str, int]], offset: int
) -> None:
    flushed.flushall()
    clock = ManualClock()
    clock.advance(offset / 2)
    memory = Limiter(MemoryStorage(clock=clock))
    remote = Limiter(RedisStorage(flushed, clock=clock))
    capacity = limit.capacity if algorithm in ("token_bucket", "gcra") else limit.amount
    other_capacity = other.capacity if algorithm in ("token_bucket", "gcra") else other.amount
    # hit_many calls that consumed, oldest first: (entries, at).
    held: list[tuple[list[Any], int]] = []
    for op, arg in ops:
        if op == "wait":
            clock.advance(arg / 2)
            continue
        if op == "refund" and not held:
            continue
        results: list[Any] = []
        for lim in (memory, remote):
            if op == "hit":
                results.append(lim.hit("k", limit, algorithm, cost=min(arg, capacity)))
            elif op == "peek":
                results.append(lim.peek("k", limit, algorithm, cost=min(arg, capacity)))
            elif op == "refund":
                entries, at = held[0]
                results.append(lim.refund_many(entries if arg == 0 else [entries[arg - 1]], at))
            else:
                entries = [
                    ("k", limit, algorithm, min(arg, capacity)),
                    ("j", other, algorithm, min(arg, other_capacity)),
                ]
                results.append(lim.hit_many(entries))
        assert results[0] == results[1], (op, arg, clock.now)
        assert results[0].__dict__.get("at") == results[1].__dict__.get("at")
        if op == "refund":
            held.pop(0)
        elif op == "many" and results[0].allowed:
            assert results[0].at == int(clock.now * 1_000_000)
            held.append((entries, results[0].at))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    algorithm=st.sampled_from(ALGORITHMS),
    limit=limits,
    before=st.lists(
        st.tuples(st.integers(min_value=0, max_value=240), st.integers(min_value=1, max_value=3)), max_size=12
    ),
    cost=st.integers(min_value=1, max_value=3),
    waits=st.lists(st.integers(min_value=0, max_value=240), max_size=3),
    offset=st.integers(min_value=0, max_value=200),
    remote=st.booleans(),
)
def test_a_refund_leaves_the_counters_as_if_the_hit_never_was(
    flushed: redis.Redis,
    algorithm: str,
    limit: Limit,
    before: list[tuple[int, int]],
    cost: int,
    waits: list[int],
    offset: int,
    remote: bool,
) -> None:
    """Whatever the time since (half seconds), across window boundaries: never below zero, never
    a hit of another window given back, never more than was taken."""
    flushed.flushall()
    clock = ManualClock()
    clock.advance(offset / 2)
    limiter = Limiter(RedisStorage(flushed, clock=clock) if remote else MemoryStorage(clock=clock))
    capacity = limit.capacity if algorithm in ("token_bucket", "gcra") else limit.amount
    cost = min(cost, capacity)
    # "hit" and "kept" see the same history; only "hit" gets the hit that is given back.
    for wait, amount in before:
        clock.advance(wait / 2)
        for key in ("hit", "kept"):
            limiter.hit(key, limit, algorithm, cost=min(amount, capacity))
    taken = limiter.hit_many([("hit", limit, algorithm, cost)])
    for wait in waits:
        clock.advance(wait / 2)
    refunded = limiter.refund_many([("hit", limit, algorithm, cost)], taken.at)
    # The refund answers with what a hit of its cost would meet now.
    assert_alike(algorithm, refunded.decisions[0], limiter.peek("kept", limit, algorithm, cost=cost))
    for asked in range(1, capacity + 1):
        after = limiter.peek("hit", limit, algorithm, cost=asked)
        assert_alike(algorithm, after, limiter.peek("kept", limit, algorithm, cost=asked))


def assert_alike(algorithm: str, refunded: Decision, kept: Decision) -> None:
    """Equal figures. The buckets' states of the two keys were last written at different times, so
    their refills round differently: their times may differ by the microsecond a ceil adds."""
    if algorithm in ("token_bucket", "gcra"):
        assert abs(refunded.reset_after - kept.reset_after) <= 1.5e-6, (refunded, kept)
        assert abs(refunded.retry_after - kept.retry_after) <= 1.5e-6, (refunded, kept)
        refunded = replace(refunded, reset_after=kept.reset_after, retry_after=kept.retry_after)
    assert replace(refunded, key="kept") == kept
