"""Header values (draft-ietf-httpapi-ratelimit-headers-11) and problem bodies (RFC 9457)."""

from __future__ import annotations

import json

import pytest

from bisman_ratelimit import Decision, InvalidArgument, Limit, Limiter
from bisman_ratelimit.backends import MemoryStorage
from bisman_ratelimit.web._headers import (
    legacy_headers,
    policy_item,
    ratelimit_item,
    ratelimit_value,
    retry_after,
    seconds,
    sf_string,
)
from bisman_ratelimit.web._problem import (
    CONTENT_TYPE,
    QUOTA_EXCEEDED,
    TEMPORARY_REDUCED_CAPACITY,
    service_unavailable,
    too_many_requests,
)


def decision(allowed: bool, remaining: int, reset: float, retry: float, limit: int = 10) -> Decision:
    return Decision(allowed, limit, remaining, reset, retry, "k", "sliding_window")


def test_sf_string_quotes_and_escapes() -> None:
    assert sf_string("default") == '"default"'
    assert sf_string('a"b\\c') == '"a\\"b\\\\c"'
    assert sf_string("/users/{id}") == '"/users/{id}"'


@pytest.mark.parametrize("bad", ["caf\u00e9", "tab\there", "new\nline"])
def test_sf_string_refuses_what_a_header_cannot_carry(bad: str) -> None:
    with pytest.raises(InvalidArgument, match="policy name must be printable ASCII text"):
        sf_string(bad)


def test_policy_item_has_quota_and_window_in_whole_seconds() -> None:
    assert policy_item("default", Limit(100, 60)) == '"default";q=100;w=60'
    assert policy_item("day", Limit.parse("1000/day")) == '"day";q=1000;w=86400'
    # Sub-second windows cannot be expressed: the draft wants a non-zero integer.
    assert policy_item("fast", Limit(5, 0.25)) == '"fast";q=5;w=1'
    assert policy_item("odd", Limit(5, 1.5)) == '"odd";q=5;w=2'


def test_seconds_round_up_but_ignore_float_noise() -> None:
    assert seconds(30.0) == 30
    assert seconds(29.000001) == 30
    assert seconds(30.0000000001) == 30
    assert seconds(29.9999999999) == 30
    assert seconds(0.1 * 3 * 10) == 3  # 3.0000000000000004
    assert seconds(1e-7) == 0
    assert seconds(1e-6) == 1
    assert seconds(0.0) == 0
    assert seconds(-1.0) == 0


def test_ratelimit_item_allowed_and_denied() -> None:
    assert ratelimit_item('"default"', decision(True, 50, 29.2, 0.0)) == '"default";r=50;t=30'
    # Denied: t is the time until the same request passes, equal to Retry-After.
    assert ratelimit_item('"default"', decision(False, 0, 60.0, 12.4)) == '"default";r=0;t=13'


def test_retry_after_is_rounded_up_and_at_least_one() -> None:
    assert retry_after(decision(False, 0, 60.0, 12.000001)) == 13
    assert retry_after(decision(False, 0, 60.0, 12.0)) == 12
    assert retry_after(decision(False, 0, 60.0, 0.0004)) == 1


def test_ratelimit_value_pairs_names_with_decisions() -> None:
    value = ratelimit_value(
        ['"burst"', '"daily"'], [decision(True, 4, 1.0, 0.0), decision(True, 990, 86399.5, 0.0)]
    )
    assert value == '"burst";r=4;t=1, "daily";r=990;t=86400'
    with pytest.raises(InvalidArgument, match="1 policy names for 2 decisions"):
        ratelimit_value(['"a"'], [decision(True, 1, 1, 0), decision(True, 1, 1, 0)])


def test_legacy_headers() -> None:
    assert legacy_headers(decision(True, 7, 59.5, 0.0, limit=10)) == [
        ("X-RateLimit-Limit", "10"),
        ("X-RateLimit-Remaining", "7"),
        ("X-RateLimit-Reset", "60"),
    ]
    assert legacy_headers(decision(False, 0, 60.0, 5.5, limit=10)) == [
        ("X-RateLimit-Limit", "10"),
        ("X-RateLimit-Remaining", "0"),
        ("X-RateLimit-Reset", "6"),
    ]


def test_values_from_real_decisions_on_a_manual_clock() -> None:
    now = [1_700_000_000.0]
    limiter = Limiter(MemoryStorage(clock=lambda: now[0]))
    limit = Limit(3, 60)
    for expected_left in (2, 1, 0):
        d = limiter.hit("c", limit, "fixed_window")
        assert d.remaining == expected_left
    now[0] += 20
    denied = limiter.hit("c", limit, "fixed_window")
    assert not denied.allowed
    # 1_700_000_000 is 20 s into a minute; 20 s later, 20 s of the window are left.
    assert retry_after(denied) == 20
    assert ratelimit_item('"default"', denied) == '"default";r=0;t=20'


def test_problem_429_body() -> None:
    problem = too_many_requests(["login"], 13, instance="/auth/login")
    assert problem.status == 429
    assert json.loads(problem.body()) == {
        "type": QUOTA_EXCEEDED,
        "title": "Too Many Requests",
        "status": 429,
        "detail": "Rate limit exceeded; retry in 13 seconds.",
        "instance": "/auth/login",
        "violated-policies": ["login"],
    }
    assert CONTENT_TYPE == "application/problem+json"


def test_problem_503_body() -> None:
    problem = service_unavailable(1)
    assert json.loads(problem.body()) == {
        "type": TEMPORARY_REDUCED_CAPACITY,
        "title": "Service Unavailable",
        "status": 503,
        "detail": "The server is over its request capacity; retry in 1 second.",
    }
