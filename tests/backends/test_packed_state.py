"""States as Redis stores them: one integer when it fits below 2**53, else doubles."""

from __future__ import annotations

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from support import ManualClock, stored_state

from bisman_ratelimit import Limiter
from bisman_ratelimit.backends import MemoryStorage, RedisStorage
from bisman_ratelimit.core import InvalidArgument, has_hash_tag, limit_tag, pack_state, unpack_state


@pytest.mark.parametrize(
    ("algorithm", "period_us", "tag"),
    [
        ("sliding_window", 60_000_000, "s1m"),
        ("fixed_window", 3_600_000_000, "f1h"),
        ("gcra", 86_400_000_000, "g1d"),
        ("token_bucket", 90_000_000, "t90s"),
        ("sliding_log", 1_500_000, "l1500ms"),
        ("fixed_window", 1_500, "f1500us"),
        ("gcra", 172_800_000_000, "g2d"),
    ],
)
def test_limit_tags(algorithm: str, period_us: int, tag: str) -> None:
    assert limit_tag(algorithm, period_us) == tag


def test_a_limit_tag_names_an_unknown_algorithm() -> None:
    with pytest.raises(InvalidArgument, match="unknown algorithm 'leaky'"):
        limit_tag("leaky", 1_000_000)


@pytest.mark.parametrize(
    ("key", "tagged"),
    [("rl:user:{u14}:api:/x", True), ("user:1", False), ("a{}b", False), ("a{}b{c}", False), ("}{x}", True)],
)
def test_hash_tags_are_found_as_redis_cluster_finds_them(key: str, tagged: bool) -> None:
    assert has_hash_tag(key) is tagged


@given(
    window=st.integers(min_value=0, max_value=2**40),
    counts=st.lists(st.integers(min_value=0, max_value=2**20), min_size=1, max_size=2),
)
def test_counts_pack_exactly_or_not_at_all(window: int, counts: list[int]) -> None:
    algorithm = "fixed_window" if len(counts) == 1 else "sliding_window"
    state = (window, *counts)
    packed = pack_state(algorithm, state)
    if type(packed) is int:
        assert packed < 2**53 and unpack_state(algorithm, packed) == state
    else:
        assert packed == state


def test_debts_pack_when_whole() -> None:
    assert pack_state("gcra", (600_000.0, 1_700_000_000_000_000)) == 1_700_000_000_600_000
    assert unpack_state("gcra", 1_700_000_000_600_000) == (1_700_000_000_600_000.0, 0)
    assert pack_state("token_bucket", (0.5, 17)) == (0.5, 17)


@pytest.mark.parametrize(
    ("limit", "algorithm", "unit", "packed"),
    [
        ("100/minute", "fixed_window", 1, True),
        ("100/minute", "sliding_window", 1, True),
        ("100/minute", "token_bucket", 1, True),
        ("100/minute", "gcra", 1, True),
        # Millions counted in a one-second window; a debt of 8571428.57 µs.
        ("10000000/second", "fixed_window", 1_000_000, False),
        ("10000000/second", "sliding_window", 1_000_000, False),
        ("7/minute", "token_bucket", 1, False),
        ("7/minute", "gcra", 1, False),
    ],
)
def test_what_does_not_fit_keeps_its_doubles_and_counts_alike(
    redis_client: redis.Redis, clock: ManualClock, limit: str, algorithm: str, unit: int, packed: bool
) -> None:
    # One clock for both, so that no window ends between their hits.
    storage = RedisStorage(redis_client, clock=clock)
    redis_limiter, memory = Limiter(storage), Limiter(MemoryStorage(clock=clock))
    key = storage.key_for("k", redis_limiter._resolve(limit, algorithm)[0][0])
    for cost in (unit, 2 * unit, 3 * unit):
        on_redis = redis_limiter.hit("k", limit, algorithm, cost)
        in_memory = memory.hit("k", limit, algorithm, cost)
        assert (on_redis.allowed, on_redis.remaining) == (in_memory.allowed, in_memory.remaining)
        clock.advance(0.001)
    raw = redis_client.get(key) or b""
    assert raw.isdigit() is packed
    assert redis_client.object("encoding", key) == (b"int" if packed else b"embstr")
    state = stored_state(redis_client, key)
    assert state is not None
    if algorithm.endswith("window"):
        assert state[1] == 6 * unit  # this window's count


@pytest.mark.parametrize(
    ("before", "now"),
    [
        # this window's count only; on each side of a power of two
        (0, 1),
        (0, 2),
        (0, 3),
        (0, 255),
        (0, 256),
        (0, 1024),
        # the previous window's count too: the width is the larger one's
        (255, 256),
        (256, 255),
        (1024, 1),
        (1, 1024),
    ],
)
@pytest.mark.parametrize("algorithm", ["fixed_window", "sliding_window"])
def test_the_script_packs_counts_as_python_does(
    redis_client: redis.Redis, clock: ManualClock, algorithm: str, before: int, now: int
) -> None:
    storage = RedisStorage(redis_client, clock=clock)
    limiter = Limiter(storage)
    key = storage.key_for("k", limiter._resolve("1000000/minute", algorithm)[0][0])
    if before:
        assert limiter.hit("k", "1000000/minute", algorithm, before)
        clock.advance(60)
    assert limiter.hit("k", "1000000/minute", algorithm, now)
    window = int(clock() // 60)
    state = (window, now) if algorithm == "fixed_window" else (window, now, before)
    assert int(redis_client.get(key) or b"") == pack_state(algorithm, state)
