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


@pytest.mark.parametrize(
    ("algorithm", "reply", "stored"),
    [
        # 10 a second, hit once at 5 s: window 5 holds 1 (width 1).
        ("fixed_window", [1, 9, 1_000_000, 0], ((5 * 2 + 1) * 64) + 1),
        ("sliding_window", [1, 9, 2_000_000, 0], (((5 * 2 + 1) * 2) * 64) + 1),
        # A debt of one interval (100 ms), paid off at 5.1 s.
        ("token_bucket", [1, 9, 100_000, 0], 5_100_000),
        ("gcra", [1, 9, 100_000, 0], 5_100_000),
    ],
)
def test_a_single_limit_answers_four_numbers_and_stores_one_integer(
    redis_client: redis.Redis, algorithm: str, reply: list[int], stored: int
) -> None:
    script = SINGLE[algorithm]
    redis_client.script_load(script.source)
    args = ["5000000", "1", algorithm, "10", "1000000", "10", "1"]
    assert redis_client.evalsha(script.sha, 1, "k", *args) == reply
    assert redis_client.get("k") == str(stored).encode()
