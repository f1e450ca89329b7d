"""Limits keyed by user without anything that sets scope["user"]: said once, at startup."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from bisman_ratelimit_starlette import RateLimit, RateLimitMiddleware, limit

LOGGER = "bisman_ratelimit.starlette"


def message(names: str) -> str:
    return (
        f"rate limits keyed or exempted by user ({names}) need scope['user'], but no "
        "AuthenticationMiddleware runs before RateLimitMiddleware: requests they apply to will "
        "fail with 500. Add it after RateLimitMiddleware, so that it runs first "
        "(app.add_middleware(AuthenticationMiddleware, backend=...)), or pass "
        "RateLimitMiddleware(user=<callable of the request>)"
    )


class Bearer(AuthenticationBackend):
    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        name = conn.headers.get("authorization", "").removeprefix("Bearer ")
        return (AuthCredentials(["authenticated"]), SimpleUser(name)) if name else None


@limit("10/minute", key="user")
async def export(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def plain(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


@asynccontextmanager
async def running(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app started by its lifespan events, as a server starts it, and a client to it."""
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.ensure_future(app(scope, events.get, sent.put))
    await events.put({"type": "lifespan.startup"})
    assert (await sent.get())["type"] == "lifespan.startup.complete"
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client
    finally:
        await events.put({"type": "lifespan.shutdown"})
        assert (await sent.get())["type"] == "lifespan.shutdown.complete"
        await task


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.ERROR]


async def test_said_at_startup_before_any_request(caplog: pytest.LogCaptureFixture) -> None:
    app = Starlette(routes=[Route("/plain", plain), Mount("/api", routes=[Route("/export", export)])])
    app.add_middleware(RateLimitMiddleware, default_limits="100/minute")
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        async with running(app) as client:
            assert errors(caplog) == [message("/api/export")]
            assert (await client.get("/plain")).status_code == 200
            assert (await client.get("/api/export")).status_code == 500
            assert (await client.get("/api/export")).status_code == 500
    assert errors(caplog) == [message("/api/export")]


async def test_said_at_the_first_request_without_a_lifespan(caplog: pytest.LogCaptureFixture) -> None:
    app = FastAPI()
    app.add_api_route(
        "/calls", plain, dependencies=[Depends(RateLimit("5/minute", key="user", group="calls"))]
    )
    app.add_middleware(RateLimitMiddleware, default_limits="100/minute", key="user")
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)  # no lifespan events
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            assert (await client.get("/calls")).status_code == 500
            assert (await client.get("/calls")).status_code == 500
    assert errors(caplog) == [message("default, calls")]


@pytest.mark.parametrize("fixed", ["authentication", "user callable"])
async def test_silent_when_requests_have_a_user(fixed: str, caplog: pytest.LogCaptureFixture) -> None:
    app = Starlette(routes=[Route("/export", export)])
    if fixed == "authentication":
        app.add_middleware(RateLimitMiddleware, default_limits="100/minute")
        app.add_middleware(AuthenticationMiddleware, backend=Bearer())
    else:
        app.add_middleware(
            RateLimitMiddleware, default_limits="100/minute", user=lambda c: c.headers.get("x-user")
        )
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        async with running(app) as client:
            response = await client.get("/export", headers={"Authorization": "Bearer a", "X-User": "a"})
            assert response.status_code == 200
    assert errors(caplog) == []


async def test_silent_without_user_keyed_limits(caplog: pytest.LogCaptureFixture) -> None:
    app = Starlette(routes=[Route("/plain", plain)])
    app.add_middleware(RateLimitMiddleware, default_limits="100/minute")
    transport = httpx.ASGITransport(app)
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            assert (await client.get("/plain")).status_code == 200
    assert errors(caplog) == []
