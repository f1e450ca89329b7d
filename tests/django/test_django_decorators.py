"""@ratelimit on sync, async and class-based views, with and without the middleware."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import AsyncClient, Client

from bisman_ratelimit import InvalidArgument, InvalidLimit
from bisman_ratelimit_django import ratelimit

ONLY_USERS = ["django_project.middleware.HeaderUserMiddleware"]


@pytest.fixture(params=["middleware", "standalone"])
def mode(request: pytest.FixtureRequest, configure: Any) -> str:
    """Each test runs with RateLimitMiddleware installed, and with the decorator on its own."""
    if request.param == "standalone":
        configure.override(MIDDLEWARE=ONLY_USERS)
    return str(request.param)


def codes(client: Client, path: str, count: int, method: str = "get", **extra: object) -> list[int]:
    call = getattr(client, method)
    return [call(path, **extra).status_code for _ in range(count)]


def test_sync_view(configure, mode: str, clock) -> None:
    configure()
    client = Client()
    first = client.get("/limited/")
    assert first["RateLimit-Policy"] == '"limited";q=3;w=60'
    assert first["RateLimit"] == '"limited";r=2;t=60'
    assert codes(client, "/limited/", 3) == [200, 200, 429]
    clock.advance(10)
    refused = client.get("/limited/")
    assert refused.status_code == 429
    assert refused["Retry-After"] == "50"
    body = json.loads(refused.content)
    assert (body["status"], body["violated-policies"]) == (429, ["limited"])
    clock.advance(50)
    assert client.get("/limited/").status_code == 200


async def test_async_view(configure, mode: str) -> None:
    configure()
    client = AsyncClient()
    first = await client.get("/limited-async/")
    assert first["RateLimit-Policy"] == '"limited_async";q=3;w=60'
    assert first["RateLimit"] == '"limited_async";r=2;t=60'
    got = [(await client.get("/limited-async/")).status_code for _ in range(3)]
    assert got == [200, 200, 429]
    refused = await client.get("/limited-async/")
    assert refused["Retry-After"] == "60"
    assert refused["RateLimit"] == '"limited_async";r=0;t=60'


def test_async_view_under_wsgi(configure, mode: str) -> None:
    configure()
    assert codes(Client(), "/limited-async/", 4) == [200, 200, 200, 429]


def test_middleware_counts_declared_limits_once_instead_of_the_defaults(configure) -> None:
    configure(DEFAULT_LIMITS="100/minute", DEFAULT_ALGORITHM="fixed_window")
    client = Client()
    response = client.get("/limited/")
    # One hit per request: counted twice, 3/minute would refuse the second request.
    assert response["RateLimit-Policy"] == '"limited";q=3;w=60'
    assert response["RateLimit"] == '"limited";r=2;t=60'
    assert codes(client, "/limited/", 3) == [200, 200, 429]
    assert client.get("/plain/")["RateLimit"] == '"default";r=99;t=60'


def test_block_false_annotates_the_request(configure, mode: str) -> None:
    configure()
    client = Client()
    bodies = [client.get("/annotated/") for _ in range(3)]
    assert [r.status_code for r in bodies] == [200, 200, 200]
    assert [json.loads(r.content) for r in bodies] == [
        {"limited": False, "over": []},
        {"limited": False, "over": []},
        {"limited": True, "over": ["annotated"]},
    ]
    assert bodies[2]["RateLimit"] == '"annotated";r=0;t=60'
    assert "Retry-After" not in bodies[2]


async def test_block_false_on_async_view(configure, mode: str) -> None:
    configure()
    client = AsyncClient()
    bodies = [json.loads((await client.get("/annotated-async/")).content) for _ in range(3)]
    assert [body["limited"] for body in bodies] == [False, False, True]


def test_methods(configure, mode: str) -> None:
    configure()
    client = Client()
    assert codes(client, "/post-only/", 4) == [200] * 4
    assert "RateLimit" not in client.get("/post-only/")
    assert codes(client, "/post-only/", 3, method="post") == [200, 200, 429]
    assert client.get("/post-only/").status_code == 200


def test_group_shares_counters_between_views(configure, mode: str) -> None:
    configure()
    client = Client()
    got = [client.get(path).status_code for path in ("/shared/a/", "/shared/b/", "/shared/a/", "/shared/b/")]
    assert got == [200, 200, 200, 429]
    assert client.get("/shared/a/")["RateLimit-Policy"] == '"shared";q=3;w=60'


def test_key_function(configure, mode: str) -> None:
    configure()
    client = Client()
    assert codes(client, "/tenant/?tenant=acme", 3) == [200, 200, 429]
    assert codes(client, "/tenant/?tenant=globex", 1) == [200]
    # None counts the client by address.
    assert codes(client, "/tenant/", 3) == [200, 200, 429]
    assert codes(client, "/tenant/", 1, REMOTE_ADDR="192.0.2.1") == [200]


async def test_async_key_function(configure, mode: str) -> None:
    configure()
    client = AsyncClient()
    got = [(await client.get("/tenant-async/", {"tenant": "acme"})).status_code for _ in range(3)]
    assert got == [200, 200, 429]
    assert (await client.get("/tenant-async/", {"tenant": "globex"})).status_code == 200


def test_async_key_function_under_wsgi(configure, mode: str) -> None:
    configure()
    client = Client()
    assert codes(client, "/tenant-async/?tenant=acme", 3) == [200, 200, 429]
    assert codes(client, "/tenant-async/?tenant=globex", 1) == [200]


def test_cost_function(configure, mode: str) -> None:
    configure()
    client = Client()
    assert client.get("/weighted/?n=4")["RateLimit"] == '"weighted";r=6;t=60'
    assert client.get("/weighted/?n=4").status_code == 200
    assert client.get("/weighted/?n=4").status_code == 429
    assert client.get("/weighted/?n=2")["RateLimit"] == '"weighted";r=0;t=60'


def test_user_key(configure, mode: str) -> None:
    configure()
    client = Client()
    assert codes(client, "/per-user/", 3, headers={"X-Test-User": "alice"}) == [200, 200, 429]
    assert codes(client, "/per-user/", 1, headers={"X-Test-User": "bob"}) == [200]


def test_stacked_decorators(configure, mode: str) -> None:
    configure()
    client = Client()
    alice = {"headers": {"X-Test-User": "alice"}}
    assert codes(client, "/stacked/", 2, method="post", **alice) == [200, 200]
    refused = client.post("/stacked/", **alice)
    assert refused.status_code == 429
    assert json.loads(refused.content)["violated-policies"] == ["stacked"]
    # GET is limited only by the per-address 5/minute, which the two POSTs used part of.
    assert codes(client, "/stacked/", 4) == [200, 200, 200, 429]


def test_class_based_view_dispatch(configure, mode: str) -> None:
    configure()
    client = Client()
    got = [client.get("/cbv/").status_code, client.post("/cbv/").status_code, client.get("/cbv/").status_code]
    assert got == [200, 200, 429]
    assert client.post("/cbv/")["RateLimit-Policy"] == '"LimitedView";q=2;w=60'


def test_class_based_view_one_method(configure, mode: str) -> None:
    configure()
    client = Client()
    assert codes(client, "/cbv-get/", 3) == [200, 200, 429]
    assert codes(client, "/cbv-get/", 3, method="post") == [200, 200, 200]


def test_class_based_view_one_method_with_defaults(configure) -> None:
    configure(DEFAULT_LIMITS="100/minute", DEFAULT_ALGORITHM="fixed_window")
    response = Client().get("/cbv-get/")
    # The middleware cannot see a decorator on get(): both policies count, in one list.
    assert response["RateLimit-Policy"] == '"GetLimitedView";q=2;w=60, "default";q=100;w=60'
    assert response["RateLimit"] == '"GetLimitedView";r=1;t=60, "default";r=99;t=60'


async def test_async_class_based_view(configure, mode: str) -> None:
    configure()
    client = AsyncClient()
    got = [(await client.get("/cbv-async/")).status_code for _ in range(3)]
    assert got == [200, 200, 429]
    assert (await client.get("/cbv-async/"))["RateLimit-Policy"] == '"AsyncView";q=2;w=60'


def test_django_ratelimit_spellings_are_aliases(configure, mode: str) -> None:
    # @ratelimit(rate="2/m", key="ip", method="POST"): rate= and method= with the short notation.
    configure()
    client = Client()
    assert codes(client, "/aliases/", 3) == [200] * 3
    first = client.post("/aliases/")
    assert first["RateLimit-Policy"] == '"aliases";q=2;w=60'
    assert codes(client, "/aliases/", 2, "post") == [200, 429]


def test_aliases_are_given_once() -> None:
    with pytest.raises(InvalidArgument, match="give the limits once, as the first argument or as rate="):
        ratelimit("1/minute", rate="1/m")
    with pytest.raises(InvalidArgument, match="give the methods once, as methods= or as method=, not both"):
        ratelimit("1/minute", methods=["GET"], method="GET")
    with pytest.raises(InvalidArgument, match=r"@ratelimit needs limits, e.g. ratelimit\('5/minute'\)"):
        ratelimit(key="ip")


def test_bad_arguments_fail_at_import() -> None:
    with pytest.raises(InvalidLimit, match="invalid rate limit 'lots'"):
        ratelimit("lots")
    with pytest.raises(InvalidArgument, match="unknown key 'ipp'"):
        ratelimit("1/minute", key="ipp")
    with pytest.raises(InvalidArgument, match="unknown algorithm 'leaky'"):
        ratelimit("1/minute", algorithm="leaky")
    with pytest.raises(InvalidArgument, match="methods must be HTTP method names"):
        ratelimit("1/minute", methods=[])
    with pytest.raises(InvalidArgument, match="group must be a non-empty string"):
        ratelimit("1/minute", group="")
    with pytest.raises(InvalidLimit, match="cost 5 is more than the limit 2/minute allows at once"):
        ratelimit("2/minute", cost=5)
