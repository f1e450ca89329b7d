"""Limits and identities that a backend could not hold are refused where they are written.

Redis scripts count in doubles: a limit they cannot count exactly is
refused when it is parsed, with a message naming the limit and the bound,
on every backend alike, so that it never reaches the server and never
counts as a storage fault for the circuit breaker.
"""

from __future__ import annotations

import pytest
import redis
from support import ManualClock

from bisman_ratelimit import ALGORITHMS, InvalidLimit, Limit, Limiter, parse_limits
from bisman_ratelimit.core import CircuitBreaker, escape, hash_tag, make_key
from bisman_ratelimit.core._keys import unescape
from bisman_ratelimit.core._rate import MAX_AMOUNT, MAX_PERIOD_US
from bisman_ratelimit.testing import RedisServer


@pytest.mark.parametrize("text", ["1/0 seconds", "1 per 0 minutes", "5/00second", "10/minute; 1/0 hours"])
def test_a_zero_period_is_refused(text: str) -> None:
    with pytest.raises(InvalidLimit, match=rf"invalid rate limit '{text}': a period of 0 is no period"):
        parse_limits(text)


@pytest.mark.parametrize("text", ["10/second", "5 per 30 seconds", "100 per 10 minutes", "20/hour"])
def test_periods_with_other_counts_still_parse(text: str) -> None:
    assert len(parse_limits(text)) == 1


def test_the_largest_amount_and_period_are_accepted() -> None:
    limit = Limit(MAX_AMOUNT, MAX_PERIOD_US / 1_000_000, burst=MAX_AMOUNT)
    assert limit.period_us == MAX_PERIOD_US


def test_an_amount_above_two_to_the_53_is_refused() -> None:
    with pytest.raises(
        InvalidLimit,
        match=r"invalid rate limit '9007199254740993/minute': limit amount must be at most 2\*\*53 "
        r"\(9007199254740992\), the largest count a Redis script keeps exactly, got 9007199254740993",
    ):
        parse_limits("9007199254740993/minute")
    with pytest.raises(InvalidLimit, match=r"limit burst must be at most 2\*\*53"):
        Limit(10, 60, burst=2**63)


def test_a_period_beyond_285_years_is_refused() -> None:
    with pytest.raises(
        InvalidLimit,
        match=r"invalid rate limit '1 per 100000000 years': limit period must be at most 285 years "
        r"\(2\*\*53 microseconds, the longest a Redis script times exactly\), got 3110400000000000 s",
    ):
        parse_limits("1 per 100000000 years")


@pytest.mark.redis
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_the_bounds_count_alike_on_redis_and_in_memory(algorithm: str) -> None:
    largest = [Limit(MAX_AMOUNT, 60), Limit(10, MAX_PERIOD_US / 1_000_000)]
    with (
        RedisServer() as server,
        Limiter.from_url(server.url) as on_redis,
        Limiter.from_url("memory://") as in_memory,
    ):
        for limit in largest:
            got = [lim.hit("client", limit, algorithm=algorithm) for lim in (on_redis, in_memory)]
            assert got[0].allowed and got[1].allowed
            assert got[0].remaining == got[1].remaining == limit.capacity - 1
            assert got[0].reset_after >= 0


@pytest.mark.redis
def test_a_limit_redis_cannot_hold_never_opens_the_breaker(clock: ManualClock) -> None:
    guard = CircuitBreaker(failure_threshold=1, min_calls=1, open_for=5.0, clock=clock)
    with RedisServer() as server, Limiter.from_url(server.url + "?fallback=memory", breaker=guard) as limiter:
        for _ in range(5):
            with pytest.raises(InvalidLimit):
                limiter.hit("client", "1 per 100000000 years")
        assert guard.state == "closed"
        assert limiter.hit("client", "5/minute").remaining == 4
        client = redis.Redis(port=server.port)
        try:
            assert client.dbsize() == 1  # decided on Redis, not locally
        finally:
            client.close()


@pytest.mark.parametrize("identity", ["\udc80", "a\ud800b", "user:\udfff:{x}", "\ud83d\ude00"])
def test_lone_surrogates_in_an_identity_are_escaped(identity: str) -> None:
    escaped = escape(identity)
    assert escaped.isascii() and unescape(escaped) == identity
    assert hash_tag(identity).isascii()
    assert make_key("rl", "ip", identity) == "rl:ip:" + escaped


def test_a_surrogate_pair_and_the_character_it_stands_for_stay_apart() -> None:
    assert escape("\ud83d\ude00") == "%ED%A0%BD%ED%B8%80"
    assert escape("\U0001f600") == "%F0%9F%98%80"


@pytest.mark.redis
def test_a_surrogate_identity_is_limited_on_redis() -> None:
    with RedisServer() as server, Limiter.from_url(server.url) as limiter:
        assert [limiter.hit("\udc80evil", "2/minute").allowed for _ in range(3)] == [True, True, False]
        assert limiter.hit("\udc81evil", "2/minute").allowed
