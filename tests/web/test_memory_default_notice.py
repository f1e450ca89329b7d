"""A plugin counting in this process's memory because no storage was named says so, once.

Under several worker processes each counts on its own; an operator who never
named a storage learns it from the log at start-up, not from a limit that
lets four times the traffic through.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from flask import Flask
from starlette.applications import Starlette

from bisman_ratelimit import AsyncLimiter
from bisman_ratelimit.web import STORAGE_URL_ENV, _environment
from bisman_ratelimit_flask import Limiter as FlaskLimiter
from bisman_ratelimit_flask.util import get_remote_address
from bisman_ratelimit_starlette import RateLimitMiddleware

NOTICE = (
    "no rate-limit storage is configured: limits are counted in this process's memory, so each worker "
    "process counts on its own (under 4 workers a client gets up to 4 times its limit); "
    f"set {STORAGE_URL_ENV} to a Redis URL (redis://host:port/0) to count them together"
)


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    monkeypatch.setattr(_environment, "_memory_noted", False)
    monkeypatch.delenv(STORAGE_URL_ENV, raising=False)
    caplog.set_level(logging.WARNING, "bisman_ratelimit")
    yield


def notices(caplog: pytest.LogCaptureFixture) -> list[tuple[str, int, str]]:
    return [
        (r.name, r.levelno, r.getMessage())
        for r in caplog.records
        if "storage is configured" in r.getMessage()
    ]


def test_starlette_without_a_limiter_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    RateLimitMiddleware(Starlette(), default_limits="10/minute")
    RateLimitMiddleware(Starlette(), default_limits="10/minute")
    assert notices(caplog) == [("bisman_ratelimit.starlette", logging.WARNING, NOTICE)]


def test_starlette_with_a_limiter_given_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    RateLimitMiddleware(Starlette(), default_limits="10/minute", limiter=AsyncLimiter())
    assert notices(caplog) == []


@pytest.mark.parametrize("named", [None, "memory://"])
def test_flask_says_so_unless_a_storage_is_named(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, named: str | None
) -> None:
    app = Flask(__name__)
    if named is not None:
        monkeypatch.setenv(STORAGE_URL_ENV, named)
    FlaskLimiter(get_remote_address, app=app, default_limits=["10/minute"])
    expected = [("bisman_ratelimit.flask", logging.WARNING, NOTICE)] if named is None else []
    assert notices(caplog) == expected


@pytest.mark.parametrize("named", [None, "memory://"])
def test_django_says_so_unless_a_storage_is_named(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, named: str | None
) -> None:
    import os

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_project.settings")
    django.setup()
    from django.test.utils import override_settings

    from bisman_ratelimit_django._conf import get_settings
    from bisman_ratelimit_django._runtime import Runtime

    setting = {"DEFAULT_LIMITS": "10/minute"} if named is None else {"STORAGE_URL": named}
    with override_settings(BISMAN_RATELIMIT=setting):
        Runtime(get_settings())
    expected = [("bisman_ratelimit.django", logging.WARNING, NOTICE)] if named is None else []
    assert notices(caplog) == expected
