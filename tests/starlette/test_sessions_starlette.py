"""The server-side SessionMiddleware, on memory and on each Redis kind."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import redis
import redis.asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from support import ManualClock

from bisman_ratelimit import InvalidArgument
from bisman_ratelimit.stores import AsyncSessionStore, MemoryBackend, Signer, is_session_id
from bisman_ratelimit.testing import RedisServer
from bisman_ratelimit_starlette._sessions import (
    ROTATED_TEXT,
    UNAVAILABLE_TEXT,
    ServerSession,
    SessionMiddleware,
)

if TYPE_CHECKING:
    from cluster_fixtures import RedisClusterServers

# The redis_cluster fixture.
pytest_plugins = ["cluster_fixtures"]

SECRET = "s" * 32
OLD_SECRET = "o" * 32
SALT = "bisman-ratelimit.session-cookie"
calls: list[str] = []


async def show(request: Request) -> JSONResponse:
    calls.append("show")
    return JSONResponse(dict(request.session))


async def put(request: Request) -> JSONResponse:
    calls.append("put")
    request.session.update(await request.json())
    return JSONResponse(dict(request.session))


async def race(request: Request) -> JSONResponse:
    # Another request writes "b" while this one runs.
    await request.app.state.store.set_fields(request.session.id, {"b": 2})
    request.session["a"] = 5
    return JSONResponse(dict(request.session))


async def login_elsewhere(request: Request) -> JSONResponse:
    # A login in another request rotates this session while this one runs.
    request.app.state.rotated = await request.app.state.store.rotate(request.session.id, user_id="alice")
    request.session["cart"] = [9]
    return JSONResponse(dict(request.session))


async def drop(request: Request) -> JSONResponse:
    for name in await request.json():
        request.session.pop(name, None)
    return JSONResponse(dict(request.session))


async def login(request: Request) -> JSONResponse:
    request.session.rotate(user_id=request.query_params["user"])
    request.session["user"] = request.query_params["user"]
    return JSONResponse({"ok": True})


async def logout(request: Request) -> JSONResponse:
    request.session.clear()
    return JSONResponse({"ok": True})


async def untouched(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


async def ws(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json(dict(websocket.session))
    await websocket.close()


def make_app(store: AsyncSessionStore, **options: Any) -> Starlette:
    app = Starlette(
        routes=[
            Route("/", show),
            Route("/untouched", untouched),
            Route("/put", put, methods=["POST"]),
            Route("/drop", drop, methods=["POST"]),
            Route("/race", race, methods=["POST"]),
            Route("/login-elsewhere", login_elsewhere, methods=["POST"]),
            Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            WebSocketRoute("/ws", ws),
        ]
    )
    options.setdefault("secret_key", SECRET)
    app.state.store = store
    app.add_middleware(SessionMiddleware, store=store, **options)
    return app


@pytest.fixture
async def store(backend: tuple[str, str | None], clock: ManualClock) -> AsyncIterator[AsyncSessionStore]:
    url = backend[1]
    made = AsyncSessionStore(MemoryBackend(clock=clock) if url is None else redis.asyncio.Redis.from_url(url))
    yield made
    backend_client = made.backend
    if isinstance(backend_client, redis.asyncio.Redis):
        await backend_client.aclose()


@pytest.fixture
def client_for() -> Callable[..., httpx.AsyncClient]:
    def make(app: Starlette) -> httpx.AsyncClient:
        # https, so that the client sends the Secure cookie back.
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://testserver")

    return make


def session_of(cookie: str) -> str:
    """The session id a cookie names: ``<id>.<issued>.<signature>``."""
    return cookie.split(".")[0]


def cookie_id(response: httpx.Response) -> str:
    value = response.cookies["session"]
    session_id, issued, signature = value.split(".")
    assert is_session_id(session_id) and issued.isdigit() and len(signature) == 43
    return session_id


async def test_cookie_carries_only_the_signed_id(store: AsyncSessionStore, client_for: Any) -> None:
    async with client_for(make_app(store)) as client:
        first = await client.get("/")
        assert first.json() == {} and "set-cookie" not in first.headers

        response = await client.post("/put", json={"cart": [1, 2], "name": "Zoë"})
        header = response.headers["set-cookie"]
        session_id = cookie_id(response)
        flags = "; Max-Age=43200; Path=/; HttpOnly; SameSite=Lax; Secure"
        assert re.fullmatch(rf"session={session_id}\.[0-9]+\.[A-Za-z0-9_-]{{43}}{flags}", header)
        assert response.headers["vary"] == "Cookie"
        stored = await store.load(session_id)
        assert stored is not None and stored.data == {"cart": [1, 2], "name": "Zoë"}

        again = await client.get("/")
        assert again.json() == {"cart": [1, 2], "name": "Zoë"}
        assert "set-cookie" not in again.headers


async def test_only_changed_fields_are_written(store: AsyncSessionStore, client_for: Any) -> None:
    async with client_for(make_app(store)) as client:
        session_id = cookie_id(await client.post("/put", json={"a": 1, "b": 1}))
        # Another request changes "b" behind this one's back; writing "a" must not undo it.
        response = await client.post("/race")
        assert response.json() == {"a": 5, "b": 1}
        stored = await store.load(session_id)
        assert stored is not None and stored.data == {"a": 5, "b": 2}
        await client.post("/drop", json=["a"])
        stored = await store.load(session_id)
        assert stored is not None and stored.data == {"b": 2}


@pytest.mark.parametrize(
    "forge",
    [
        lambda value: value[:-1] + ("A" if value[-1] != "A" else "B"),  # tampered signature
        lambda value: value.rpartition(".")[0],  # id and time, no signature
        lambda value: Signer("x" * 32, salt=SALT).sign(value.rpartition(".")[0]),  # another secret
        lambda value: Signer(SECRET, salt=SALT).sign(session_of(value)),  # no issue time
        lambda value: "null",
        lambda value: value + "." + value,
    ],
)
async def test_tampered_and_forged_cookies_are_rejected(
    store: AsyncSessionStore, client_for: Any, forge: Callable[[str], str]
) -> None:
    async with client_for(make_app(store)) as client:
        good = (await client.post("/put", json={"secret": "data"})).cookies["session"]
    async with client_for(make_app(store)) as attacker:
        response = await attacker.get("/", headers={"cookie": f"session={forge(good)}"})
        assert response.json() == {}
        assert response.headers["set-cookie"].startswith("session=null; Max-Age=0; Expires=Thu, 01 Jan 1970")
    # The real session is untouched.
    stored = await store.load(session_of(good))
    assert stored is not None and stored.data == {"secret": "data"}


async def test_old_secrets_still_verify(store: AsyncSessionStore, client_for: Any) -> None:
    async with client_for(make_app(store, secret_key=OLD_SECRET)) as client:
        old_cookie = (await client.post("/put", json={"a": 1})).cookies["session"]
    async with client_for(make_app(store, secret_key=[SECRET, OLD_SECRET])) as client:
        response = await client.get("/", headers={"cookie": f"session={old_cookie}"})
        assert response.json() == {"a": 1}
    async with client_for(make_app(store, secret_key=SECRET)) as client:
        assert (await client.get("/", headers={"cookie": f"session={old_cookie}"})).json() == {}


async def test_rotation_at_login(store: AsyncSessionStore, client_for: Any) -> None:
    async with client_for(make_app(store)) as client:
        old_cookie = (await client.post("/put", json={"cart": [7]})).cookies["session"]
        response = await client.post("/login?user=alice")
        new_id = cookie_id(response)
        assert new_id != session_of(old_cookie)
        assert (await client.get("/")).json() == {"cart": [7], "user": "alice"}
        assert await store.user_sessions("alice") == [new_id]
    async with client_for(make_app(store)) as attacker:
        # The pre-login id (the session-fixation vector) is dead.
        assert (await attacker.get("/", headers={"cookie": f"session={old_cookie}"})).json() == {}


async def test_a_write_racing_a_login_is_refused_and_keeps_the_login_cookie(
    store: AsyncSessionStore, client_for: Any
) -> None:
    app = make_app(store)
    async with client_for(app) as client:
        old_id = cookie_id(await client.post("/put", json={"a": 1}))
        response = await client.post("/login-elsewhere")
        # Not a 200 with the write lost, and no Set-Cookie: clearing it would log out the new login.
        assert (response.status_code, response.text) == (409, ROTATED_TEXT)
        assert "set-cookie" not in response.headers
        new_id = app.state.rotated
        loaded = await store.load(new_id)
        assert loaded is not None and loaded.data == {"a": 1} and loaded.user_id == "alice"
        assert await store.load(old_id) is None
        # Requests still carrying the old cookie: one that reads keeps it, one that writes is refused.
        response = await client.get("/")
        assert (response.status_code, response.json()) == (200, {})
        assert "set-cookie" not in response.headers
        response = await client.post("/put", json={"b": 2})
        assert (response.status_code, response.text) == (409, ROTATED_TEXT)
        assert "set-cookie" not in response.headers
        assert await store.user_sessions("alice") == [new_id]
        loaded = await store.load(new_id)
        assert loaded is not None and loaded.data == {"a": 1}


async def test_login_without_a_session_creates_one(store: AsyncSessionStore, client_for: Any) -> None:
    async with client_for(make_app(store)) as client:
        session_id = cookie_id(await client.post("/login?user=bob"))
        assert await store.user_sessions("bob") == [session_id]


async def test_clearing_deletes_the_session(store: AsyncSessionStore, client_for: Any) -> None:
    async with client_for(make_app(store)) as client:
        session_id = cookie_id(await client.post("/put", json={"a": 1}))
        response = await client.post("/logout")
        assert response.headers["set-cookie"].startswith("session=null; Max-Age=0;")
        assert await store.load(session_id) is None


async def test_log_out_everywhere(store: AsyncSessionStore, client_for: Any) -> None:
    app = make_app(store)
    async with client_for(app) as laptop, client_for(app) as phone:
        await laptop.post("/login?user=carol")
        await phone.post("/login?user=carol")
        assert (await laptop.get("/")).json() == {"user": "carol"}
        assert len(await store.delete_user_sessions("carol")) == 2
        for device in (laptop, phone):
            assert (await device.get("/")).json() == {}
        # A write to an ended session does not bring it back.
        response = await laptop.post("/put", json={"x": 1})
        assert response.json() == {"x": 1}
        assert await store.user_sessions("carol") == []


async def test_cookie_options(store: AsyncSessionStore, client_for: Any) -> None:
    app = make_app(store, same_site="strict", https_only=False, max_age=60, domain="example.com", path="/app")
    async with client_for(app) as client:
        header = (await client.post("/put", json={"a": 1})).headers["set-cookie"]
    assert header.endswith("; Max-Age=60; Path=/app; HttpOnly; SameSite=Strict; Domain=example.com")
    app = make_app(store, same_site="none", partitioned=True, session_cookie="sid")
    async with client_for(app) as client:
        header = (await client.post("/put", json={"a": 1})).headers["set-cookie"]
    assert header.startswith("sid=") and header.endswith("; SameSite=None; Secure; Partitioned")


def test_bad_options_are_refused(clock: ManualClock) -> None:
    store = AsyncSessionStore(MemoryBackend(clock=clock))
    with pytest.raises(InvalidArgument, match="same_site='none' needs https_only=True"):
        SessionMiddleware(make_app(store), store=store, secret_key=SECRET, same_site="none", https_only=False)
    with pytest.raises(InvalidArgument, match="same_site must be 'lax', 'strict' or 'none', got 'loose'"):
        SessionMiddleware(make_app(store), store=store, secret_key=SECRET, same_site="loose")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="a signing secret must be at least 32 bytes long, got 5"):
        SessionMiddleware(make_app(store), store=store, secret_key="short")


async def test_idle_expiry_and_absolute_lifetime_on_the_clock(clock: ManualClock, client_for: Any) -> None:
    store = AsyncSessionStore(MemoryBackend(clock=clock), idle_ttl=10, absolute_lifetime=25)
    async with client_for(make_app(store)) as client:
        await client.post("/put", json={"a": 1})
        for _ in range(2):
            clock.advance(9)
            assert (await client.get("/")).json() == {"a": 1}
        clock.advance(7.5)  # 25.5 s after creation: past the absolute deadline
        response = await client.get("/")
        assert response.json() == {}
        assert response.headers["set-cookie"].startswith("session=null;")


async def test_websocket_sees_the_session(clock: ManualClock, client_for: Any) -> None:
    store = AsyncSessionStore(MemoryBackend(clock=clock))
    app = make_app(store)
    async with client_for(app) as client:
        cookie = (await client.post("/put", json={"a": 1})).cookies["session"]
    incoming = [{"type": "websocket.connect"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "path": "/ws",
        "raw_path": b"/ws",
        "query_string": b"",
        "root_path": "",
        "scheme": "wss",
        "server": ("testserver", 443),
        "subprotocols": [],
        "headers": [(b"host", b"testserver"), (b"cookie", f"session={cookie}".encode())],
    }
    await app(scope, receive, send)
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[1]["text"] == '{"a":1}'


async def test_lifespan_passes_through(clock: ManualClock) -> None:
    seen = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    middleware = SessionMiddleware(
        app, store=AsyncSessionStore(MemoryBackend(clock=clock)), secret_key=SECRET
    )
    await middleware({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    assert seen == ["lifespan"]


@pytest.mark.redis
class TestUnreachableStore:
    """A killed server: 503 with a clear message, never a fresh empty session."""

    @pytest.fixture
    def server(self) -> Any:
        with RedisServer() as server:
            yield server

    @staticmethod
    def store_on(server: RedisServer) -> AsyncSessionStore:
        return AsyncSessionStore(redis.asyncio.Redis.from_url(server.url, retry=None, socket_timeout=0.5))

    async def test_load_failure_answers_503_without_calling_the_app(
        self, server: RedisServer, client_for: Any
    ) -> None:
        store = self.store_on(server)
        async with client_for(make_app(store)) as client:
            await client.post("/put", json={"cart": [1]})
            server.kill()
            calls.clear()
            response = await client.get("/")
            assert response.status_code == 503
            assert response.text == UNAVAILABLE_TEXT
            assert response.headers["retry-after"] == "1"
            assert "set-cookie" not in response.headers  # the user keeps their cookie
            assert calls == []
        await store.aclose()
        assert isinstance(store.backend, redis.asyncio.Redis)
        await store.backend.aclose()

    async def test_write_failure_answers_503_instead_of_losing_it(
        self, server: RedisServer, client_for: Any
    ) -> None:
        store = self.store_on(server)
        async with client_for(make_app(store)) as client:
            server.kill()
            calls.clear()
            # No cookie: nothing to load, the app runs, and its write cannot be stored.
            response = await client.post("/put", json={"cart": [1]})
            assert calls == ["put"]
            assert (response.status_code, response.text) == (503, UNAVAILABLE_TEXT)
            assert "set-cookie" not in response.headers
        assert isinstance(store.backend, redis.asyncio.Redis)
        await store.backend.aclose()

    async def test_recovers_when_the_server_is_back(self, server: RedisServer, client_for: Any) -> None:
        store = self.store_on(server)
        async with client_for(make_app(store)) as client:
            await client.post("/put", json={"a": 1})
            server.kill()
            assert (await client.get("/")).status_code == 503
            server.stop()
            server.start()
            # The data died with the server: the cookie now names an unknown session.
            response = await client.get("/")
            assert (response.status_code, response.json()) == (200, {})
        assert isinstance(store.backend, redis.asyncio.Redis)
        await store.backend.aclose()


def test_the_package_exports_the_middleware() -> None:
    import bisman_ratelimit_starlette

    assert bisman_ratelimit_starlette.SessionMiddleware is SessionMiddleware


def test_sync_redis_client_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="this store is asynchronous"):
        SessionMiddleware(
            make_app(AsyncSessionStore("memory://")),
            store=AsyncSessionStore(redis.Redis()),
            secret_key=SECRET,
        )


def issued_cookie(cookie: str, issued: int) -> str:
    """``cookie`` re-signed as if issued at ``issued`` (the test knows the secret)."""
    return Signer(SECRET, salt=SALT).sign(f"{session_of(cookie)}.{issued}")


async def test_a_cookie_replayed_after_max_age_names_no_session(
    store: AsyncSessionStore, client_for: Any
) -> None:
    async with client_for(make_app(store, max_age=60)) as client:
        good = (await client.post("/put", json={"a": 1})).cookies["session"]
    now = int(time.time())
    async with client_for(make_app(store, max_age=60)) as replay:
        fresh = await replay.get("/", headers={"cookie": f"session={issued_cookie(good, now - 50)}"})
        assert fresh.json() == {"a": 1}
        stale = await replay.get("/", headers={"cookie": f"session={issued_cookie(good, now - 70)}"})
        assert stale.json() == {}
        assert stale.headers["set-cookie"].startswith("session=null; Max-Age=0;")


async def test_max_age_none_is_a_browser_session_cookie(store: AsyncSessionStore, client_for: Any) -> None:
    async with client_for(make_app(store, max_age=None)) as client:
        response = await client.post("/put", json={"a": 1})
        assert response.headers["set-cookie"].endswith("; Path=/; HttpOnly; SameSite=Lax; Secure")
        assert "max-age" not in response.headers["set-cookie"].lower()
        # Any issue time is accepted; the store's own lifetime still holds.
        old = issued_cookie(response.cookies["session"], int(time.time()) - 10 * 365 * 86400)
        assert (await client.get("/", headers={"cookie": f"session={old}"})).json() == {"a": 1}


async def test_max_age_none_still_ends_at_the_absolute_lifetime(clock: ManualClock, client_for: Any) -> None:
    store = AsyncSessionStore(MemoryBackend(clock=clock), idle_ttl=3600, absolute_lifetime=7200)
    async with client_for(make_app(store, max_age=None)) as client:
        await client.post("/put", json={"a": 1})
        seen = []
        for _ in range(3):
            clock.advance(3000)  # each read renews the idle TTL; the absolute lifetime is not renewed
            seen.append((await client.get("/")).json())
        assert seen == [{"a": 1}, {"a": 1}, {}]


@pytest.mark.parametrize("max_age", [0, -1, 1.5, True, "60"])
def test_max_age_must_be_whole_seconds(store: AsyncSessionStore, max_age: object) -> None:
    with pytest.raises(InvalidArgument, match="max_age must be a whole number of seconds >= 1, or None"):
        SessionMiddleware(show, store=store, secret_key=SECRET, max_age=max_age)  # type: ignore[arg-type]


async def test_vary_cookie_only_when_the_session_was_used(store: AsyncSessionStore, client_for: Any) -> None:
    async with client_for(make_app(store)) as client:
        await client.post("/put", json={"a": 1})
        untouched_response = await client.get("/untouched")
        assert "vary" not in untouched_response.headers and "set-cookie" not in untouched_response.headers
        read = await client.get("/")
        assert read.headers["vary"] == "Cookie"
    async with client_for(make_app(store)) as anonymous:
        assert "vary" not in (await anonymous.get("/untouched")).headers
        assert (await anonymous.get("/")).headers["vary"] == "Cookie"


@pytest.mark.parametrize(
    "use",
    [
        lambda s: s.popitem(),
        lambda s: s.__ior__({"c": 3}),
        lambda s: s.pop("missing", None),
        lambda s: s.get("a"),
        lambda s: "a" in s,
        lambda s: s.setdefault("a", 0),
    ],
)
def test_every_way_into_the_session_marks_it_used(use: Callable[[ServerSession], object]) -> None:
    session = ServerSession({"a": 1, "b": 2})
    assert not session.accessed
    use(session)
    assert session.accessed


def test_in_place_union_keeps_the_session() -> None:
    session = ServerSession({"a": 1}, session_id="x")
    same = session
    session |= {"b": 2}
    assert session is same and dict(session) == {"a": 1, "b": 2} and session.id == "x"


async def test_sessions_on_a_cluster_url(redis_cluster: RedisClusterServers, client_for: Any) -> None:
    """20 devices log in at once through the middleware on a Redis Cluster, then are logged out everywhere."""
    store = AsyncSessionStore(redis_cluster.url + "?timeout=1")
    app = make_app(store)
    devices = [client_for(app) for _ in range(20)]

    async def log_in(n: int, device: httpx.AsyncClient) -> str:
        await device.post("/put", json={"n": n})
        session_id = cookie_id(await device.post("/login?user=dave"))
        assert (await device.get("/")).json() == {"n": n, "user": "dave"}
        return session_id

    try:
        ids = await asyncio.gather(*(log_in(n, device) for n, device in enumerate(devices)))
        cluster = redis_cluster.client()
        assert len({cluster.get_node_from_key(f"auth:sess:{{{sid}}}").port for sid in ids}) > 1
        cluster.close()
        assert await store.user_sessions("dave") == sorted(ids)
        assert await store.delete_user_sessions("dave") == sorted(ids)
        assert [(await device.get("/")).json() for device in devices] == [{}] * 20
    finally:
        for device in devices:
            await device.aclose()
        await store.aclose()
