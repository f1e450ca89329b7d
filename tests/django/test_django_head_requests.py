"""A HEAD request runs the GET view: the limits written for GET count it, in the limits file and
in ``@ratelimit(methods=[...])``, with the middleware and without it."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.test import AsyncClient, Client
from django.urls import path

from bisman_ratelimit_django import ratelimit

RUNS: list[str] = []

GET_ONLY = """
[[routes]]
path = "report/"
methods = ["GET"]
limits = "2/minute"
algorithm = "fixed_window"
"""


def report(request: HttpRequest) -> HttpResponse:
    RUNS.append("report")
    return HttpResponse("expensive report")


@ratelimit("2/minute", methods=["GET"], algorithm="fixed_window")
def decorated(request: HttpRequest) -> HttpResponse:
    RUNS.append("decorated")
    return HttpResponse("expensive report")


@ratelimit("2/minute", methods=["GET"], algorithm="fixed_window")
async def decorated_async(request: HttpRequest) -> HttpResponse:
    RUNS.append("decorated_async")
    return HttpResponse("expensive report")


urlpatterns = [
    path("report/", report),
    path("decorated/", decorated),
    path("decorated-async/", decorated_async),
]


def test_head_counts_against_the_get_entry_of_the_file(configure: Any, limits_file: Any) -> None:
    configure.override(ROOT_URLCONF=__name__)
    configure(CONFIG=limits_file(GET_ONLY))
    RUNS.clear()
    client = Client()
    first = client.head("/report/")
    assert first.status_code == 200
    assert first["RateLimit-Policy"] == '"report/";q=2;w=60'
    assert first["RateLimit"] == '"report/";r=1;t=60'
    assert client.get("/report/")["RateLimit"] == '"report/";r=0;t=60'
    assert [client.head("/report/").status_code for _ in range(3)] == [429, 429, 429]
    assert client.get("/report/").status_code == 429
    assert RUNS == ["report", "report"]
    # Other methods are not GET: a function view without require_GET answers them unlimited.
    options = client.options("/report/")
    assert options.status_code == 200
    assert "RateLimit" not in options


async def test_head_counts_against_the_get_entry_under_asgi(configure: Any, limits_file: Any) -> None:
    configure.override(ROOT_URLCONF=__name__)
    configure(CONFIG=limits_file(GET_ONLY))
    RUNS.clear()
    client = AsyncClient()
    answers = [await client.head("/report/") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert (await client.get("/report/")).status_code == 429
    assert RUNS == ["report", "report"]


def test_head_counts_against_a_decorator_written_for_get(configure: Any) -> None:
    configure.override(ROOT_URLCONF=__name__)
    configure()
    RUNS.clear()
    client = Client()
    answers = [client.head("/decorated/") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[0]["RateLimit"] == '"decorated";r=1;t=60'
    assert client.get("/decorated/").status_code == 429
    assert RUNS == ["decorated", "decorated"]


async def test_head_counts_against_a_decorator_written_for_get_without_the_middleware(
    configure: Any,
) -> None:
    configure.override(ROOT_URLCONF=__name__, MIDDLEWARE=[])
    configure()
    RUNS.clear()
    client = AsyncClient()
    answers = [await client.head("/decorated-async/") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[1]["RateLimit"] == '"decorated_async";r=0;t=60'
    assert (await client.get("/decorated-async/")).status_code == 429
    sync = Client()
    assert [sync.head("/decorated/").status_code for _ in range(3)] == [200, 200, 429]
    assert RUNS == ["decorated_async", "decorated_async", "decorated", "decorated"]
