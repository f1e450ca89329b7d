"""Every way of declaring one limit takes the path of the limits file: what each costs and what it answers.

The cost is counted in Python function calls per request, traced with
``sys.setprofile``: the same on every run, unlike a timing. Each app is
compared with the same app holding the same limit in a limits file.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import fastapi
import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from support import ManualClock

from bisman_ratelimit import AsyncLimiter, ConfigurationError
from bisman_ratelimit.backends import MemoryStorage
from bisman_ratelimit.testing import RedisServer
from bisman_ratelimit_starlette import RateLimit, RateLimitMiddleware, limit
from bisman_ratelimit_starlette.slowapi import Limiter as CompatLimiter
from bisman_ratelimit_starlette.slowapi import SlowAPIASGIMiddleware, get_remote_address

LIMIT = "3/minute"
PEER = "198.51.100.7"


@pytest.fixture
def limits_file(tmp_path: Path) -> Path:
    path = tmp_path / "ratelimits.toml"
    path.write_text(
        "[[routes]]\n"
        'path = "/items/{item_id}"\n'
        f'limits = "{LIMIT}"\n'
        'key = "ip"\n'
        'algorithm = "sliding_window"\n'
    )
    return path


async def item(request: Request) -> Response:
    return PlainTextResponse("ok")


def starlette_app(limiter: AsyncLimiter, endpoint: Any = item, **options: Any) -> Starlette:
    return Starlette(
        routes=[Route("/items/{item_id}", endpoint)],
        middleware=[Middleware(RateLimitMiddleware, limiter=limiter, **options)],
    )


async def noop() -> None:
    pass


def fastapi_app(middleware: list[Middleware], dependency: Any) -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, middleware=middleware)

    async def fitem(item_id: str) -> Response:
        return PlainTextResponse("ok")

    app.add_api_route("/items/{item_id}", fitem, methods=["GET"], dependencies=[Depends(dependency)])
    return app


def memory(clock: ManualClock) -> AsyncLimiter:
    return AsyncLimiter(MemoryStorage(clock=clock))


_SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/items/42",
    "raw_path": b"/items/42",
    "root_path": "",
    "query_string": b"",
    "headers": [(b"host", b"testserver")],
    "client": (PEER, 50000),
    "server": ("testserver", 80),
}


async def calls_per_request(
    app: Any, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> tuple[int, list[tuple[bytes, bytes]]]:
    """Python function calls in one request (after two that fill the caches), and its headers."""
    scope = {**_SCOPE, "headers": [*_SCOPE["headers"], *headers]}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    for _ in range(2):
        await app(dict(scope), receive, send)
    sent.clear()
    count = 0

    def trace(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal count
        if event == "call":
            count += 1

    sys.setprofile(trace)
    try:
        await app(dict(scope), receive, send)
    finally:
        sys.setprofile(None)
    start = sent[0]
    assert start["status"] == 200
    return count, [
        (name, value) for name, value in start["headers"] if name.startswith((b"ratelimit", b"retry"))
    ]


async def test_a_decorated_endpoint_costs_one_call_more_than_the_limits_file(
    clock: ManualClock, limits_file: Path
) -> None:
    @limit(LIMIT)
    async def decorated(request: Request) -> Response:
        return PlainTextResponse("ok")

    by_file, file_headers = await calls_per_request(starlette_app(memory(clock), config=limits_file))
    by_decorator, headers = await calls_per_request(starlette_app(memory(clock), decorated))
    # The decorator's own wrapper, and nothing else: the same single check as the file's.
    assert by_decorator - by_file == 1
    assert file_headers == [
        (b"ratelimit-policy", b'"/items/{item_id}";q=3;w=60'),
        (b"ratelimit", b'"/items/{item_id}";r=0;t=120'),
    ]
    assert headers == file_headers


async def test_a_limit_keyed_by_a_header_costs_what_one_keyed_by_the_address_costs(
    clock: ManualClock, tmp_path: Path, limits_file: Path
) -> None:
    by_header = tmp_path / "by-header.toml"
    by_header.write_text(limits_file.read_text().replace('key = "ip"', 'key = "header:x-client"'))
    client = ((b"x-client", b"tenant-7"),)
    by_ip, ip_headers = await calls_per_request(starlette_app(memory(clock), config=limits_file), client)
    by_value, headers = await calls_per_request(starlette_app(memory(clock), config=by_header), client)
    # The header found among the request's, its digest remembered: two calls more (the
    # general path, which a header-keyed limit took before, cost 42 more).
    assert by_value - by_ip == 2
    assert headers == ip_headers

    storage = MemoryStorage(clock=clock)
    app = starlette_app(AsyncLimiter(storage), config=by_header)
    transport = httpx.ASGITransport(app=app, client=(PEER, 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        tenant = [await http.get("/items/1", headers={"X-Client": "tenant-7"}) for _ in range(4)]
        other = await http.get("/items/1", headers={"X-Client": "tenant-8"})
        anonymous = [await http.get("/items/1") for _ in range(4)]
        repeated = await http.get("/items/1", headers=[("X-Client", "a"), ("X-Client", "b")])
    assert [r.status_code for r in tenant] == [200, 200, 200, 429]
    assert tenant[3].headers["retry-after"] == "80"  # the sliding window frees a hit 20 s into the next
    assert (other.status_code, other.headers["ratelimit"]) == (200, '"/items/{item_id}";r=2;t=120')
    assert [r.status_code for r in anonymous] == [200, 200, 200, 429]
    assert repeated.status_code == 200
    digest = {value: hashlib.sha256(value).hexdigest()[:32] for value in (b"tenant-7", b"tenant-8", b"a, b")}
    # The keys the general path builds: the value's digest, the address without the header,
    # repeated field lines joined with a comma.
    suffix = ":api:/items/%7Bitem_id%7D"
    assert {key for key, _ in storage._map} == {
        f"rl:header:x-client:{{{digest[b'tenant-7']}}}{suffix}",
        f"rl:header:x-client:{{{digest[b'tenant-8']}}}{suffix}",
        f"rl:ip:{{{PEER}}}{suffix}",
        f"rl:header:x-client:{{{digest[b'a, b']}}}{suffix}",
    }


async def test_a_plan_without_headers_costs_less_than_one_with_them(
    clock: ManualClock, limits_file: Path
) -> None:
    with_headers, _ = await calls_per_request(starlette_app(memory(clock), config=limits_file))
    without, headers = await calls_per_request(
        starlette_app(memory(clock), config=limits_file, headers="none")
    )
    assert without < with_headers
    assert headers == []


async def test_the_fastapi_dependency_costs_what_fastapi_spends_on_any_dependency(
    clock: ManualClock, limits_file: Path
) -> None:
    by_file, file_headers = await calls_per_request(
        fastapi_app([Middleware(RateLimitMiddleware, limiter=memory(clock), config=limits_file)], noop)
    )
    by_dependency, headers = await calls_per_request(
        fastapi_app([Middleware(RateLimitMiddleware, limiter=memory(clock))], RateLimit(LIMIT))
    )
    # FastAPI 0.110 (the oldest supported) inspects a callable instance's signature on every request:
    # 10 calls that a plain function dependency does not cost. Current releases cache it.
    # Before the single-check path the dependency cost 38 calls more than this.
    inspected = 10 if tuple(int(part) for part in fastapi.__version__.split(".")[:2]) < (0, 112) else 0
    assert by_dependency == by_file + inspected
    assert headers == file_headers


async def test_the_slowapi_spelling_takes_the_single_check(clock: ManualClock, limits_file: Path) -> None:
    compat = CompatLimiter(key_func=get_remote_address, limiter=memory(clock))

    @compat.limit(LIMIT)
    async def compat_item(request: Request) -> Response:
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[Route("/items/{item_id}", compat_item)], middleware=[Middleware(SlowAPIASGIMiddleware)]
    )
    app.state.limiter = compat
    by_file, _ = await calls_per_request(starlette_app(memory(clock), config=limits_file))
    by_compat, headers = await calls_per_request(app)
    # Its middleware finds the route and its decorator steps aside: a few calls of their own.
    assert by_compat - by_file <= 11
    assert headers == []


def client(app: Any, ip: str = PEER) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app, client=(ip, 5000)), base_url="http://testserver"
    )


async def test_one_decorated_endpoint_in_two_apps_counts_apart_with_each_apps_settings(
    clock: ManualClock,
) -> None:
    @limit("2/minute", algorithm="fixed_window")
    async def shared(request: Request) -> Response:
        return PlainTextResponse("ok")

    whole = starlette_app(memory(clock), shared)
    by_network = starlette_app(memory(clock), shared, ipv4_prefix=24)
    async with client(whole) as a, client(by_network) as b, client(by_network, "198.51.100.8") as neighbour:
        assert [(await a.get("/items/1")).status_code for _ in range(2)] == [200, 200]
        # The other app's counters are its own, and it counts the /24 as one client.
        assert (await b.get("/items/1")).headers["ratelimit"] == '"/items/{item_id}";r=1;t=60'
        assert (await neighbour.get("/items/2")).headers["ratelimit"] == '"/items/{item_id}";r=0;t=60'
        assert (await neighbour.get("/items/3")).status_code == 429
        refused = await a.get("/items/1")
    assert refused.status_code == 429
    assert (refused.headers["retry-after"], refused.json()["violated-policies"]) == (
        "60",
        ["/items/{item_id}"],
    )


async def test_a_route_added_later_counts_under_its_own_template(clock: ManualClock) -> None:
    @limit("2/minute", algorithm="fixed_window")
    async def shared(request: Request) -> Response:
        return PlainTextResponse("ok")

    app = starlette_app(memory(clock), shared)
    async with client(app) as c:
        assert (await c.get("/items/1")).headers["ratelimit"] == '"/items/{item_id}";r=1;t=60'
        app.router.routes.append(Route("/things/{thing_id}", shared))
        added = await c.get("/things/1")
        assert (added.headers["ratelimit-policy"], added.headers["ratelimit"]) == (
            '"/things/{thing_id}";q=2;w=60',
            '"/things/{thing_id}";r=1;t=60',
        )
        assert (await c.get("/items/2")).headers["ratelimit"] == '"/items/{item_id}";r=0;t=60'


async def test_the_check_is_done_only_for_the_request_the_middleware_served(clock: ManualClock) -> None:
    @limit(LIMIT)
    async def declared(request: Request) -> Response:
        return PlainTextResponse("ok")

    checked = starlette_app(memory(clock), declared)
    alone = Starlette(routes=[Route("/items/{item_id}", declared)])
    async with client(checked) as a, client(alone) as b:
        assert (await a.get("/items/1")).status_code == 200
        # Same task, next request: the middleware's mark is gone, so the decorator says it is not enforced.
        with pytest.raises(ConfigurationError, match="is not enforced: add RateLimitMiddleware"):
            await b.get("/items/1")


@pytest.mark.redis
@pytest.mark.parametrize(("reaction", "status"), [("open", 200), ("closed", 503), ("fallback", 200)])
async def test_a_decorated_endpoint_on_a_storage_that_is_down_gets_the_outage_policy(
    reaction: str, status: int
) -> None:
    @limit(LIMIT)
    async def declared(request: Request) -> Response:
        return PlainTextResponse("ok")

    with _stopped_server() as url:
        limiter = AsyncLimiter.from_url(url)
        app = starlette_app(limiter, declared, on_outage=reaction)
        async with client(app) as c:
            answers = [await c.get("/items/1") for _ in range(4)]
        await limiter.aclose()
    expected = [status] * 4 if reaction != "fallback" else [200, 200, 200, 429]
    assert [answer.status_code for answer in answers] == expected
    if reaction == "fallback":
        assert answers[0].headers["ratelimit"].startswith('"/items/{item_id}";r=2;t=')


@pytest.fixture(autouse=True)
def _reset_profile() -> Iterator[None]:
    yield
    sys.setprofile(None)


class _stopped_server:
    """The URL of a Redis server that was started, then killed: every command fails to connect."""

    def __enter__(self) -> str:
        self._server = RedisServer()
        self._server.__enter__()
        url = self._server.url
        self._server.kill()
        return url

    def __exit__(self, *exc: object) -> None:
        self._server.__exit__(None, None, None)


async def test_a_decorated_endpoint_keyed_by_a_header_without_the_middleware_keys_as_the_general_path(
    clock: ManualClock,
) -> None:
    storage = MemoryStorage(clock=clock)

    @limit(LIMIT, key="header:X-Client", algorithm="fixed_window", limiter=AsyncLimiter(storage))
    async def decorated(request: Request) -> Response:
        return PlainTextResponse("ok")

    @limit(LIMIT, algorithm="fixed_window", limiter=memory(clock))
    async def by_address(request: Request) -> Response:
        return PlainTextResponse("ok")

    client = ((b"x-client", b"tenant-9"),)
    by_ip, _ = await calls_per_request(Starlette(routes=[Route("/items/{item_id}", by_address)]), client)
    by_value, _ = await calls_per_request(Starlette(routes=[Route("/items/{item_id}", decorated)]), client)
    assert by_value - by_ip == 2  # the single check, as with the middleware
    storage._map.clear()

    app = Starlette(routes=[Route("/items/{item_id}", decorated)])
    transport = httpx.ASGITransport(app=app, client=(PEER, 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        tenant = [await http.get("/items/1", headers={"X-Client": "tenant-7"}) for _ in range(4)]
        anonymous = await http.get("/items/2")
    assert [r.status_code for r in tenant] == [200, 200, 200, 429]
    assert (tenant[3].headers["retry-after"], anonymous.status_code) == ("60", 200)
    digest = hashlib.sha256(b"tenant-7").hexdigest()[:32]
    # Counted under the endpoint's name (no middleware knows the route's template).
    keys = {tuple(key.split(":api:")) for key, _ in storage._map}
    assert {head for head, _ in keys} == {f"rl:header:x-client:{{{digest}}}", f"rl:ip:{{{PEER}}}"}
    assert {tail for _, tail in keys} == {
        f"{__name__}.{decorated.__qualname__}".replace("<", "%3C").replace(">", "%3E")
    }
