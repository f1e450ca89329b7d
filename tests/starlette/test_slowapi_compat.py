"""slowapi's documented examples, run on ``bisman_ratelimit_starlette.slowapi`` with only the imports changed.

Each example runs on memory and on a real Redis (and Valkey); the expected
statuses, bodies and counts are those slowapi's docs describe.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from support import ManualClock

from bisman_ratelimit import AsyncLimiter, InvalidArgument
from bisman_ratelimit.backends import MemoryStorage
from bisman_ratelimit.metrics import RateLimitMetrics
from bisman_ratelimit_starlette.slowapi import (
    Limiter,
    RateLimitExceeded,
    SlowAPIASGIMiddleware,
    SlowAPIMiddleware,
    _rate_limit_exceeded_handler,
    get_ipaddr,
    get_remote_address,
)

PEER = "198.51.100.7"


@pytest.fixture
async def storage(backend: tuple[str, str | None]) -> AsyncIterator[str]:
    """The storage URL of each backend: memory, and a flushed Redis or Valkey (with a time budget that
    a busy machine fits in, else the outage policy would let requests through)."""
    yield backend[1] + "?timeout=5s" if backend[1] else "memory://"


def client(app: Any, ip: str = PEER) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app, client=(ip, 5000)), base_url="http://testserver"
    )


def ratelimit_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if "ratelimit" in k or k == "retry-after"}


async def test_starlette_quickstart(storage: str) -> None:
    limiter = Limiter(key_func=get_remote_address, storage_uri=storage)
    app = Starlette()
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)
    ran = []

    @limiter.limit("5/minute")
    async def homepage(request: Request) -> Response:
        ran.append(1)
        return PlainTextResponse("test")

    app.add_route("/home", homepage)

    async with client(app) as c:
        answers = [await c.get("/home") for _ in range(7)]
    await limiter.aclose()
    # "up to 5 requests per minute ... beyond this limit answered with an HTTP 429 error,
    # and the body of the view will not run".
    assert [(r.status_code, r.text) for r in answers[:5]] == [(200, "test")] * 5
    assert [r.status_code for r in answers[5:]] == [429, 429]
    assert answers[5].json() == {"error": "Rate limit exceeded: 5 per 1 minute"}
    assert len(ran) == 5
    # slowapi sends no rate-limit headers unless asked; a refusal still says when to come back.
    assert ratelimit_headers(answers[0]) == {}
    assert set(ratelimit_headers(answers[5])) == {"retry-after"}
    # The sliding window (our default) may ask for up to two windows.
    assert 1 <= int(answers[5].headers["retry-after"]) <= 120


async def test_fastapi_quickstart_with_a_response_parameter_and_headers(storage: str) -> None:
    limiter = Limiter(key_func=get_remote_address, storage_uri=storage, headers_enabled=True)
    app = FastAPI()
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)

    # Note: the route decorator must be above the limit decorator, not below it
    @app.get("/home")
    @limiter.limit("5/minute")
    async def homepage(request: Request) -> Response:
        return PlainTextResponse("test")

    @app.get("/mars")
    @limiter.limit("5/minute")
    async def mars(request: Request, response: Response) -> dict[str, str]:
        return {"key": "value"}

    async with client(app) as c:
        home = [await c.get("/home") for _ in range(6)]
        mars_answers = [await c.get("/mars") for _ in range(6)]
    await limiter.aclose()
    assert [r.status_code for r in home] == [200] * 5 + [429]
    assert [r.status_code for r in mars_answers] == [200] * 5 + [429]
    assert mars_answers[0].json() == {"key": "value"}
    # The routes count apart, and headers_enabled writes the X-RateLimit trio.
    for answers in (home, mars_answers):
        assert [(r.headers["x-ratelimit-limit"], r.headers["x-ratelimit-remaining"]) for r in answers] == [
            ("5", "4"),
            ("5", "3"),
            ("5", "2"),
            ("5", "1"),
            ("5", "0"),
            ("5", "0"),
        ]
        assert answers[-1].json() == {"error": "Rate limit exceeded: 5 per 1 minute"}
        assert 1 <= int(answers[-1].headers["retry-after"]) <= 120


async def test_headers_enabled_needs_a_response_to_carry_them() -> None:
    limiter = Limiter(key_func=get_remote_address, headers_enabled=True)
    app = FastAPI()
    app.state.limiter = limiter

    @app.get("/dict")
    @limiter.limit("5/minute")
    async def as_dict(request: Request) -> dict[str, str]:
        return {"key": "value"}

    async with client(app) as c:
        with pytest.raises(Exception, match="headers_enabled needs .*as_dict to return a Response"):
            await c.get("/dict")


async def test_the_middleware_applies_default_limits_and_exempt_routes_are_not_limited(
    storage: str,
) -> None:
    limiter = Limiter(key_func=get_remote_address, default_limits=["1/minute"], storage_uri=storage)
    app = Starlette()
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)
    app.add_middleware(SlowAPIMiddleware)

    # this will be limited by the default_limits
    async def homepage(request: Request) -> Response:
        return PlainTextResponse("Only once per minute")

    # this will be exempt from the default_limits
    @limiter.exempt
    async def exempt_page(request: Request) -> Response:
        return PlainTextResponse("I'm always here")

    async def other(request: Request) -> Response:
        return PlainTextResponse("other")

    app.add_route("/home", homepage)
    app.add_route("/exempt", exempt_page)
    app.add_route("/other", other)
    async with client(app) as c:
        home = [await c.get("/home") for _ in range(3)]
        free = [await c.get("/exempt") for _ in range(3)]
        # Default limits count per route, as slowapi's do.
        others = [await c.get("/other") for _ in range(2)]
    await limiter.aclose()
    assert [r.status_code for r in home] == [200, 429, 429]
    assert home[1].json() == {"error": "Rate limit exceeded: 1 per 1 minute"}
    assert [(r.status_code, r.text) for r in free] == [(200, "I'm always here")] * 3
    assert [r.status_code for r in others] == [200, 429]


async def test_application_limits_are_shared_by_every_route_in_one_round_trip(
    redis_url: str,
    redis_client: redis.Redis,
) -> None:
    limiter = Limiter(
        key_func=get_remote_address, application_limits=["4/minute"], default_limits=["10/second;100/minute"],
        storage_uri=redis_url + "?timeout=5s",
    )  # fmt: skip
    app = FastAPI()
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)
    app.add_middleware(SlowAPIASGIMiddleware)

    @app.get("/a")
    async def a(request: Request) -> dict[str, str]:
        return {"route": "a"}

    @app.get("/b")
    @limiter.limit("3/minute")
    async def b(request: Request) -> dict[str, str]:
        return {"route": "b"}

    async with client(app) as c:
        await c.get("/a")  # connections opened
        processed: list[int] = []
        answers = []
        for path in ("/a", "/b", "/b", "/a"):
            before = redis_client.info("commandstats")["cmdstat_evalsha"]["calls"]
            answers.append(await c.get(path))
            processed.append(redis_client.info("commandstats")["cmdstat_evalsha"]["calls"] - before)
    await limiter.aclose()
    # Application, default and route limits: up to four limits, one script call per request.
    assert processed == [1, 1, 1, 1]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert answers[3].json() == {"error": "Rate limit exceeded: 4 per 1 minute"}


async def test_shared_limit_per_method_methods_error_message_exempt_when_and_cost(clock: ManualClock) -> None:
    limiter = Limiter(
        key_func=get_remote_address, strategy="fixed-window", limiter=AsyncLimiter(MemoryStorage(clock=clock))
    )
    app = FastAPI()
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)
    shared = limiter.shared_limit("3/minute", scope="reports", error_message="Reports are rationed")

    @app.get("/reports/daily")
    @shared
    async def daily(request: Request) -> dict[str, str]:
        return {"report": "daily"}

    @app.get("/reports/weekly")
    @shared
    async def weekly(request: Request) -> dict[str, str]:
        return {"report": "weekly"}

    @app.api_route("/items", methods=["GET", "POST"])
    @limiter.limit("2/minute", per_method=True)
    async def items(request: Request) -> dict[str, str]:
        return {"method": request.method}

    @app.api_route("/posts", methods=["GET", "POST"])
    @limiter.limit("1/minute", methods=["POST"])
    async def posts(request: Request) -> dict[str, str]:
        return {"method": request.method}

    @app.get("/search")
    @limiter.limit("1/minute", exempt_when=lambda request: request.headers.get("x-admin") == "yes")
    async def search(request: Request) -> dict[str, str]:
        return {"search": "ok"}

    @app.get("/export")
    @limiter.limit("10/minute", cost=lambda request: int(request.query_params.get("rows", "1")))
    async def export(request: Request) -> dict[str, str]:
        return {"export": "ok"}

    async with client(app) as c:
        reports = [(await c.get(path)).status_code for path in ["/reports/daily", "/reports/weekly"] * 2]
        refused = await c.get("/reports/daily")
        by_method = [
            (await c.request(m, "/items")).status_code for m in ["GET", "GET", "POST", "POST", "GET"]
        ]
        posts = [(await c.request(m, "/posts")).status_code for m in ["GET", "GET", "GET", "POST", "POST"]]
        admin = [(await c.get("/search", headers={"x-admin": "yes"})).status_code for _ in range(3)]
        search = [(await c.get("/search")).status_code for _ in range(2)]
        export = [(await c.get("/export", params={"rows": rows})).status_code for rows in (6, 4, 1)]
    assert reports == [200, 200, 200, 429]
    assert refused.json() == {"error": "Rate limit exceeded: Reports are rationed"}
    assert refused.headers["retry-after"] == "60"
    assert by_method == [200, 200, 200, 200, 429]
    assert posts == [200, 200, 200, 200, 429]
    assert admin == [200, 200, 200]
    assert search == [200, 429]
    assert export == [200, 200, 429]


async def test_limits_notation_several_limits_and_sync_endpoints(clock: ManualClock) -> None:
    limiter = Limiter(
        key_func=get_remote_address, strategy="fixed-window", limiter=AsyncLimiter(MemoryStorage(clock=clock))
    )
    app = FastAPI()
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)

    @app.get("/burst")
    @limiter.limit("2 per second;3/minute")
    def burst(request: Request) -> dict[str, str]:
        return {"sync": "yes"}

    async with client(app) as c:
        first = [(await c.get("/burst")).status_code for _ in range(3)]
        over_second = await c.get("/burst")
        clock.advance(1)
        third = await c.get("/burst")
        over_minute = await c.get("/burst")
    assert first == [200, 200, 429]
    assert over_second.json() == {"error": "Rate limit exceeded: 2 per 1 second"}
    assert third.status_code == 200 and third.json() == {"sync": "yes"}
    assert over_minute.json() == {"error": "Rate limit exceeded: 3 per 1 minute"}
    assert over_minute.headers["retry-after"] == "59"


async def test_key_functions() -> None:
    seen: list[tuple[str, str]] = []
    limiter = Limiter(key_func=get_remote_address)
    app = Starlette()
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)

    @limiter.limit("1/minute", key_func=get_ipaddr)
    async def page(request: Request) -> Response:
        seen.append((get_remote_address(request), get_ipaddr(request)))
        return PlainTextResponse("ok")

    app.add_route("/page", page)
    async with client(app) as c:
        statuses = [
            (await c.get("/page", headers={"X_FORWARDED_FOR": "203.0.113.1"})).status_code,
            (await c.get("/page", headers={"X_FORWARDED_FOR": "203.0.113.2"})).status_code,
            (await c.get("/page", headers={"X_FORWARDED_FOR": "203.0.113.2"})).status_code,
            (await c.get("/page")).status_code,
        ]
    assert statuses == [200, 200, 429, 200]
    assert seen == [(PEER, "203.0.113.1"), (PEER, "203.0.113.2"), (PEER, PEER)]


async def test_a_handler_of_the_app_answers_refusals_the_middleware_makes() -> None:
    limiter = Limiter(key_func=get_remote_address, default_limits=["1/minute"])
    app = FastAPI()
    app.state.limiter = limiter
    app.add_middleware(SlowAPIMiddleware)

    async def teapot(request: Request, exc: Exception) -> Response:
        return PlainTextResponse(f"slow down: {exc.detail}", status_code=429)  # type: ignore[attr-defined]

    app.add_exception_handler(RateLimitExceeded, teapot)

    @app.get("/")
    async def index() -> dict[str, str]:
        return {"ok": "yes"}

    async with client(app) as c:
        answers = [await c.get("/") for _ in range(2)]
    assert [(r.status_code, r.text) for r in answers] == [
        (200, '{"ok":"yes"}'),
        (429, "slow down: 1 per 1 minute"),
    ]


def test_bad_arguments_are_named() -> None:
    with pytest.raises(InvalidArgument, match="unknown strategy 'leaky-bucket'"):
        Limiter(key_func=get_remote_address, strategy="leaky-bucket")
    limiter = Limiter(key_func=get_remote_address)
    with pytest.raises(Exception, match='No "request" or "websocket" argument on function'):

        @limiter.limit("1/minute")
        async def no_request() -> None: ...

    with pytest.raises(InvalidArgument, match="cost must be a whole number >= 1"):
        limiter.limit("1/minute", cost=0)


async def test_decisions_are_counted_by_route_template() -> None:
    registry = CollectorRegistry()
    limiter = Limiter(
        key_func=get_remote_address, default_limits=["2/minute"], metrics=RateLimitMetrics(registry=registry)
    )
    app = FastAPI()
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)
    app.add_middleware(SlowAPIMiddleware)

    @app.get("/items/{item_id}")
    async def item(request: Request, item_id: int) -> dict[str, int]:
        return {"item": item_id}

    async with client(app) as c:
        statuses = [(await c.get(f"/items/{n}")).status_code for n in range(3)]
    route = {"route": "/items/{item_id}"}
    assert statuses == [200, 200, 429]
    assert registry.get_sample_value("app_rate_limit_allowed_total", route) == 2
    assert registry.get_sample_value("app_rate_limit_block_total", {**route, "reason": "client"}) == 1


async def test_exempt_wins_over_a_limit_on_the_same_endpoint() -> None:
    limiter = Limiter(key_func=get_remote_address)
    app = FastAPI()
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)

    @app.get("/both")
    @limiter.exempt
    @limiter.limit("1/minute")
    async def both(request: Request) -> dict[str, str]:
        return {"ok": "yes"}

    async with client(app) as c:
        statuses = [(await c.get("/both")).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
