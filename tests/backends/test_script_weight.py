"""What a single-limit script makes and answers on every call: only what it uses."""

from __future__ import annotations

import re

import pytest
import redis

from bisman_ratelimit.backends._redis import RATELIMIT, SINGLE

ALGORITHMS = ("fixed_window", "sliding_window", "sliding_log", "token_bucket", "gcra")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_single_limit_script_defines_only_the_helpers_it_calls(algorithm: str) -> None:
    # Lua makes each helper of a script again on every call.
    source = SINGLE[algorithm].source
    defined = re.findall(r"local function (\w+)", source)
    unused = [name for name in defined if len(re.findall(rf"\b{name}\b", source)) == 1]
    assert unused == []
    assert "check" in source and f"local check = {algorithm}\n" in source


def test_the_script_of_many_limits_holds_every_helper() -> None:
    defined = re.findall(r"local function (\w+)", RATELIMIT.source)
    assert sorted(defined) == sorted(
        [
            "ttl_ms",
            "num",
            "write",
            "decode",
            "is_integer",
            "store",
            "pack_counts",
            "unpack_counts",
            "pack_gcra",
            "unpack_gcra",
            *ALGORITHMS,
            "read_states",
            "run",
            "refund",
        ]
    )


def _packed(remaining: int, reset_us: int) -> int:
    return remaining * 2**33 + reset_us * 2 + 1


@pytest.mark.parametrize(
    ("algorithm", "reply", "stored"),
    [
        # 10 a second, hit once at 5 s: window 5 holds 1 (width 1).
        ("fixed_window", _packed(9, 1_000_000), ((5 * 2 + 1) * 64) + 1),
        ("sliding_window", _packed(9, 2_000_000), (((5 * 2 + 1) * 2) * 64) + 1),
        # A debt of one interval (100 ms), paid off at 5.1 s.
        ("token_bucket", _packed(9, 100_000), 5_100_000),
        ("gcra", _packed(9, 100_000), 5_100_000),
    ],
)
def test_an_allowed_hit_answers_one_integer_and_stores_one_integer(
    redis_client: redis.Redis, algorithm: str, reply: int, stored: int
) -> None:
    script = SINGLE[algorithm]
    redis_client.script_load(script.source)
    args = ["5000000", "1", algorithm, "10", "1000000", "10", "1"]
    assert redis_client.evalsha(script.sha, 1, "k", *args) == reply
    assert redis_client.get("k") == str(stored).encode()


@pytest.mark.parametrize(
    ("args", "reply"),
    [
        # Denied (the second hit of 1 a second): the table, with its retry.
        (["5000000", "1", "fixed_window", "1", "1000000", "1", "1"], [0, 0, 1_000_000, 1_000_000]),
        # A reset of 2^32 µs or more (4,995 s left of a 5,000 s window) does not fit.
        (["5000000", "1", "fixed_window", "2", "5000000000", "2", "1"], [1, 0, 4_995_000_000, 0]),
        # Nor does a remaining of 2^20 or more.
        (
            ["5000000", "1", "fixed_window", "2000000", "1000000", "2000000", "1"],
            [1, 1_999_998, 1_000_000, 0],
        ),
    ],
)
def test_answers_that_do_not_fit_one_integer_are_the_table(
    redis_client: redis.Redis, args: list[str], reply: list[int]
) -> None:
    script = SINGLE["fixed_window"]
    redis_client.script_load(script.source)
    redis_client.evalsha(script.sha, 1, "k", *args)
    assert redis_client.evalsha(script.sha, 1, "k", *args) == reply


def test_a_capacity_and_cost_other_than_the_usual_count(redis_client: redis.Redis) -> None:
    # single.lua reads capacity only when its string is not the amount's, cost only when not "1".
    script = SINGLE["token_bucket"]
    redis_client.script_load(script.source)
    # 10 a second (100 ms a token), 3 tokens at most, 2 a hit.
    args = ["5000000", "1", "token_bucket", "10", "1000000", "3", "2"]
    assert redis_client.evalsha(script.sha, 1, "k", *args) == _packed(1, 200_000)
    assert redis_client.evalsha(script.sha, 1, "k", *args) == [0, 1, 200_000, 100_000]
