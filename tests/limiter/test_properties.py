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
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import ManualClock

from bisman_ratelimit import Limit, Limiter
from bisman_ratelimit.backends import MemoryStorage, RedisStorage
from bisman_ratelimit.testing import RedisServer

ALGORITHMS = ["fixed_window", "sliding_window", "sliding_log", "token_bucket", "gcra"]

limits = st.builds(
    Limit,
    amount=st.sampled_from([1, 2, 4, 5, 10, 20]),
    period=st.sampled_from([20, 60, 100]),
    burst=st.sampled_from([None, 1, 3, 8]),
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("hit"), st.integers(min_value=1, max_value=3)),
        st.tuples(st.just("peek"), st.integers(min_value=1, max_value=3)),
        st.tuples(st.just("wait"), st.integers(min_value=0, max_value=240)),  # half seconds
        st.tuples(st.just("many"), st.integers(min_value=1, max_value=2)),
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
    for op, arg in ops:
        if op == "wait":
            clock.advance(arg / 2)
            continue
        results: list[Any] = []
        for lim in (memory, remote):
            if op == "hit":
                results.append(lim.hit("k", limit, algorithm, cost=min(arg, capacity)))
            elif op == "peek":
                results.append(lim.peek("k", limit, algorithm, cost=min(arg, capacity)))
            else:
                results.append(
                    lim.hit_many(
                        [
                            ("k", limit, algorithm, min(arg, capacity)),
                            ("j", other, algorithm, min(arg, other_capacity)),
                        ]
                    )
                )
        assert results[0] == results[1], (op, arg, clock.now)
