"""bisman_ratelimit.W003: limits by user with nothing to set request.user, reported at startup."""

from __future__ import annotations

import io

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.test.utils import override_settings

OURS = "bisman_ratelimit_django.middleware.RateLimitMiddleware"
AUTH = "django.contrib.auth.middleware.AuthenticationMiddleware"
TEST_USER = "django_project.middleware.HeaderUserMiddleware"  # a subclass of AuthenticationMiddleware


def w003(middleware: list[str], **setting: object) -> list[str]:
    with override_settings(MIDDLEWARE=middleware, BISMAN_RATELIMIT=setting):
        found = run_checks(tags=["bisman_ratelimit"])
    return [message.msg for message in found if message.id == "bisman_ratelimit.W003"]


def test_user_limits_without_authentication_are_reported() -> None:
    assert w003([OURS], DEFAULT_LIMITS="5/minute", DEFAULT_KEY="user") == [
        "limits keyed or exempted by user (default, per-user/, stacked/) need request.user, but no "
        f"AuthenticationMiddleware comes before {OURS} in MIDDLEWARE: requests they apply to will fail "
        "with 500."
    ]
    # After it is too late: the check runs before it.
    assert len(w003([OURS, AUTH], DEFAULT_LIMITS="5/minute", DEFAULT_KEY="user")) == 1


@pytest.mark.parametrize(
    ("middleware", "setting"),
    [
        ([AUTH, OURS], {"DEFAULT_LIMITS": "5/minute", "DEFAULT_KEY": "user"}),
        ([TEST_USER, OURS], {"DEFAULT_LIMITS": "5/minute", "DEFAULT_KEY": "user"}),
        ([OURS], {"DEFAULT_LIMITS": "5/minute", "DEFAULT_KEY": "user", "USER": lambda request: None}),
    ],
    ids=["authentication", "a subclass of it", "a USER function"],
)
def test_silent_when_requests_have_a_user(middleware: list[str], setting: dict[str, object]) -> None:
    assert w003(middleware, **setting) == []


def test_named_by_manage_py_check_with_its_fix() -> None:
    out, err = io.StringIO(), io.StringIO()
    with override_settings(
        MIDDLEWARE=[OURS], BISMAN_RATELIMIT={"DEFAULT_LIMITS": "5/minute", "DEFAULT_KEY": "user"}
    ):
        call_command("check", stdout=out, stderr=err)
    text = out.getvalue() + err.getvalue()
    assert "(bisman_ratelimit.W003) limits keyed or exempted by user (default, per-user/, stacked/)" in text
    assert f"HINT: Put '{AUTH}' in MIDDLEWARE (before '{OURS}')" in text
