"""Starlette's own session-middleware checks, for the server-side SessionMiddleware.

The cases of Starlette's ``tests/middleware/test_session.py``, written again
for a store that keeps the data (the cookie carries ``<id>.<issued>.<signature>``,
``max_age`` is enforced on the server), through ``starlette.testclient.TestClient``:
several at once, with and without ``with`` (each request without it runs in an
event loop of its own), on memory and on a store built from a Redis URL.
"""

from __future__ import annotations

import gc
import logging
import re
import time
import warnings
from typing import Any

import httpx
import pytest
import redis.asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from bisman_ratelimit.stores import AsyncSessionStore, MemoryBackend, Signer
from bisman_ratelimit_starlette import SessionMiddleware
from bisman_ratelimit_starlette._sessions import UNAVAILABLE_TEXT

with warnings.catch_warnings():
    # Starlette 1.x would have its TestClient on httpx2; on httpx it works and says so.
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient` is deprecated")
    from starlette.testclient import TestClient

SECRET = "contract-secret-" * 2
SALT = "bisman-ratelimit.session-cookie"
HTTPS = "https://testserver"
CLEARED = "session=null; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT"


async def view_session(request: Request) -> JSONResponse:
    return JSONResponse({"session": dict(request.session)})


async def update_session(request: Request) -> JSONResponse:
    request.session.update(await request.json())
    return JSONResponse({"session": dict(request.session)})


async def inplace_update_session(request: Request) -> JSONResponse:
    session = request.session
    session |= await request.json()
    return JSONResponse({"session": dict(request.session)})


async def popitem_session(request: Request) -> JSONResponse:
    request.session.popitem()
    return JSONResponse({"session": dict(request.session)})


async def pop_session(request: Request) -> JSONResponse:
    return JSONResponse({"value": request.scope["session"].pop("a")})


async def clear_session(request: Request) -> JSONResponse:
    request.session.clear()
    return JSONResponse({"session": dict(request.session)})


async def no_session_access(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


ROUTES = [
    Route("/view_session", view_session),
    Route("/update_session", update_session, methods=["POST"]),
    Route("/inplace_update_session", inplace_update_session, methods=["POST"]),
    Route("/popitem_session", popitem_session, methods=["POST"]),
    Route("/pop_session", pop_session, methods=["POST"]),
    Route("/clear_session", clear_session, methods=["POST"]),
    Route("/no_session", no_session_access),
]


@pytest.fixture
def store(backend: tuple[str, str | None]) -> AsyncSessionStore:
    """A store as an app builds it: from the URL (each event loop gets its client), or in memory."""
    url = backend[1]
    # Each loop connects anew; a budget of a second keeps a loaded test machine from failing a connect.
    return AsyncSessionStore(MemoryBackend() if url is None else f"{url}?timeout=1s")


def make_app(store: AsyncSessionStore, **options: Any) -> Starlette:
    app = Starlette(routes=ROUTES)
    app.add_middleware(SessionMiddleware, store=store, secret_key=SECRET, **options)
    return app


def cookie_value(response: httpx.Response) -> str:
    found = re.match(r"session=([^;]*);", response.headers["set-cookie"])
    assert found is not None
    return found[1]


def issued_at(cookie: str, issued: int) -> str:
    """``cookie`` signed again as if issued at ``issued`` (the test knows the secret)."""
    return Signer(SECRET, salt=SALT).sign(f"{cookie.split('.')[0]}.{issued}")


def test_session(store: AsyncSessionStore) -> None:
    with TestClient(make_app(store), base_url=HTTPS) as client:
        assert client.get("/view_session").json() == {"session": {}}

        response = client.post("/update_session", json={"some": "data"})
        assert response.json() == {"session": {"some": "data"}}
        # 14 days asked, capped by the store's absolute lifetime (12 hours).
        assert re.search(r"; Max-Age=([0-9]+);", response.headers["set-cookie"])[1] == "43200"  # type: ignore[index]

        assert client.get("/view_session").json() == {"session": {"some": "data"}}
        response = client.post("/clear_session")
        assert response.json() == {"session": {}}
        assert response.headers["set-cookie"].startswith(CLEARED)
        assert client.get("/view_session").json() == {"session": {}}


@pytest.mark.parametrize("partitioned", [False, True])
def test_partitioned_session(store: AsyncSessionStore, partitioned: bool) -> None:
    app = make_app(store, https_only=True, same_site="none", partitioned=partitioned)
    with TestClient(app, base_url=HTTPS) as client:
        response = client.post("/update_session", json={"some": "data"})
        assert ("Partitioned" in response.headers["set-cookie"].split("; ")) is partitioned
        response = client.post("/clear_session")
        assert response.headers["set-cookie"].startswith(CLEARED)
        assert ("Partitioned" in response.headers["set-cookie"].split("; ")) is partitioned


def test_session_expires(store: AsyncSessionStore) -> None:
    app = make_app(store, max_age=60)
    client = TestClient(app, base_url=HTTPS)
    response = client.post("/update_session", json={"some": "data"})
    assert response.json() == {"session": {"some": "data"}}
    cookie = cookie_value(response)

    # The same session, named by a cookie issued 61 s ago: the server refuses it.
    stale = TestClient(app, base_url=HTTPS, cookies={"session": issued_at(cookie, int(time.time()) - 61)})
    response = stale.get("/view_session")
    assert response.json() == {"session": {}}
    assert response.headers["set-cookie"].startswith(CLEARED)
    # Within max_age it still names the session.
    fresh = TestClient(app, base_url=HTTPS, cookies={"session": issued_at(cookie, int(time.time()) - 50)})
    assert fresh.get("/view_session").json() == {"session": {"some": "data"}}


def test_secure_session(store: AsyncSessionStore) -> None:
    app = make_app(store, https_only=True)
    secure_client = TestClient(app, base_url=HTTPS)
    unsecure_client = TestClient(app, base_url="http://testserver")

    assert unsecure_client.get("/view_session").json() == {"session": {}}
    response = unsecure_client.post("/update_session", json={"some": "data"})
    assert response.json() == {"session": {"some": "data"}}
    assert "; Secure" in response.headers["set-cookie"]
    # A Secure cookie is not sent back over http.
    assert unsecure_client.get("/view_session").json() == {"session": {}}

    assert secure_client.get("/view_session").json() == {"session": {}}
    response = secure_client.post("/update_session", json={"some": "data"})
    assert response.json() == {"session": {"some": "data"}}
    assert secure_client.get("/view_session").json() == {"session": {"some": "data"}}
    assert secure_client.post("/clear_session").json() == {"session": {}}
    assert secure_client.get("/view_session").json() == {"session": {}}


def test_session_cookie_subpath(store: AsyncSessionStore) -> None:
    app = Starlette(routes=[Mount("/second_app", app=make_app(store, path="/second_app"))])
    with TestClient(app, base_url=f"{HTTPS}/second_app") as client:
        response = client.post("/update_session", json={"some": "data"})
        assert response.status_code == 200
        assert re.search(r"; Path=(\S+);", response.headers["set-cookie"])[1] == "/second_app"  # type: ignore[index]
        assert client.get("/view_session").json() == {"session": {"some": "data"}}


def test_invalid_session_cookie(store: AsyncSessionStore) -> None:
    app = make_app(store)
    with TestClient(app, base_url=HTTPS) as client:
        assert client.post("/update_session", json={"some": "data"}).json() == {"session": {"some": "data"}}
    with TestClient(app, base_url=HTTPS, cookies={"session": "invalid"}) as client:
        response = client.get("/view_session")
        assert (response.status_code, response.json()) == (200, {"session": {}})
        assert response.headers["set-cookie"].startswith(CLEARED)


def test_session_cookie(store: AsyncSessionStore) -> None:
    client = TestClient(make_app(store, max_age=None), base_url=HTTPS)
    response = client.post("/update_session", json={"some": "data"})
    assert response.json() == {"session": {"some": "data"}}
    assert "Max-Age" not in response.headers["set-cookie"]
    assert client.get("/view_session").json() == {"session": {"some": "data"}}
    client.cookies.delete("session")
    assert client.get("/view_session").json() == {"session": {}}


def test_domain_cookie(store: AsyncSessionStore) -> None:
    client = TestClient(make_app(store, domain=".example.com"), base_url=HTTPS)
    response = client.post("/update_session", json={"some": "data"})
    assert response.json() == {"session": {"some": "data"}}
    assert response.headers["set-cookie"].endswith("; Secure; Domain=.example.com")
    client.cookies.delete("session")
    assert client.get("/view_session").json() == {"session": {}}


def test_set_cookie_only_on_modification(store: AsyncSessionStore) -> None:
    with TestClient(make_app(store), base_url=HTTPS) as client:
        assert "set-cookie" in client.post("/update_session", json={"some": "data"}).headers
        response = client.get("/view_session")
        assert response.json() == {"session": {"some": "data"}}
        assert "set-cookie" not in response.headers
        # A change to a session that has a cookie is written on the server, the cookie stays.
        response = client.post("/update_session", json={"more": 1})
        assert "set-cookie" not in response.headers
        assert client.get("/view_session").json() == {"session": {"some": "data", "more": 1}}


def test_vary_cookie_on_access(store: AsyncSessionStore) -> None:
    with TestClient(make_app(store), base_url=HTTPS) as client:
        assert client.post("/update_session", json={"some": "data"}).headers["vary"] == "Cookie"
        assert client.get("/view_session").headers["vary"] == "Cookie"
        response = client.get("/no_session")
        assert "vary" not in response.headers and "set-cookie" not in response.headers


@pytest.mark.parametrize("session_data", [{"a": "1"}, {"a": "1", "b": "2"}])
async def test_vary_cookie_on_session_pop(store: AsyncSessionStore, session_data: dict[str, str]) -> None:
    transport = httpx.ASGITransport(app=make_app(store))
    async with httpx.AsyncClient(transport=transport, base_url=HTTPS) as client:
        response = await client.post("/update_session", json=session_data)
        assert response.json() == {"session": session_data}
        response = await client.post("/pop_session")
        assert response.json() == {"value": "1"}
        assert response.headers["vary"] == "Cookie"
        if session_data == {"a": "1"}:
            # The last field gone: the session is deleted and its cookie cleared.
            assert response.headers["set-cookie"].startswith(CLEARED)
            assert (await client.get("/view_session")).json() == {"session": {}}
        else:
            assert "set-cookie" not in response.headers
            assert (await client.get("/view_session")).json() == {"session": {"b": "2"}}
    await store.aclose()


@pytest.mark.parametrize(
    ("path", "data", "expected"),
    [
        ("/inplace_update_session", {"c": "3"}, {"a": "1", "b": "2", "c": "3"}),
        ("/popitem_session", None, {"a": "1"}),
    ],
)
def test_session_persists_mutations(
    store: AsyncSessionStore, path: str, data: dict[str, str] | None, expected: dict[str, str]
) -> None:
    with TestClient(make_app(store), base_url=HTTPS) as client:
        assert client.post("/update_session", json={"a": "1", "b": "2"}).json() == {
            "session": {"a": "1", "b": "2"}
        }
        response = client.post(path, json=data)
        assert response.json() == {"session": expected}
        assert response.headers["vary"] == "Cookie"
        assert client.get("/view_session").json() == {"session": expected}


def test_several_test_clients_at_once(store: AsyncSessionStore) -> None:
    """Each ``with TestClient`` runs the app in an event loop of its own, open side by side."""
    app = make_app(store)
    with TestClient(app, base_url=HTTPS) as first, TestClient(app, base_url=HTTPS) as second:
        first.post("/update_session", json={"who": "first"})
        second.post("/update_session", json={"who": "second"})
        for _ in range(3):
            assert first.get("/view_session").json() == {"session": {"who": "first"}}
            assert second.get("/view_session").json() == {"session": {"who": "second"}}
        # A third, without ``with``: every request in a new loop, the others still open.
        third = TestClient(app, base_url=HTTPS, cookies={"session": first.cookies["session"]})
        for _ in range(3):
            assert third.get("/view_session").json() == {"session": {"who": "first"}}
        assert first.get("/view_session").json() == {"session": {"who": "first"}}


def test_one_test_client_after_another(store: AsyncSessionStore) -> None:
    app = make_app(store)
    with TestClient(app, base_url=HTTPS) as client:
        cookie = cookie_value(client.post("/update_session", json={"n": 0}))
    for n in range(1, 4):
        with TestClient(app, base_url=HTTPS, cookies={"session": cookie}) as client:
            assert client.post("/update_session", json={"n": n}).json() == {"session": {"n": n}}
    assert TestClient(app, base_url=HTTPS, cookies={"session": cookie}).get("/view_session").json() == {
        "session": {"n": 3}
    }


@pytest.mark.redis
def test_a_client_of_another_loop_answers_503_naming_the_cause(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A redis.asyncio client built by the app belongs to one loop: the error says so, as a 503."""
    app = make_app(AsyncSessionStore(redis.asyncio.Redis.from_url(redis_url)))
    # Without ``with``, the request runs in a loop of its own, closed after it; the client's
    # connection stays in that loop.
    cookie = cookie_value(TestClient(app, base_url=HTTPS).post("/update_session", json={"some": "data"}))
    caplog.set_level(logging.WARNING, logger="bisman_ratelimit.sessions")
    with TestClient(app, base_url=HTTPS, cookies={"session": cookie}) as client:
        response = client.get("/view_session")
    assert (response.status_code, response.text) == (503, UNAVAILABLE_TEXT)
    assert [record.getMessage() for record in caplog.records] == [
        "session store unreachable, answering 503: the redis.asyncio client given to this store "
        "belongs to another event loop (Event loop is closed): give the store a URL instead, "
        "and it keeps one client per event loop"
    ]
    # The connection left in the closed loop cannot be closed any more: let it go here (the
    # log records hold the error, whose traceback holds the connection).
    for record in caplog.records:
        record.msg, record.args = record.getMessage(), ()
    del app, client, response
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


STORE_CLIENT = "session-contract-store"


def app_connections(admin: redis.Redis, expected: int) -> int:
    """The store's connections to the server (by client name), once they settle at ``expected``.

    A client closes its socket before the server reads the close: ask again a few times.
    Other tests' connections to the same server are not counted.
    """
    for _ in range(50):
        found = sum(client["name"] == STORE_CLIENT for client in admin.client_list())
        if found == expected:
            break
    return found


@pytest.mark.redis
def test_each_loops_client_is_closed_with_its_loop(redis_url: str) -> None:
    separator = "&" if "?" in redis_url else "?"
    store = AsyncSessionStore(f"{redis_url}{separator}client_name={STORE_CLIENT}")
    app = make_app(store)
    with redis.Redis.from_url(redis_url) as admin:
        with TestClient(app, base_url=HTTPS) as first, TestClient(app, base_url=HTTPS) as second:
            first.post("/update_session", json={"a": 1})
            second.post("/update_session", json={"b": 2})
            # The first loop's client opened 64 at startup (the middleware warms the store), the second's one.
            assert app_connections(admin, 65) == 65
            for _ in range(3):
                TestClient(app, base_url=HTTPS).get("/view_session")  # a loop per request
            assert app_connections(admin, 65) == 65
            first.portal.call(store.aclose)  # type: ignore[union-attr]
            assert app_connections(admin, 1) == 1
            # Closed, the store opens a client again when next used in that loop.
            assert first.get("/view_session").json() == {"session": {"a": 1}}
            assert app_connections(admin, 2) == 2
        assert app_connections(admin, 0) == 0
