"""A route the limits file lists whose endpoint declares limits too: each is a policy of its own,
with counters of its own, and both are enforced. HEAD requests fall under the GET entry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from support import ManualClock

from bisman_ratelimit import AsyncLimiter
from bisman_ratelimit.backends import AsyncRedisStorage, MemoryStorage
from bisman_ratelimit.web import parse_config
from bisman_ratelimit_starlette import RateLimit, RateLimitMiddleware, limit

PEER = "198.51.100.7"


@pytest.fixture
async def limiter(backend: tuple[str, str | None], clock: ManualClock) -> AsyncIterator[AsyncLimiter]:
    """An async limiter on the parametrized backend (memory, or a flushed server), on the test clock."""
    if backend[1] is None:
        yield AsyncLimiter(MemoryStorage(clock=clock))
        return
    client = redis.asyncio.Redis.from_url(backend[1])
    yield AsyncLimiter(AsyncRedisStorage(client, clock=clock))
    await client.aclose()


def listed(limits: str, **entry: Any) -> Any:
    return parse_config(
        {"routes": [{"path": "/report", "limits": limits, "algorithm": "fixed_window", **entry}]}
    )


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app, client=(PEER, 5000)), base_url="http://testserver"
    )


def starlette_app(limiter: AsyncLimiter, config: Any, *declared: str) -> Starlette:
    async def report(request: Request) -> Response:
        return PlainTextResponse("ok")

    endpoint: Any = report
    for limits in declared:
        endpoint = limit(limits, algorithm="fixed_window")(endpoint)
    app = Starlette(routes=[Route("/report", endpoint, methods=["GET", "POST"])])
    app.add_middleware(RateLimitMiddleware, limiter=limiter, config=config)
    return app


async def test_a_file_entry_and_a_stricter_declaration_keep_a_counter_each(limiter: AsyncLimiter) -> None:
    app = starlette_app(limiter, listed("10/minute"), "100/minute")
    async with client(app) as c:
        answers = [await c.get("/report") for _ in range(11)]
    assert [a.status_code for a in answers] == [200] * 10 + [429]
    assert answers[0].headers["ratelimit-policy"] == '"/report";q=10;w=60, "/report#2";q=100;w=60'
    assert answers[0].headers["ratelimit"] == '"/report";r=9;t=60, "/report#2";r=99;t=60'
    assert answers[9].headers["ratelimit"] == '"/report";r=0;t=60, "/report#2";r=90;t=60'
    assert answers[10].json()["violated-policies"] == ["/report"]


async def test_the_same_limit_in_the_file_and_on_the_endpoint_costs_one_each(
    limiter: AsyncLimiter, clock: ManualClock
) -> None:
    app = starlette_app(limiter, listed("3/minute"), "3/minute")
    async with client(app) as c:
        answers = [await c.get("/report") for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert answers[2].headers["ratelimit"] == '"/report";r=0;t=60, "/report#2";r=0;t=60'
        assert answers[3].json()["violated-policies"] == ["/report", "/report#2"]
        clock.advance(60)
        assert (await c.get("/report")).headers["ratelimit"] == '"/report";r=2;t=60, "/report#2";r=2;t=60'


async def test_a_stricter_declaration_refuses_before_the_file_entry(limiter: AsyncLimiter) -> None:
    # Two declarations on the endpoint: the file entry keeps the template's name, they are numbered
    # from the innermost decorator.
    app = starlette_app(limiter, listed("10/minute"), "2/minute", "5/hour")
    async with client(app) as c:
        answers = [await c.get("/report") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[0].headers["ratelimit-policy"] == (
        '"/report";q=10;w=60, "/report#2";q=2;w=60, "/report#3";q=5;w=3600'
    )
    assert answers[2].json()["violated-policies"] == ["/report#2"]


async def test_a_declaration_counts_apart_from_an_entry_for_other_methods(limiter: AsyncLimiter) -> None:
    # The file lists /report for POST only: the declaration is still not named /report, so the
    # GETs it counts are never counted against the POST entry, and GET and POST share its counter.
    app = starlette_app(limiter, listed("10/minute", methods=["POST"]), "3/minute")
    async with client(app) as c:
        got = await c.get("/report")
        posted = await c.post("/report")
    assert got.headers["ratelimit-policy"] == '"/report#2";q=3;w=60'
    assert got.headers["ratelimit"] == '"/report#2";r=2;t=60'
    assert posted.headers["ratelimit-policy"] == '"/report";q=10;w=60, "/report#2";q=3;w=60'
    assert posted.headers["ratelimit"] == '"/report";r=9;t=60, "/report#2";r=1;t=60'


async def test_a_fastapi_dependency_on_a_listed_route(limiter: AsyncLimiter) -> None:
    app = FastAPI()

    @app.get("/report", dependencies=[Depends(RateLimit("100/minute", algorithm="fixed_window"))])
    async def report() -> dict[str, bool]:
        return {"ok": True}

    app.add_middleware(RateLimitMiddleware, limiter=limiter, config=listed("10/minute"))
    async with client(app) as c:
        answers = [await c.get("/report") for _ in range(11)]
    assert [a.status_code for a in answers] == [200] * 10 + [429]
    assert answers[0].json() == {"ok": True}
    assert answers[0].headers["ratelimit-policy"] == '"/report";q=10;w=60, "/report#2";q=100;w=60'
    assert answers[9].headers["ratelimit"] == '"/report";r=0;t=60, "/report#2";r=90;t=60'


async def test_head_falls_under_the_get_entry_unless_head_has_its_own(limiter: AsyncLimiter) -> None:
    config = parse_config(
        {
            "routes": [
                {"path": "/report", "methods": ["GET"], "limits": "2/minute", "algorithm": "fixed_window"},
                {"path": "/export", "methods": ["GET"], "limits": "2/minute", "algorithm": "fixed_window"},
                {"path": "/export", "methods": ["HEAD"], "limits": "5/minute", "algorithm": "fixed_window"},
            ]
        }
    )

    async def page(request: Request) -> Response:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/report", page), Route("/export", page)])
    app.add_middleware(RateLimitMiddleware, limiter=limiter, config=config)
    async with client(app) as c:
        assert [(await c.head("/report")).status_code for _ in range(2)] == [200, 200]
        assert (await c.get("/report")).status_code == 429
        head = await c.head("/export")
        assert head.headers["ratelimit-policy"] == '"/export";q=5;w=60'
        assert (await c.get("/export")).headers["ratelimit-policy"] == '"/export";q=2;w=60'
