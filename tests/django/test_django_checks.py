"""System checks: bad settings and limits files are reported at startup, naming file, route and field."""

from __future__ import annotations

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test.utils import override_settings


def messages(**setting: object) -> list[tuple[str, str]]:
    with override_settings(BISMAN_RATELIMIT=setting):
        return [(message.id or "", message.msg) for message in run_checks(tags=["bisman_ratelimit"])]


def test_good_settings_pass(limits_file) -> None:
    path = limits_file(
        '[defaults]\nlimits = "10/minute"\n\n[[routes]]\npath = "users/<int:id>/"\nlimits = "1/second"\n'
    )
    assert messages(CONFIG=path, TRUSTED_PROXIES=["10.0.0.0/8"], STORAGE_URL="redis://127.0.0.1:1/0") == []
    assert messages() == []


def test_bad_fields_are_each_reported() -> None:
    assert messages(DEFAULT_LIMITS="lots", STORAGE_URLS="memory://", HEADERS="all") == [
        (
            "bisman_ratelimit.E001",
            "BISMAN_RATELIMIT['STORAGE_URLS']: unknown field (did you mean 'STORAGE_URL'?); allowed: "
            "ENABLED, STORAGE_URL, CONFIG, DEFAULT_LIMITS, DEFAULT_KEY, DEFAULT_ALGORITHM, GLOBAL_LIMITS, "
            "HEADERS, RESPONSE, USER, API_KEY_HEADER, FAIL_OPEN, ON_OUTAGE, METRICS, LIMITER, ASYNC_LIMITER, "
            "TRUSTED_PROXIES, FORWARDED_HEADER, IPV6_PREFIX, IPV4_PREFIX",
        ),
        (
            "bisman_ratelimit.E001",
            "BISMAN_RATELIMIT['DEFAULT_LIMITS']: invalid rate limit 'lots': expected "
            "'<amount>/<period>' or '<amount> per [<n>] <period>', e.g. '100/minute', '10 per second', "
            "'5 per 30 seconds' or the short '5/m' and '100/5m'; join several with ';'",
        ),
        (
            "bisman_ratelimit.E001",
            "BISMAN_RATELIMIT['HEADERS']: expected one of 'draft', 'legacy', 'both', 'none', got 'all'",
        ),
    ]


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("STORAGE_URL", "mysql://db/0", "unsupported scheme 'mysql://' in 'mysql://db/0'"),
        ("STORAGE_URL", "redis://host:port/0", "bad storage URL 'redis://host:port/0'"),
        ("STORAGE_URL", "localhost", "expected a URL such as 'memory://' or 'redis://host:port/0'"),
        (
            "TRUSTED_PROXIES",
            ["10.0.0.300/8"],
            "trusted_proxies[0]: '10.0.0.300/8' is not an IP address or a CIDR",
        ),
        ("TRUSTED_PROXIES", -1, "trusted_proxies hop count must be >= 0, got -1"),
        ("IPV6_PREFIX", 129, "ipv6_prefix must be a whole number from 0 to 128, got 129"),
        ("FORWARDED_HEADER", "x-real-ip", "header must be 'x-forwarded-for' or 'forwarded', got 'x-real-ip'"),
        ("DEFAULT_KEY", "cookie", "expected one of ip, user, api_key, header:<name>, got 'cookie'"),
        ("DEFAULT_ALGORITHM", "leaky", "unknown algorithm 'leaky'"),
        ("RESPONSE", "no.such.module.view", "cannot import 'no.such.module.view'"),
        ("LIMITER", "memory://", "expected a bisman_ratelimit.Limiter, got 'memory://'"),
        ("CONFIG", 42, "expected the path of a .toml or .yaml file, got 42"),
        ("FAIL_OPEN", "no", "expected True or False, got 'no'"),
        (
            "ON_OUTAGE",
            "shed",
            "expected 'open', 'closed', 'fallback' or a bisman_ratelimit.core.OutagePolicy",
        ),
        (
            "METRICS",
            "prometheus",
            "expected a bisman_ratelimit.metrics._prometheus.RateLimitMetrics, got 'prometheus'",
        ),
    ],
)
def test_each_bad_setting_names_its_field(field: str, value: object, problem: str) -> None:
    found = messages(**{field: value})
    assert len(found) == 1
    check_id, text = found[0]
    assert check_id == "bisman_ratelimit.E001"
    assert text.startswith(f"BISMAN_RATELIMIT[{field!r}]: ")
    assert problem in text


def test_config_file_and_settings_limits_conflict(limits_file) -> None:
    path = limits_file('[defaults]\nlimits = "10/minute"\n')
    assert messages(CONFIG=path, DEFAULT_LIMITS="5/minute") == [
        (
            "bisman_ratelimit.E001",
            "BISMAN_RATELIMIT['DEFAULT_LIMITS']: CONFIG is set too: "
            "the config file's [defaults] and [global] sections say this",
        )
    ]


def test_bad_limits_file_names_file_route_and_field(limits_file) -> None:
    path = limits_file(
        '[[routes]]\npath = "users/<int:id>/"\nlimits = "1/minute"\n\n'
        '[[routes]]\npath = "auth/login/"\nmethods = ["POST"]\nlimits = "five per minute"\n'
    )
    [(check_id, text)] = messages(CONFIG=path)
    assert check_id == "bisman_ratelimit.E002"
    assert text.startswith(
        f"BISMAN_RATELIMIT['CONFIG']: {path}: routes[1] (POST auth/login/): field 'limits': "
    )
    assert "invalid rate limit 'five per minute'" in text


def test_missing_limits_file(tmp_path) -> None:
    path = str(tmp_path / "absent.toml")
    assert messages(CONFIG=path) == [
        ("bisman_ratelimit.E002", f"BISMAN_RATELIMIT['CONFIG']: {path}: file not found")
    ]


def test_route_that_matches_no_url_pattern_is_a_warning(limits_file) -> None:
    path = limits_file(
        '[[routes]]\npath = "/chat/threads/{thread_id}/messages"\nlimits = "1/minute"\n\n'
        '[[routes]]\npath = "api/items/<int:item_id>/"\nlimits = "1/minute"\n\n'
        '[[routes]]\npath = "^articles/(?P<year>[0-9]{4})/$"\nlimits = "1/minute"\n\n'
        '[[routes]]\npath = "/users/{user_id}"\nlimits = "1/minute"\n'
    )
    assert messages(CONFIG=path) == [
        (
            "bisman_ratelimit.W001",
            f"{path}: routes[3] (/users/{{user_id}}): field 'path': matches no URL pattern, "
            "so this entry never applies",
        )
    ]


def test_limits_without_the_middleware_are_a_warning() -> None:
    with override_settings(MIDDLEWARE=[]):
        found = messages(DEFAULT_LIMITS="5/minute")
    assert found == [
        (
            "bisman_ratelimit.W002",
            "BISMAN_RATELIMIT sets limits, but bisman_ratelimit_django.middleware.RateLimitMiddleware "
            "is not in MIDDLEWARE: only @ratelimit views are limited.",
        ),
        # The test project's @ratelimit(key="user") views, with nothing left to set request.user.
        (
            "bisman_ratelimit.W003",
            "limits keyed or exempted by user (per-user/, stacked/) need request.user, but no "
            "AuthenticationMiddleware is in MIDDLEWARE: requests they apply to will fail with 500.",
        ),
    ]


def test_manage_py_check_stops_on_errors(limits_file) -> None:
    path = limits_file('[defaults]\nlimits = "10/minute"\nkey = "cookie"\n')
    with override_settings(BISMAN_RATELIMIT={"CONFIG": path}), pytest.raises(SystemCheckError) as caught:
        call_command("check")
    assert f"{path}: defaults: field 'key': unknown key 'cookie'" in str(caught.value)


def test_fail_open_and_on_outage_are_one_choice() -> None:
    assert messages(FAIL_OPEN=False, ON_OUTAGE="open") == [
        (
            "bisman_ratelimit.E001",
            "BISMAN_RATELIMIT['FAIL_OPEN']: ON_OUTAGE is set too: give one ('open' is FAIL_OPEN=True)",
        )
    ]
