"""django-ratelimit's short rate notation is an alias of the long one."""

from __future__ import annotations

import pytest

from bisman_ratelimit import InvalidLimit, Limit, parse_limits


@pytest.mark.parametrize(
    ("short", "long"),
    [
        ("5/m", "5/minute"),
        ("100/h", "100/hour"),
        ("1000/d", "1000/day"),
        ("10/s", "10/second"),
        ("100/5m", "100 per 5 minutes"),
        ("100/300s", "100 per 300 seconds"),
        ("5/M", "5/minute"),
        ("10/s; 100/m", "10/second; 100/minute"),
    ],
)
def test_the_short_form_means_the_long_one(short: str, long: str) -> None:
    assert parse_limits(short) == parse_limits(long)


def test_the_short_form_gives_whole_periods() -> None:
    assert parse_limits("100/5m") == (Limit(100, 300),)
    assert Limit.parse("10/s") == Limit(10, 1)


@pytest.mark.parametrize("text", ["5/ms", "5/mx", "5/w", "5m"])
def test_unknown_short_units_are_refused(text: str) -> None:
    with pytest.raises(InvalidLimit, match=rf"invalid rate limit '{text}': expected .* the short '5/m'"):
        parse_limits(text)


def test_a_short_zero_period_is_refused() -> None:
    with pytest.raises(InvalidLimit, match=r"invalid rate limit '1/0m': a period of 0 is no period"):
        parse_limits("1/0m")
