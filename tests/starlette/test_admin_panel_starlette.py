"""The Starlette admin panel: pages, writes, CSRF, authorization, and overload, on memory and Redis."""

from __future__ import annotations

import html.parser
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from support import soon

from bisman_ratelimit import AsyncLimiter, InvalidArgument, Limiter
from bisman_ratelimit.backends import MemoryStorage
from bisman_ratelimit.ops import PAGES, PanelEngine
from bisman_ratelimit.stores import Flag, FlagAdmin, Flags, MemoryBackend, SessionStore
from bisman_ratelimit.testing import RedisServer
from bisman_ratelimit.web import parse_config
from bisman_ratelimit_starlette import RateLimitMiddleware
from bisman_ratelimit_starlette.admin import AdminPanel

ROOT = "/admin/ratelimit"
CONFIG = {
    "global": {"limits": "6/minute", "algorithm": "sliding_log"},
    "routes": [
        # Sliding logs count exactly the last minute: no window boundary can reset them mid-test.
        {
            "path": "/api/items",
            "limits": ["2/minute"],
            "algorithm": "sliding_log",
            "key": "ip",
            "exempt": {"ips": ["10.0.0.0/8"]},
        },
    ],
}


class _Tables(html.parser.HTMLParser):
    """The text of every cell of every table, by table id."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: list[list[str]] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._table = self.tables.setdefault(dict(attrs).get("id") or "", [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self._table[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def tables(page: str) -> dict[str, list[list[str]]]:
    parser = _Tables()
    parser.feed(page)
    return parser.tables


def csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page)
    assert found is not None, page
    return found.group(1)


@dataclass
class Site:
    client: httpx.AsyncClient
    flags: FlagAdmin
    sessions: SessionStore
    url: str | None
    memory: MemoryBackend | None

    async def admin(self, path: str, who: str = "alice") -> Any:
        return await self.client.get(f"{ROOT}/{path}", headers={"X-User": who})

    async def post(
        self, path: str, data: dict[str, str], who: str = "alice", token: str | None = None
    ) -> Any:
        if token is None:
            token = csrf((await self.admin("flags", who)).text)
        return await self.client.post(
            f"{ROOT}/{path}",
            data={"csrf_token": token, **data},
            headers={"X-User": who},
            follow_redirects=False,
        )


def authorize(request: Request) -> str | None:
    user = request.headers.get("x-user")
    return user if user in ("alice", "bob") else None


async def items(request: Request) -> PlainTextResponse:
    return PlainTextResponse("items")


@pytest.fixture
async def site(backend: tuple[str, str | None]) -> AsyncIterator[Site]:
    _, url = backend
    memory = MemoryBackend() if url is None else None
    store: Any = memory if memory is not None else redis.Redis.from_url(url or "")
    client = None if url is None else redis.Redis.from_url(url)
    flags = FlagAdmin(store)
    sessions = SessionStore(store)
    # A loaded test machine: a generous budget, so that no call (nor closing) times out.
    limiter = AsyncLimiter(MemoryStorage()) if url is None else AsyncLimiter.from_url(url + "?timeout=2s")
    config = parse_config(CONFIG, "limits.toml")
    engine = PanelEngine(flags=flags, limiter=limiter, sessions=sessions, config=config, redis=client)
    panel = AdminPanel(engine=engine, authorize=authorize, secret="s" * 32, rate="40/minute")
    app = Starlette(
        routes=[Route("/api/items", items), Mount(ROOT, panel)],
        middleware=[_middleware(limiter, config)],
    )
    transport = httpx.ASGITransport(app, client=("198.51.100.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as test_client:
        yield Site(test_client, flags, sessions, url, memory)
    await limiter.aclose()
    flags.close()
    sessions.close()
    if client is not None:
        client.close()


def _middleware(limiter: AsyncLimiter, config: Any) -> Any:
    from starlette.middleware import Middleware

    return Middleware(RateLimitMiddleware, limiter=limiter, config=config)


def test_the_constructor_refuses_a_panel_open_to_everyone() -> None:
    engine = PanelEngine(flags=FlagAdmin(MemoryBackend()))
    with pytest.raises(TypeError, match="authorize"):
        AdminPanel(engine=engine)  # type: ignore[call-arg]
    with pytest.raises(InvalidArgument, match="AdminPanel needs authorize=, a callable of the request"):
        AdminPanel(engine=engine, authorize=None)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="the admin panel's secret must be at least 16 bytes"):
        AdminPanel(engine=engine, authorize=authorize, secret="short")


async def test_every_page_renders_a_known_state(site: Site) -> None:
    site.flags.set("darkMode", True, by="setup")
    site.flags.set("theme", "blue", by="setup")
    site.sessions.create({"cart": "secret-cart-content"}, user_id="u1")
    site.sessions.create({}, user_id="u1")
    site.sessions.create({}, user_id="u2")

    flags = await site.admin("flags")
    assert flags.status_code == 200
    assert tables(flags.text)["flags"] == [
        ["Name", "Type", "Value", "Edit", "Delete"],
        ["darkMode", "bool", "true", "truefalse Save", "Delete"],
        ["theme", "str", '"blue"', "Save", "Delete"],
    ]
    assert [row[1:] for row in tables(flags.text)["history"]] == [
        ["Who", "Flag", "Old value", "New value"],
        ["setup", "theme", "-", '"blue"'],
        ["setup", "darkMode", "-", "true"],
    ]

    limits = await site.admin("limits")
    assert tables(limits.text)["routes"] == [
        ["Route", "Methods", "Limits", "Key", "Algorithm", "Shadow", "Exempt"],
        ["(global)", "*", "6/minute", "-", "sliding_log", "no", "-"],
        ["/api/items", "*", "2/minute", "ip", "sliding_log", "no", "10.0.0.0/8"],
    ]
    assert tables(limits.text)["clients"][1:] == [["No client is limited."]]
    assert "Breaker: <b>none</b>" in limits.text

    sessions = await site.admin("sessions")
    assert tables(sessions.text)["users"] == [
        ["User", "Sessions", ""],
        ["u1", "2", "Log out everywhere"],
        ["u2", "1", "Log out everywhere"],
    ]
    assert "secret-cart-content" not in sessions.text

    namespaces = tables((await site.admin("namespaces")).text)["namespaces"]
    assert [row[:3] for row in namespaces] == [
        ["Namespace", "Purpose", "TTL policy"],
        ["auth:sess", "Session metadata; rolling renewal on access", "TTL 1800 s"],
        [
            "auth:sess:user",
            "A user's index of sessions; lives for the sessions' absolute lifetime",
            "TTL 43200 s",
        ],
        ["call:room", "Live call participants; expire on inactivity", "TTL given by each write"],
        ["chat:ctx", "Recent chat messages slice", "TTL 120 s"],
        ["flags:config", "Feature flags; admin changes only", "persistent"],
        ["rl:api_key", "Per-API-key route limits; TTL from the window", "TTL given by each write"],
        ["rl:custom", "Route limits by a key function; TTL from the window", "TTL given by each write"],
        ["rl:global", "Global request counter; short-circuits overload", "TTL 60 s"],
        ["rl:header", "Route limits by a request header; TTL from the window", "TTL given by each write"],
        ["rl:ip", "Per-client-address route limits; TTL from the window", "TTL given by each write"],
        ["rl:user", "Per-user route limits", "TTL 300 s"],
    ]
    health = await site.admin("health")
    if site.url is None:
        assert [row[3] for row in namespaces[1:]] == ["-"] * 11
        assert "Server: memory (no Redis to check)." in health.text
    else:
        # Three sessions, two users' indexes of them; the flags hash and its history.
        assert [row[3] for row in namespaces[1:]] == ["3", "2", "0", "0", "2", "0", "0", "0", "0", "0", "0"]
        checks = tables(health.text)["checks"]
        assert [row[0] for row in checks] == [
            "Check",
            "maxmemory",
            "eviction policy",
            "memory",
            "persistence",
            "keyspace notifications",
            "server version",
        ]


async def test_flag_writes_are_audited_and_reach_another_reader(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    reader = Flags(site.memory if site.memory is not None else redis.Redis.from_url(site.url or ""))
    assert reader.get("darkMode") is None
    caplog.set_level(logging.INFO, "bisman_ratelimit.admin")
    created = await site.post("flags/set", {"name": "darkMode", "type": "bool", "value": "true"})
    assert created.status_code == 303
    assert created.headers["location"] == f"{ROOT}/flags?note=set%20darkMode"
    assert soon(lambda: reader.get("darkMode"), True) is True
    assert (
        await site.post("flags/set", {"name": "darkMode", "type": "bool", "value": "false"}, who="bob")
    ).status_code == 303
    assert soon(lambda: reader.get("darkMode"), False) is False
    assert (
        await site.post("flags/set", {"name": "limits", "type": "json", "value": '{"max": 3}'})
    ).status_code == 303
    assert (await site.post("flags/delete", {"name": "darkMode"}, who="bob")).status_code == 303
    expected = {"limits": Flag("limits", "json", {"max": 3})}
    assert soon(reader.all, expected) == expected
    bad = await site.post("flags/set", {"name": "x", "type": "bool", "value": "maybe"})
    assert bad.status_code == 400
    assert "bad bool flag value &#39;maybe&#39;: use true/false, on/off, yes/no or 1/0" in bad.text

    assert [(c.by, c.name, c.old, c.new) for c in site.flags.history()] == [
        ("bob", "darkMode", Flag("darkMode", "bool", False), None),
        ("alice", "limits", None, Flag("limits", "json", {"max": 3})),
        ("bob", "darkMode", Flag("darkMode", "bool", True), Flag("darkMode", "bool", False)),
        ("alice", "darkMode", None, Flag("darkMode", "bool", True)),
    ]
    assert [r.getMessage() for r in caplog.records if r.name == "bisman_ratelimit.admin"] == [
        "alice set flag 'darkMode' to True (bool)",
        "bob set flag 'darkMode' to False (bool)",
        "alice set flag 'limits' to {'max': 3} (json)",
        "bob deleted flag 'darkMode'",
    ]
    history = tables((await site.admin("flags")).text)["history"]
    assert [row[1:] for row in history[1:]] == [
        ["bob", "darkMode", "false", "(deleted)"],
        ["alice", "limits", "-", '{"max": 3}'],
        ["bob", "darkMode", "true", "false"],
        ["alice", "darkMode", "-", "true"],
    ]
    reader.close()


async def test_a_limited_client_is_listed_and_reset_after_confirmation(site: Site) -> None:
    assert [(await site.client.get("/api/items")).status_code for _ in range(3)] == [200, 200, 429]
    clients = tables((await site.admin("limits")).text)["clients"]
    assert len(clients) == 2
    key, limit, algorithm, remaining, retry_after, _ = clients[1]
    assert (limit, algorithm, remaining) == ("2/60s", "sliding_log", "0")
    assert "198.51.100.7" in key and 0 < float(retry_after) <= 60
    token = re.search(r'name="client" value="([^"]+)"', (await site.admin("limits")).text)
    assert token is not None
    ask = await site.post("limits/reset", {"client": html.unescape(token.group(1))})
    assert ask.status_code == 200
    assert "<h1>Reset a client's limit?</h1>" in ask.text
    assert (await site.client.get("/api/items")).status_code == 429  # nothing reset yet
    done = await site.post("limits/reset", {"client": html.unescape(token.group(1)), "confirm": "yes"})
    assert done.status_code == 303
    assert (await site.client.get("/api/items")).status_code == 200
    assert tables((await site.admin("limits")).text)["clients"][1:] == [["No client is limited."]]


async def test_log_out_everywhere(site: Site) -> None:
    ids = [site.sessions.create({}, user_id="u1").id for _ in range(3)]
    other = site.sessions.create({}, user_id="u2").id
    answer = await site.post("sessions/logout", {"user": "u1"})
    assert answer.status_code == 303
    assert answer.headers["location"] == f"{ROOT}/sessions?note=logged%20u1%20out%20of%203%20sessions"
    assert [site.sessions.load(i) for i in ids] == [None, None, None]
    assert site.sessions.load(other) is not None
    assert tables((await site.admin("sessions")).text)["users"][1:] == [["u2", "1", "Log out everywhere"]]


async def test_writes_without_the_csrf_token_are_refused(site: Site) -> None:
    refused = [
        await site.post("flags/set", {"name": "darkMode", "type": "bool", "value": "true"}, token=""),
        await site.post("flags/set", {"name": "darkMode", "type": "bool", "value": "true"}, token="0" * 64),
        # Alice's token is not Bob's.
        await site.post(
            "flags/delete",
            {"name": "darkMode"},
            who="bob",
            token=csrf((await site.admin("flags", "alice")).text),
        ),
    ]
    assert [r.status_code for r in refused] == [403, 403, 403]
    assert all("CSRF token missing or wrong" in r.text for r in refused)
    token = csrf((await site.admin("flags")).text)
    site.client.cookies.clear()
    no_cookie = await site.post("flags/set", {"name": "a", "type": "str", "value": "b"}, token=token)
    assert no_cookie.status_code == 403
    assert site.flags.all() == {}
    assert site.flags.history() == []


async def test_only_authorized_users_get_in(site: Site) -> None:
    for who in ("mallory", ""):
        answer = await site.client.get(f"{ROOT}/flags", headers={"X-User": who})
        assert answer.status_code == 403
        assert "not authorized to use the admin panel" in answer.text
    denied = await site.client.post(f"{ROOT}/flags/set", data={"name": "a", "type": "str", "value": "b"})
    assert denied.status_code == 403
    assert site.flags.all() == {}


async def test_every_response_is_no_store(site: Site) -> None:
    answers = [
        await site.admin(page) for page in ("flags", "limits", "sessions", "namespaces", "health", "nope")
    ]
    answers.append(await site.client.get(f"{ROOT}/flags"))
    answers.append(await site.post("flags/set", {"name": "a", "type": "str", "value": "b"}))
    answers.append(await site.post("flags/set", {"name": "a", "type": "str", "value": "b"}, token=""))
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 200, 404, 403, 303, 403]
    assert {a.headers["cache-control"] for a in answers} == {"no-store"}


async def test_the_panel_answers_when_the_global_limit_is_tripped(site: Site) -> None:
    codes = [(await site.client.get("/api/items")).status_code for _ in range(7)]
    assert codes.count(429) == 5
    assert (await site.admin("flags")).status_code == 200
    assert (
        await site.post("flags/set", {"name": "darkMode", "type": "bool", "value": "true"})
    ).status_code == 303
    assert (await site.client.get("/api/items")).status_code == 429


async def test_the_panel_limits_its_own_requests(site: Site) -> None:
    codes = [(await site.admin("flags", "bob")).status_code for _ in range(41)]
    assert codes == [200] * 40 + [429]
    assert (await site.admin("flags", "alice")).status_code == 200


@pytest.mark.redis
async def test_with_redis_down_the_pages_answer_503_with_the_panels_headers() -> None:
    password = "pw-not-to-show"
    with RedisServer() as server:
        with redis.Redis.from_url(server.url) as setup:
            setup.config_set("requirepass", password)
        url = f"redis://:{password}@127.0.0.1:{server.port}/0"
        limiter = Limiter.from_url(url)
        engine = PanelEngine.from_url(url, limiter=limiter)
        assert engine.sessions is not None
        panel = AdminPanel(engine=engine, authorize=authorize, secret="s" * 32)
        transport = httpx.ASGITransport(Starlette(routes=[Mount(ROOT, panel)]), raise_app_exceptions=False)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                site = Site(client, engine.flags, engine.sessions, url, None)
                token = csrf((await site.admin("flags")).text)
                server.stop()
                answers: dict[str, Any] = {page: await site.admin(page) for page in PAGES}
                form = {"name": "a", "type": "str", "value": "b"}
                answers["set"] = await site.post("flags/set", form, token=token)
                answers["logout"] = await site.post("sessions/logout", {"user": "u1"}, token=token)
        finally:
            engine.close()
            limiter.close()
    assert {name: answer.status_code for name, answer in answers.items()} == {
        "flags": 503,
        "limits": 200,
        "sessions": 503,
        "namespaces": 503,
        "health": 200,
        "set": 503,
        "logout": 503,
    }
    reason = f"Redis is unavailable: Error 111 connecting to 127.0.0.1:{server.port}. Connection refused"
    message = f"The storage is unavailable ({reason}): this page works again once it answers."
    for name, answer in answers.items():
        assert answer.headers["cache-control"] == "no-store", name
        assert answer.headers["content-security-policy"].startswith("default-src 'self'"), name
        assert answer.headers["x-frame-options"] == "DENY", name
        assert password not in answer.text, name
        if answer.status_code == 503:
            assert f'<p class="error">{message}</p>' in answer.text, name
    assert "Server: unreachable." in answers["health"].text


async def test_a_reset_reaches_a_client_held_by_the_apps_blocked_keys_cache(
    backend: tuple[str, str | None],
) -> None:
    """One limit per request: a refusal is cached in the app, and the panel's reset clears it there."""
    _, url = backend
    config = parse_config({"routes": CONFIG["routes"]}, "limits.toml")
    limiter = AsyncLimiter(MemoryStorage()) if url is None else AsyncLimiter.from_url(url + "?timeout=2s")
    memory = MemoryBackend()
    client = None if url is None else redis.Redis.from_url(url)
    # Built before the first request, as apps do: the cache is empty then.
    engine = PanelEngine(
        flags=FlagAdmin(memory), limiter=limiter, sessions=SessionStore(memory), config=config, redis=client
    )
    panel = AdminPanel(engine=engine, authorize=authorize, secret="s" * 32, rate="40/minute")
    app = Starlette(
        routes=[Route("/api/items", items), Mount(ROOT, panel)], middleware=[_middleware(limiter, config)]
    )
    transport = httpx.ASGITransport(app, client=("198.51.100.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as test_client:
        site = Site(test_client, engine.flags, engine.sessions, url, memory)  # type: ignore[arg-type]
        assert [(await test_client.get("/api/items")).status_code for _ in range(3)] == [200, 200, 429]
        page = (await site.admin("limits")).text
        token = re.search(r'name="client" value="([^"]+)"', page)
        assert token is not None
        done = await site.post("limits/reset", {"client": html.unescape(token.group(1)), "confirm": "yes"})
        assert done.status_code == 303
        assert [(await test_client.get("/api/items")).status_code for _ in range(3)] == [200, 200, 429]
    await limiter.aclose()
    engine.close()
