from __future__ import annotations

import warnings

import pytest

from bisman_ratelimit.core import InvalidArgument
from bisman_ratelimit.web import (
    ENABLED_ENV,
    STORAGE_URL_ENV,
    EnvironmentWarning,
    enabled_from_env,
    storage_url_from_env,
)


def test_the_storage_url_comes_from_its_one_name() -> None:
    assert STORAGE_URL_ENV == "BISMAN_RATELIMIT_STORAGE_URL"
    assert storage_url_from_env("memory://", environ={STORAGE_URL_ENV: "redis://h:1/0"}) == "redis://h:1/0"
    assert storage_url_from_env("memory://", environ={}) == "memory://"
    assert storage_url_from_env(None, environ={STORAGE_URL_ENV: "  "}) is None


@pytest.mark.parametrize("miss", ["BISMAN_RATELIMIT_STORAGE", "BISMAN_RATELIMIT_URL", "BISMAN_REDIS_URL"])
def test_a_near_miss_storage_name_warns_with_the_right_name(miss: str) -> None:
    with pytest.warns(EnvironmentWarning) as caught:
        url = storage_url_from_env("memory://", environ={miss: "redis://h:1/0"})
    assert url == "memory://"
    assert str(caught[0].message) == (
        f"the environment variable {miss} is not read; did you mean BISMAN_RATELIMIT_STORAGE_URL?"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", True),
        ("true", True),
        ("ON", True),
        (" yes ", True),
        ("0", False),
        ("False", False),
        ("off", False),
        ("no", False),
        ("", True),
    ],
)
def test_the_switch_reads_the_usual_spellings(value: str, expected: bool) -> None:
    assert enabled_from_env(environ={ENABLED_ENV: value}) is expected


def test_an_explicit_switch_wins_over_the_environment() -> None:
    assert enabled_from_env(False, environ={ENABLED_ENV: "1"}) is False
    assert enabled_from_env(True, environ={ENABLED_ENV: "0"}) is True
    assert enabled_from_env(environ={}) is True


def test_an_unreadable_switch_is_an_error_that_names_the_variable() -> None:
    with pytest.raises(InvalidArgument) as caught:
        enabled_from_env(environ={ENABLED_ENV: "maybe"})
    assert str(caught.value) == (
        "the environment variable BISMAN_RATELIMIT_ENABLED must be one of "
        "1, true, yes, on, 0, false, no, off; got 'maybe'"
    )


def test_a_near_miss_switch_name_warns() -> None:
    with pytest.warns(EnvironmentWarning, match="did you mean BISMAN_RATELIMIT_ENABLED"):
        assert enabled_from_env(environ={"BISMAN_RATELIMIT_ENABLE": "0"}) is True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert enabled_from_env(environ={ENABLED_ENV: "0"}) is False
