"""The on/off switch of the Django plugin: ``BISMAN_RATELIMIT["ENABLED"]``, ``BISMAN_RATELIMIT_ENABLED``
and django-ratelimit's ``RATELIMIT_ENABLE``.

Switched off, nothing is checked, no header is added and the storage is
never asked: a real server's command count does not move.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from django.test import Client

from bisman_ratelimit.core import ConfigurationError
from bisman_ratelimit_django._conf import get_settings
from bisman_ratelimit_django._runtime import get_runtime

pytestmark = pytest.mark.redis

COMPAT_MIDDLEWARE = [
    "compat_app.UserFromHeader",
    "bisman_ratelimit_django.middleware.RateLimitMiddleware",
]


def commands(client: redis.Redis) -> int:
    """The server's count of commands processed (those scripts run included), this INFO not included."""
    return int(client.info("stats")["total_commands_processed"])


def scripts(client: redis.Redis) -> int:
    """The script calls the server has run (the commands they run inside are counted apart)."""
    stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval"))


def traffic(client: redis.Redis, paths: list[str], **extra: Any) -> tuple[list[Any], int]:
    """The responses to ``paths`` and the commands they sent (the INFO between excluded)."""
    before = commands(client)
    http = Client()
    responses = [http.get(path, **extra) for path in paths]
    return responses, commands(client) - before - 1


def test_on_the_plugin_talks_to_redis(configure: Any, redis_url: str, redis_client: redis.Redis) -> None:
    configure(STORAGE_URL=redis_url, DEFAULT_LIMITS="2/minute")
    try:
        responses, sent = traffic(redis_client, ["/plain/", "/limited/", "/plain/", "/plain/"])
        assert [r.status_code for r in responses] == [200, 200, 200, 429]
        assert responses[0]["RateLimit-Policy"] == '"default";q=2;w=60'
        assert sent >= 4
    finally:
        get_runtime().close()


@pytest.mark.parametrize("switch", [False, "off", "0", "no", "false"])
def test_enabled_false_turns_off_checks_headers_and_traffic(
    configure: Any, redis_url: str, redis_client: redis.Redis, switch: object
) -> None:
    configure(STORAGE_URL=redis_url, DEFAULT_LIMITS="2/minute", ENABLED=switch)
    try:
        paths = ["/plain/", "/async/", "/limited/", "/post-only/", "/stacked/", "/cbv/"] * 3
        responses, sent = traffic(redis_client, paths)
        assert [r.status_code for r in responses] == [200] * len(paths)
        assert [name for r in responses for name in r.headers if "ratelimit" in name.lower()] == []
        assert all("Retry-After" not in r.headers for r in responses)
        assert sent == 0
    finally:
        get_runtime().close()


def test_block_false_views_find_nothing_limited_when_off(configure: Any, redis_url: str) -> None:
    configure(STORAGE_URL=redis_url, ENABLED=False)
    client = Client()
    reports = [json.loads(client.get("/annotated/").content) for _ in range(4)]
    assert reports == [{"limited": False, "over": []}] * 4


def test_the_environment_variable_switches_it_off(
    configure: Any, redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BISMAN_RATELIMIT_ENABLED", "0")
    configure(STORAGE_URL=redis_url, DEFAULT_LIMITS="2/minute")
    try:
        responses, sent = traffic(redis_client, ["/plain/", "/limited/"] * 3)
        assert [r.status_code for r in responses] == [200] * 6
        assert sent == 0
    finally:
        get_runtime().close()


def test_the_setting_wins_over_the_environment(
    configure: Any, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BISMAN_RATELIMIT_ENABLED", "0")
    configure(STORAGE_URL=redis_url, DEFAULT_LIMITS="2/minute", ENABLED=True)
    try:
        assert [Client().get("/plain/").status_code for _ in range(3)] == [200, 200, 429]
    finally:
        get_runtime().close()


def test_the_environment_gives_the_storage_url(
    configure: Any, redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BISMAN_RATELIMIT_STORAGE_URL", redis_url)
    configure.override(BISMAN_RATELIMIT={"DEFAULT_LIMITS": "2/minute"})
    try:
        responses, sent = traffic(redis_client, ["/plain/"] * 3)
        assert [r.status_code for r in responses] == [200, 200, 429]
        assert sent >= 3
    finally:
        get_runtime().close()


def test_bad_switch_values_are_named(configure: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    configure(ENABLED="maybe")
    with pytest.raises(
        ConfigurationError,
        match=r"BISMAN_RATELIMIT\['ENABLED'\]: a string value must be one of 1, true, yes, on, 0, false, "
        r"no, off; got 'maybe'",
    ):
        get_settings()
    configure(ENABLED=2)
    with pytest.raises(
        ConfigurationError,
        match=r"BISMAN_RATELIMIT\['ENABLED'\]: expected True, False or a string such as 'off', got 2",
    ):
        get_settings()
    configure()
    monkeypatch.setenv("BISMAN_RATELIMIT_ENABLED", "later")
    with pytest.raises(
        ConfigurationError,
        match=r"the environment variable BISMAN_RATELIMIT_ENABLED must be one of .*; got 'later'",
    ):
        get_settings()


# -- the compatibility module


OFF = [{"RATELIMIT_ENABLE": False}, {"BISMAN_RATELIMIT": {"ENABLED": False}}]


@pytest.mark.parametrize("off", OFF, ids=["ratelimit", "bisman"])
def test_compat_switched_off_passes_everything_without_traffic(
    configure: Any, redis_url: str, redis_client: redis.Redis, off: dict[str, Any]
) -> None:
    configure(STORAGE_URL=redis_url)
    configure.override(ROOT_URLCONF="compat_app", MIDDLEWARE=COMPAT_MIDDLEWARE)
    configure.override(**off)
    if "BISMAN_RATELIMIT" in off:
        configure(STORAGE_URL=redis_url, **off["BISMAN_RATELIMIT"])
    try:
        # With the plugin on, its middleware opens its connections at the first request.
        assert Client().get("/post/").status_code == 200
        responses, sent = traffic(redis_client, ["/block/", "/login-tenant/", "/async/", "/closed/"] * 3)
        assert [r.status_code for r in responses] == [200] * 12
        annotated, sent_too = traffic(redis_client, ["/annotate/"] * 7)
        assert [json.loads(r.content)["limited"] for r in annotated] == [False] * 7
        assert sent == sent_too == 0
    finally:
        get_runtime().close()


def test_compat_counts_stacked_limits_in_one_round_trip(
    configure: Any, redis_url: str, redis_client: redis.Redis
) -> None:
    configure(STORAGE_URL=redis_url)
    configure.override(ROOT_URLCONF="compat_app", MIDDLEWARE=COMPAT_MIDDLEWARE)
    try:
        http = Client()
        # The first request loads the script.
        assert http.post("/login-tenant/", {"username": "a", "tenant": "t"}).status_code == 200
        before = scripts(redis_client)
        codes = [http.post("/login-tenant/", {"username": "a", "tenant": "t"}).status_code for _ in range(4)]
        assert codes == [200] * 4
        # Two limits, four requests: one script call each.
        assert scripts(redis_client) - before == 4
    finally:
        get_runtime().close()
