"""One suite, every backend: memory and each Redis server kind, sync and async.

Time comes from the manual clock on every backend (on Redis through the
storage's test hook), so exact figures can be asserted. The clock starts at
midnight UTC, where every window starts.
"""

from __future__ import annotations

from typing import Any

import pytest
from support import ManualClock

from bisman_ratelimit import InvalidArgument, InvalidLimit, Limit

ALGORITHMS = ["fixed_window", "sliding_window", "sliding_log", "token_bucket", "gcra"]

# For "3/minute" hit three times at the start of a window: the fourth hit's
# retry_after and reset_after in seconds.
DENIED_AFTER_THREE = {
    "fixed_window": (60.0, 60.0),
    # Next window, once the three hits weigh 2: 60 s + 20 s. Both windows clear after 120 s.
    "sliding_window": (80.0, 120.0),
    "sliding_log": (60.0, 60.0),
    # One token per 20 s; full after 60 s.
    "token_bucket": (20.0, 60.0),
    "gcra": (20.0, 60.0),
}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_exact_boundary(limiter: Any, clock: ManualClock, algorithm: str) -> None:
    remaining = [limiter.hit("user:1", "3/minute", algorithm).remaining for _ in range(3)]
    assert remaining == [2, 1, 0]

    denied = limiter.hit("user:1", "3/minute", algorithm)
    retry, reset = DENIED_AFTER_THREE[algorithm]
    assert (denied.allowed, denied.remaining, denied.limit) == (False, 0, 3)
    assert denied.retry_after == retry
    assert denied.reset_after == reset
    assert denied.key == "user:1" and denied.algorithm == algorithm

    clock.advance(retry - 0.000001)
    assert not limiter.hit("user:1", "3/minute", algorithm).allowed
    clock.advance(0.000001)
    again = limiter.hit("user:1", "3/minute", algorithm)
    assert again.allowed and again.retry_after == 0.0


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_allowed_decision_figures(limiter: Any, clock: ManualClock, algorithm: str) -> None:
    first = limiter.hit("k", "10/minute", algorithm)
    expected_reset = {
        "fixed_window": 60.0,
        "sliding_window": 120.0,
        "sliding_log": 60.0,
        "token_bucket": 6.0,
        "gcra": 6.0,
    }[algorithm]
    assert (first.allowed, first.limit, first.remaining, first.retry_after) == (True, 10, 9, 0.0)
    assert first.reset_after == expected_reset


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_denied_hits_consume_nothing(limiter: Any, clock: ManualClock, algorithm: str) -> None:
    for _ in range(2):
        assert limiter.hit("k", "2/minute", algorithm).allowed
    first_denial = limiter.hit("k", "2/minute", algorithm)
    for _ in range(20):
        assert limiter.hit("k", "2/minute", algorithm) == first_denial
    clock.advance(first_denial.retry_after)
    assert limiter.hit("k", "2/minute", algorithm).allowed


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_cost_is_honoured(limiter: Any, algorithm: str) -> None:
    assert limiter.hit("k", "5/minute", algorithm, cost=2).remaining == 3
    assert limiter.hit("k", "5/minute", algorithm, cost=3).remaining == 0
    assert not limiter.hit("k", "5/minute", algorithm, cost=1).allowed


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_cost_larger_than_what_is_left_is_denied_without_consuming(limiter: Any, algorithm: str) -> None:
    assert limiter.hit("k", "5/minute", algorithm, cost=4).remaining == 1
    assert not limiter.hit("k", "5/minute", algorithm, cost=2).allowed
    assert limiter.hit("k", "5/minute", algorithm, cost=1).remaining == 0


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_peek_consumes_nothing(limiter: Any, algorithm: str) -> None:
    limiter.hit("k", "3/minute", algorithm)
    for _ in range(5):
        look = limiter.peek("k", "3/minute", algorithm)
        assert (look.allowed, look.remaining) == (True, 2)
    assert limiter.hit("k", "3/minute", algorithm).remaining == 1


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_peek_of_an_unknown_key_is_full(limiter: Any, algorithm: str) -> None:
    look = limiter.peek("nobody", "3/minute", algorithm)
    assert (look.allowed, look.remaining, look.reset_after, look.retry_after) == (True, 3, 0.0, 0.0)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_reset_forgets(limiter: Any, algorithm: str) -> None:
    for _ in range(3):
        limiter.hit("k", "3/minute", algorithm)
    assert not limiter.hit("k", "3/minute", algorithm).allowed
    limiter.reset("k", "3/minute", algorithm)
    assert limiter.hit("k", "3/minute", algorithm).remaining == 2


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_keys_windows_and_algorithms_are_independent(limiter: Any, algorithm: str) -> None:
    limiter.hit("a", "1/minute", algorithm)
    assert not limiter.hit("a", "1/minute", algorithm).allowed
    assert limiter.hit("b", "1/minute", algorithm).allowed
    assert limiter.hit("a", "1/hour", algorithm).allowed
    other = "gcra" if algorithm != "gcra" else "fixed_window"
    assert limiter.hit("a", "1/minute", other).allowed


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_new_amount_over_the_same_window_keeps_the_counter(limiter: Any, algorithm: str) -> None:
    # Keys tell limits apart by algorithm and window: raising a limit (a
    # new deploy) does not hand every client a fresh allowance.
    limiter.hit("a", "1/minute", algorithm)
    raised = limiter.hit("a", "2/minute", algorithm)
    if algorithm in ("token_bucket", "gcra"):
        # The bucket is still empty: it refills at the new rate.
        assert (raised.allowed, raised.remaining, raised.retry_after) == (False, 0, 30.0)
    else:
        assert (raised.allowed, raised.remaining) == (True, 0)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_two_amounts_over_one_window_in_one_call_are_refused(limiter: Any, algorithm: str) -> None:
    with pytest.raises(InvalidLimit, match=r"limit '1/minute;2/minute' has two .* limits over one window"):
        limiter.hit("a", "1/minute;2/minute", algorithm)
    with pytest.raises(InvalidLimit, match=r"hit_many\(\) key 'a' has two .* limits over one window"):
        limiter.hit_many([("a", "1/minute", algorithm), ("a", "2/minute", algorithm)])


def test_burst_sets_bucket_capacity(limiter: Any, clock: ManualClock) -> None:
    for algorithm in ("token_bucket", "gcra"):
        limit = Limit(1, 1, burst=5)
        results = [limiter.hit(algorithm, limit, algorithm).allowed for _ in range(6)]
        assert results == [True] * 5 + [False]
        denied = limiter.hit(algorithm, limit, algorithm)
        assert (denied.limit, denied.retry_after, denied.reset_after) == (5, 1.0, 5.0)


def test_token_bucket_refills_gradually(limiter: Any, clock: ManualClock) -> None:
    for _ in range(10):
        limiter.hit("k", "10/second", "token_bucket")
    clock.advance(0.35)
    assert [limiter.hit("k", "10/second", "token_bucket").allowed for _ in range(4)] == [True] * 3 + [False]


def test_sliding_window_weighs_the_previous_window(limiter: Any, clock: ManualClock) -> None:
    for _ in range(10):
        limiter.hit("k", "10/minute", "sliding_window")
    clock.advance(90)  # half way through the next window: the 10 hits weigh 5
    results = [limiter.hit("k", "10/minute", "sliding_window") for _ in range(6)]
    assert [r.allowed for r in results] == [True] * 5 + [False]
    assert [r.remaining for r in results[:5]] == [4, 3, 2, 1, 0]


def test_sliding_log_is_exact(limiter: Any, clock: ManualClock) -> None:
    limiter.hit("k", "2/minute", "sliding_log")
    clock.advance(30)
    limiter.hit("k", "2/minute", "sliding_log")
    denied = limiter.hit("k", "2/minute", "sliding_log")
    assert (denied.allowed, denied.retry_after, denied.reset_after) == (False, 30.0, 60.0)
    clock.advance(30)
    assert limiter.hit("k", "2/minute", "sliding_log").allowed


def test_multi_limit_string_applies_every_limit(limiter: Any, clock: ManualClock) -> None:
    results = [limiter.hit("k", "2 per second;3/minute", "fixed_window") for _ in range(3)]
    assert [r.allowed for r in results] == [True, True, False]
    assert results[2].retry_after == 1.0
    clock.advance(1)
    assert limiter.hit("k", "2 per second;3/minute", "fixed_window").allowed
    denied = limiter.hit("k", "2 per second;3/minute", "fixed_window")
    assert (denied.allowed, denied.limit, denied.retry_after) == (False, 3, 59.0)


def test_hit_many_is_all_or_nothing(limiter: Any) -> None:
    entries = [("global", "100/minute", "fixed_window"), ("user:1", "1/minute", "token_bucket")]
    first = limiter.hit_many(entries)
    assert first.allowed and [d.remaining for d in first.decisions] == [99, 0]

    second = limiter.hit_many(entries)
    assert not second.allowed
    assert [d.allowed for d in second.decisions] == [True, False]
    assert second.most_restrictive.key == "user:1"
    assert second.most_restrictive.retry_after == 60.0
    # The global limit was not consumed by the denied request.
    assert limiter.peek("global", "100/minute", "fixed_window").remaining == 99


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_hit_many_counts_a_repeated_limit_once_per_entry(limiter: Any, algorithm: str) -> None:
    entries = [("k", "3/minute", algorithm), ("other", "9/minute", algorithm), ("k", "3/minute", algorithm)]
    first = limiter.hit_many(entries)
    assert first.allowed
    assert [(d.key, d.remaining) for d in first.decisions] == [("k", 1), ("other", 8), ("k", 1)]
    # Two more on "k" would be four of three: none is consumed, "other" neither.
    second = limiter.hit_many(entries)
    assert not second.allowed
    assert [d.allowed for d in second.decisions] == [False, True, False]
    assert limiter.peek("k", "3/minute", algorithm).remaining == 1
    assert limiter.peek("other", "9/minute", algorithm).remaining == 8
    # A limit written twice in one string is one limit.
    assert limiter.hit("twice", "3/minute;3/minute", algorithm).remaining == 2


def test_hit_many_repeats_beyond_what_a_limit_allows_at_once(limiter: Any) -> None:
    with pytest.raises(InvalidLimit) as caught:
        limiter.hit_many([("k", "1/minute"), ("k", "1/minute")])
    assert str(caught.value) == (
        "hit_many() entries for key 'k' add up to cost 2 under one limit, "
        "more than it can ever allow at once (1)"
    )


def test_peek_many_consumes_nothing(limiter: Any) -> None:
    entries = [("global", "100/minute", "fixed_window"), ("user:1", "1/minute", "token_bucket")]
    limiter.hit_many(entries)
    for _ in range(3):
        look = limiter.peek_many(entries)
        assert not look.allowed
        assert [(d.allowed, d.remaining) for d in look.decisions] == [(True, 99), (False, 0)]
    assert limiter.peek("global", "100/minute", "fixed_window").remaining == 99


def test_hit_many_with_costs_and_default_algorithm(limiter: Any) -> None:
    result = limiter.hit_many([("a", "10/minute", "gcra", 4), ("b", "5/minute")])
    assert result.allowed
    assert [(d.key, d.algorithm, d.remaining) for d in result.decisions] == [
        ("a", "gcra", 6),
        ("b", "sliding_window", 4),
    ]
    assert result.most_restrictive.key == "b"


def test_lease_limits_concurrency_and_expires(limiter: Any, clock: ManualClock) -> None:
    leases = [limiter.acquire("uploads", max_in_flight=2, ttl=30) for _ in range(3)]
    assert leases[0] is not None and leases[1] is not None and leases[2] is None
    leases[0].release()
    assert limiter.acquire("uploads", max_in_flight=2, ttl=30) is not None
    assert limiter.acquire("uploads", max_in_flight=2, ttl=30) is None
    # A holder that crashed never releases; its lease lapses after the TTL.
    clock.advance(30)
    assert limiter.acquire("uploads", max_in_flight=2, ttl=30) is not None


def test_lease_release_twice_is_harmless(limiter: Any) -> None:
    lease = limiter.acquire("k", max_in_flight=1, ttl=10)
    lease.release()
    lease.release()
    assert limiter.acquire("k", max_in_flight=1, ttl=10) is not None


@pytest.mark.parametrize(
    "key",
    ["a:b", "a%3Ab", "{a}", "a}b", "a*", "a?", "a[b]", "a b", "a\\b", "ü", "a\nb", "a", "a:b:"],
)
def test_unusual_keys_do_not_collide(limiter: Any, key: str) -> None:
    others = {"a:b", "a%3Ab", "{a}", "a}b", "a*", "a?", "a[b]", "a b", "a\\b", "ü", "a\nb", "a", "a:b:"} - {
        key
    }
    assert limiter.hit(key, "1/minute", "fixed_window").allowed
    assert not limiter.hit(key, "1/minute", "fixed_window").allowed
    for other in others:
        assert limiter.peek(other, "1/minute", "fixed_window").remaining == 1


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda lim: lim.hit("k", "abc"), "invalid rate limit 'abc': expected '<amount>/<period>'"),
        (lambda lim: lim.hit("k", ""), "empty rate limit string ''"),
        (lambda lim: lim.hit("k", "0/minute"), "invalid rate limit '0/minute'"),
        (lambda lim: lim.hit("k", "1/minute", cost=0), "cost must be a whole number >= 1, got 0"),
        (lambda lim: lim.hit("k", "1/minute", cost=1.5), "cost must be a whole number >= 1, got 1.5"),
        (
            lambda lim: lim.hit("k", "3/minute", cost=4),
            "cost 4 exceeds what limit '3/minute' can ever allow at once (3)",
        ),
        (lambda lim: lim.hit("", "1/minute"), "key must be a non-empty string, got ''"),
        (lambda lim: lim.hit(None, "1/minute"), "key must be a non-empty string, got None"),
        (lambda lim: lim.hit("k", "1/minute", "leaky"), "unknown algorithm 'leaky': expected one of"),
        (lambda lim: lim.hit_many([]), "hit_many() needs at least one (key, limit) entry"),
        (lambda lim: lim.hit_many([("k",)]), "hit_many() entry 0 must be (key, limit[, algorithm[, cost]])"),
        (lambda lim: lim.acquire("k", 0, 1), "max_in_flight must be a whole number >= 1, got 0"),
        (lambda lim: lim.acquire("k", 1, -1), "lease ttl must be a positive number of seconds, got -1"),
    ],
)
def test_bad_input_is_named(limiter: Any, call: Any, message: str) -> None:
    with pytest.raises((InvalidArgument, InvalidLimit)) as info:
        call(limiter)
    assert message in str(info.value)
