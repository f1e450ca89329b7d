"""Django's private fields (``_django_internals.py``): read on the supported releases, never needed.

Each check is run on the installed Django, then forced to fail: the responses
and the user keys must come out the same through Django's public interface.
"""

from __future__ import annotations

import logging
from typing import Any

import django
import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.http import HttpResponse
from django.test import AsyncClient, Client, RequestFactory
from django.utils.functional import SimpleLazyObject

from bisman_ratelimit_django import _django_internals
from bisman_ratelimit_django._django_internals import CHECKS, header_store, unevaluated
from bisman_ratelimit_django._guard import _user_async

MINUTE_START = 1_699_999_200.0

ROUTES = """
[defaults]
limits = "2/minute"
algorithm = "fixed_window"

[[routes]]
path = "cbv-get/"
limits = "5/minute"
algorithm = "fixed_window"

[[routes]]
path = "users/<int:id>/"
limits = "1/minute"
algorithm = "fixed_window"
key = "user"
"""


@pytest.fixture
def unchecked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both checks run afresh in this test, and are remembered only for it."""
    monkeypatch.setattr(CHECKS, "headers", None)
    monkeypatch.setattr(CHECKS, "lazy", None)


def test_the_installed_django_has_the_fields_the_plugin_reads(unchecked: None) -> None:
    response = HttpResponse()
    store = header_store(response)
    assert CHECKS.headers is True
    assert store is not None and store is response.headers._store
    lazy = SimpleLazyObject(lambda: "alice")
    assert unevaluated(lazy) is True
    assert CHECKS.lazy is True
    assert lazy.upper() == "ALICE"
    assert unevaluated(lazy) is False
    assert unevaluated("alice") is False and unevaluated(None) is False


def test_a_check_that_fails_says_so_once(
    unchecked: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_django_internals, "_store_holds", lambda: False)
    with caplog.at_level(logging.DEBUG, logger="bisman_ratelimit.django"):
        assert header_store(HttpResponse()) is None
        assert header_store(HttpResponse()) is None
    assert CHECKS.headers is False
    assert [record.getMessage() for record in caplog.records] == [
        f"Django {django.get_version()} has no HttpResponse.headers._store as expected: "
        "response.headers serves instead"
    ]


def _responses(configure: Any, limits_file: Any, clock: Any) -> list[tuple[int, list[tuple[str, str]]]]:
    """The status and headers of responses: quick checks, refusals, a decorator's fields merged."""
    clock.now = MINUTE_START
    configure(CONFIG=limits_file(ROUTES))
    client = Client()
    seen = [client.get("/plain/") for _ in range(3)]
    clock.advance(70)
    # A decorator on get(): its fields and the middleware's go in one list.
    seen += [client.get("/cbv-get/") for _ in range(3)]
    configure.undo()
    clock.now = MINUTE_START
    configure(DEFAULT_LIMITS="1/minute", DEFAULT_ALGORITHM="fixed_window", HEADERS="both")
    # The middleware reads its settings once: a new client makes a new one.
    seen += [Client().get("/plain/") for _ in range(2)]
    configure.undo()
    return [(response.status_code, sorted(response.items())) for response in seen]


def test_headers_are_the_same_without_the_store(
    configure: Any, limits_file: Any, clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = _responses(configure, limits_file, clock)
    assert CHECKS.headers is True
    monkeypatch.setattr(CHECKS, "headers", False)
    assert header_store(HttpResponse()) is None
    assert _responses(configure, limits_file, clock) == fast
    found = [
        (status, dict(fields).get("RateLimit"), dict(fields).get("Retry-After")) for status, fields in fast
    ]
    assert found == [
        (200, '"default";r=1;t=60', None),
        (200, '"default";r=0;t=60', None),
        (429, '"default";r=0;t=60', "60"),
        (200, '"GetLimitedView";r=1;t=50, "cbv-get/";r=4;t=50', None),
        (200, '"GetLimitedView";r=0;t=50, "cbv-get/";r=3;t=50', None),
        (429, '"GetLimitedView";r=0;t=50, "cbv-get/";r=2;t=50', "50"),
        (200, '"default";r=0;t=60', None),
        (429, '"default";r=0;t=60', "60"),
    ]
    assert [dict(fields)["X-RateLimit-Remaining"] for _, fields in fast[6:]] == ["0", "0"]


def _user_request(name: str, *, loaded: bool) -> tuple[Any, list[str]]:
    """A request whose lazy user is ``name``, loaded already or not, and the list of auser() calls."""
    request = RequestFactory().get("/")
    asked: list[str] = []
    request.user = SimpleLazyObject(lambda: User(username=name) if name else AnonymousUser())

    async def auser() -> Any:
        asked.append(name)
        return User(username=name) if name else AnonymousUser()

    request.auser = auser  # type: ignore[attr-defined]
    if loaded:
        assert request.user.is_authenticated is bool(name)
    return request, asked


async def test_a_loaded_lazy_user_is_read_without_auser() -> None:
    request, asked = _user_request("carol", loaded=True)
    assert await _user_async(request) == "carol"
    assert asked == []
    request, asked = _user_request("carol", loaded=False)
    assert await _user_async(request) == "carol"
    assert asked == ["carol"]


async def test_without_the_lazy_field_users_come_from_auser(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(CHECKS, "lazy", False)
    for loaded in (True, False):
        request, asked = _user_request("carol", loaded=loaded)
        assert await _user_async(request) == "carol"
        assert asked == ["carol"]
    request, asked = _user_request("", loaded=True)
    assert await _user_async(request) is None


async def test_without_the_lazy_field_user_limits_count_alike(
    configure: Any, limits_file: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(CHECKS, "lazy", False)
    configure(CONFIG=limits_file(ROUTES))
    client = AsyncClient()
    lazy = {"X-Test-Lazy-User": "1"}
    codes = [
        (await client.get("/users/1/", headers={**lazy, "X-Test-User": name})).status_code
        for name in ("carol", "carol", "dave", "dave")
    ]
    assert codes == [200, 429, 200, 429]
