"""@limit and @exempt on Starlette endpoints: with the middleware, alone, and in any decorator order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser, requires
from starlette.endpoints import HTTPEndpoint
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from support import ManualClock

from bisman_ratelimit import AsyncLimiter, ConfigurationError, InvalidLimit
from bisman_ratelimit.backends import MemoryStorage
from bisman_ratelimit_starlette import RateLimitMiddleware, exempt, limit


class HeaderAuth(AuthenticationBackend):
    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        name = conn.headers.get("x-user")
        return (AuthCredentials(["authenticated"]), SimpleUser(name)) if name else None


def app_with(clock: ManualClock, routes: list[Route], **options: Any) -> Starlette:
    limiter = AsyncLimiter(MemoryStorage(clock=clock))
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(AuthenticationMiddleware, backend=HeaderAuth()),
            Middleware(RateLimitMiddleware, limiter=limiter, **options),
        ],
    )


def client(app: Any, ip: str = "198.51.100.7") -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app, client=(ip, 5000)), base_url="http://testserver"
    )


async def statuses(app: Any, path: str, count: int, **kwargs: Any) -> list[int]:
    async with client(app) as c:
        return [(await c.get(path, **kwargs)).status_code for _ in range(count)]


async def test_limit_on_an_endpoint_with_the_middleware(clock: ManualClock) -> None:
    @limit("2/minute", algorithm="fixed_window")
    async def export(request: Request) -> Response:
        return PlainTextResponse("data")

    app = app_with(clock, [Route("/export/{fmt}", export)])
    async with client(app) as c:
        first = await c.get("/export/csv")
        assert first.headers["ratelimit-policy"] == '"/export/{fmt}";q=2;w=60'
        assert first.headers["ratelimit"] == '"/export/{fmt}";r=1;t=60'
        assert (await c.get("/export/json")).status_code == 200
        refused = await c.get("/export/csv")
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "60"
    assert refused.json()["violated-policies"] == ["/export/{fmt}"]


async def test_endpoint_limits_replace_the_defaults_and_the_global_limit_still_applies(
    clock: ManualClock,
) -> None:
    @limit("5/minute", algorithm="fixed_window")
    async def roomy(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def plain(request: Request) -> Response:
        return PlainTextResponse("ok")

    app = app_with(
        clock,
        [Route("/roomy", roomy), Route("/plain", plain)],
        default_limits="1/minute",
        algorithm="fixed_window",
        global_limits="4/minute",
    )
    assert await statuses(app, "/roomy", 3) == [200, 200, 200]
    assert await statuses(app, "/plain", 2) == [200, 503]


def requires_user(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    return requires("authenticated", status_code=403)(endpoint)


@pytest.mark.parametrize("order", ["limit-outside", "limit-inside"])
async def test_order_with_other_decorators_does_not_matter(clock: ManualClock, order: str) -> None:
    async def report(request: Request) -> Response:
        return PlainTextResponse("report")

    limited = limit("2/minute", algorithm="fixed_window", key="user")
    endpoint = limited(requires_user(report)) if order == "limit-outside" else requires_user(limited(report))
    app = app_with(clock, [Route("/report", endpoint)])
    bob = {"x-user": "bob"}
    assert await statuses(app, "/report", 3, headers=bob) == [200, 200, 429]
    async with client(app) as c:
        assert (await c.get("/report", headers={"x-user": "carol"})).status_code == 200


async def test_decorating_after_registration_is_still_enforced(clock: ManualClock) -> None:
    async def late(request: Request) -> Response:
        return PlainTextResponse("late")

    # What "@limit written above a route decorator" amounts to: the router holds the bare function.
    route = Route("/late", late)
    limit("1/minute", algorithm="fixed_window")(late)
    app = app_with(clock, [route])
    assert await statuses(app, "/late", 2) == [200, 429]


async def test_a_wrapper_that_hides_the_mark_fails_loudly(clock: ManualClock) -> None:
    @limit("1/minute")
    async def hidden(request: Request) -> Response:
        return PlainTextResponse("hidden")

    def opaque(endpoint: Callable[..., Any]) -> Callable[..., Any]:
        async def call(request: Request) -> Response:  # no functools.wraps: the mark is lost
            response: Response = await endpoint(request)
            return response

        return call

    app = app_with(clock, [Route("/hidden", opaque(hidden))])
    async with client(app) as c:
        with pytest.raises(
            ConfigurationError, match=r"@limit on .*hidden is not enforced: add RateLimitMiddleware"
        ):
            await c.get("/hidden")


async def test_without_the_middleware_the_decorator_refuses_to_be_silent() -> None:
    @limit("1/minute")
    async def alone(request: Request) -> Response:
        return PlainTextResponse("alone")

    app = Starlette(routes=[Route("/alone", alone)])
    async with client(app) as c:
        with pytest.raises(ConfigurationError, match="pass limiter=AsyncLimiter"):
            await c.get("/alone")


async def test_standalone_with_a_limiter(clock: ManualClock) -> None:
    limiter = AsyncLimiter(MemoryStorage(clock=clock))

    @limit("2/minute", algorithm="fixed_window", limiter=limiter, group="reports")
    def sync_report(request: Request) -> Response:  # a sync endpoint runs in the thread pool
        return PlainTextResponse("report")

    app = Starlette(routes=[Route("/report", sync_report)])
    async with client(app) as c:
        first = await c.get("/report")
        assert first.text == "report"
        assert first.headers["ratelimit"] == '"reports";r=1;t=60'
        await c.get("/report")
        refused = await c.get("/report")
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["retry-after"] == "60"


async def test_group_shares_one_counter(clock: ManualClock) -> None:
    @limit("3/minute", algorithm="fixed_window", group="exports")
    async def csv(request: Request) -> Response:
        return PlainTextResponse("csv")

    @limit("3/minute", algorithm="fixed_window", group="exports")
    async def pdf(request: Request) -> Response:
        return PlainTextResponse("pdf")

    app = app_with(clock, [Route("/csv", csv), Route("/pdf", pdf)])
    async with client(app) as c:
        got = [(await c.get(path)).status_code for path in ("/csv", "/pdf", "/csv", "/pdf")]
    assert got == [200, 200, 200, 429]


async def test_class_endpoint(clock: ManualClock) -> None:
    @limit("1/minute", algorithm="fixed_window")
    class Items(HTTPEndpoint):
        async def get(self, request: Request) -> Response:
            return PlainTextResponse("items")

        async def post(self, request: Request) -> Response:
            return PlainTextResponse("created", status_code=201)

    app = app_with(clock, [Route("/items", Items)])
    async with client(app) as c:
        assert (await c.get("/items")).status_code == 200
        assert (await c.get("/items")).status_code == 429
        # Each method has its own plan, but the same endpoint scope.
        assert (await c.post("/items")).status_code == 429


async def test_exempt_endpoint(clock: ManualClock) -> None:
    @exempt
    async def ping(request: Request) -> Response:
        return PlainTextResponse("pong")

    app = app_with(clock, [Route("/ping", ping)], default_limits="1/minute", global_limits="1/minute")
    assert await statuses(app, "/ping", 5) == [200] * 5


async def test_deduct_when_on_a_decorated_endpoint(clock: ManualClock) -> None:
    @limit("1/minute", algorithm="fixed_window", deduct_when=[401])
    async def signin(request: Request) -> Response:
        return Response(status_code=401 if request.query_params.get("bad") else 204)

    app = app_with(clock, [Route("/signin", signin, methods=["POST"])])
    async with client(app) as c:
        assert [(await c.post("/signin")).status_code for _ in range(3)] == [204, 204, 204]
        assert (await c.post("/signin?bad=1")).status_code == 401
        assert (await c.post("/signin")).status_code == 429


async def test_cost_callable(clock: ManualClock) -> None:
    def rows(connection: HTTPConnection) -> int:
        return int(connection.query_params["rows"])

    @limit("10/minute", algorithm="fixed_window", cost=rows)
    async def bulk(request: Request) -> Response:
        return PlainTextResponse("ok")

    app = app_with(clock, [Route("/bulk", bulk)])
    async with client(app) as c:
        assert (await c.get("/bulk?rows=6")).headers["ratelimit"] == '"/bulk";r=4;t=60'
        assert (await c.get("/bulk?rows=5")).status_code == 429
        assert (await c.get("/bulk?rows=4")).status_code == 200


def test_bad_declarations_fail_at_import_time() -> None:
    with pytest.raises(InvalidLimit, match="invalid rate limit 'ten a minute'"):
        limit("ten a minute")
    with pytest.raises(InvalidLimit, match="cost 5 is more than the limit 2/minute allows at once"):
        limit("2/minute", cost=5)


def test_wraps_keeps_the_endpoint_name() -> None:
    async def named(request: Request) -> Response:
        return PlainTextResponse("x")

    wrapped = limit("1/minute")(named)
    assert wrapped.__name__ == "named"
    assert wrapped.__wrapped__ is named  # type: ignore[attr-defined]
