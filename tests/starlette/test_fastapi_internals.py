"""FastAPI's private router matcher (``_fastapi_internals.py``): read where FastAPI has it, never needed.

The check is run on the installed FastAPI, then forced to the public route
contexts: routes in included routers must be found, counted and named alike.
"""

from __future__ import annotations

import logging
from typing import Any

import fastapi
import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from support import ManualClock

from bisman_ratelimit import AsyncLimiter
from bisman_ratelimit.backends import MemoryStorage
from bisman_ratelimit.web import parse_config
from bisman_ratelimit_starlette import RateLimit, RateLimitMiddleware, _fastapi_internals
from bisman_ratelimit_starlette._fastapi_internals import CHECKS, included_matcher
from bisman_ratelimit_starlette._routes import resolve

CONFIG = {
    "defaults": {"limits": "5/minute", "algorithm": "fixed_window"},
    "routes": [{"path": "/api/users/{user_id}", "limits": "2/minute", "algorithm": "fixed_window"}],
}


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:2])


def make_app(clock: ManualClock) -> FastAPI:
    users = APIRouter(prefix="/users")

    @users.get("/{user_id}")
    async def user(user_id: int) -> dict[str, int]:
        return {"user": user_id}

    @users.post("/{user_id}/ban", dependencies=[Depends(RateLimit("1/minute", algorithm="fixed_window"))])
    async def ban(user_id: int) -> dict[str, int]:
        return {"banned": user_id}

    api = APIRouter(prefix="/api")
    api.include_router(users)

    @api.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    app = FastAPI()
    app.include_router(api)
    limiter = AsyncLimiter(MemoryStorage(clock=clock))
    app.add_middleware(RateLimitMiddleware, limiter=limiter, config=parse_config(CONFIG))
    return app


async def _responses() -> list[tuple[int, str | None, str | None, str | None]]:
    """Status and rate-limit fields of requests to routes of routers included in routers."""
    transport = httpx.ASGITransport(make_app(ManualClock()), client=("198.51.100.7", 5000))
    requests = [
        ("GET", "/api/users/1"),
        ("GET", "/api/users/2"),
        ("GET", "/api/users/3"),
        ("GET", "/api/health"),
        ("POST", "/api/users/1/ban"),
        ("POST", "/api/users/2/ban"),
        # A method the route does not take still names the route (a partial match).
        ("DELETE", "/api/health"),
        ("GET", "/api/nowhere"),
    ]
    found = []
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        for method, path in requests:
            response = await client.request(method, path)
            headers = response.headers
            found.append(
                (
                    response.status_code,
                    headers.get("ratelimit-policy"),
                    headers.get("ratelimit"),
                    headers.get("retry-after"),
                )
            )
    return found


EXPECTED = [
    (200, '"/api/users/{user_id}";q=2;w=60', '"/api/users/{user_id}";r=1;t=60', None),
    (200, '"/api/users/{user_id}";q=2;w=60', '"/api/users/{user_id}";r=0;t=60', None),
    (429, '"/api/users/{user_id}";q=2;w=60', '"/api/users/{user_id}";r=0;t=60', "60"),
    (200, '"default";q=5;w=60', '"default";r=4;t=60', None),
    # A limit declared on the route stands in for the defaults.
    (200, '"/api/users/{user_id}/ban";q=1;w=60', '"/api/users/{user_id}/ban";r=0;t=60', None),
    (429, '"/api/users/{user_id}/ban";q=1;w=60', '"/api/users/{user_id}/ban";r=0;t=60', "60"),
    (405, '"default";q=5;w=60', '"default";r=3;t=60', None),
    (404, '"default";q=5;w=60', '"default";r=2;t=60', None),
]


@pytest.fixture
def unchecked(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check runs afresh in this test, and is remembered only for it."""
    monkeypatch.setattr(CHECKS, "router", None)


async def test_the_installed_fastapi_is_read_as_expected(unchecked: None) -> None:
    app = FastAPI()
    app.include_router(APIRouter(prefix="/x"))
    included_matcher(app.router.routes[-1])
    # Lazily included routers came with FastAPI 0.120; before, their routes are copied into the app.
    assert CHECKS.router == ("private" if _release(fastapi.__version__) >= (0, 120) else "eager")
    assert await _responses() == EXPECTED


async def test_through_the_public_route_contexts_routes_are_found_alike(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(CHECKS, "router", "public")
    assert await _responses() == EXPECTED


def test_plain_routes_have_no_router_matcher(monkeypatch: pytest.MonkeyPatch) -> None:
    app: Any = FastAPI()

    @app.get("/alone")
    async def alone() -> None:
        return None

    for how in ("eager", "private", "public"):
        monkeypatch.setattr(CHECKS, "router", how)
        assert [included_matcher(route) for route in app.router.routes] == [None] * len(app.router.routes)


def test_a_matcher_that_answers_otherwise_is_set_aside_once(
    unchecked: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The check asks for a template its router does not have: no release of FastAPI answers it.
    monkeypatch.setattr(_fastapi_internals, "_PROBE_PATH", "/bisman-probe/{other}")
    app = make_app(ManualClock())
    scope = {"type": "http", "method": "GET", "path": "/api/users/7", "root_path": "", "headers": []}
    with caplog.at_level(logging.DEBUG, logger="bisman_ratelimit.starlette"):
        for _ in range(2):
            template, leaf = resolve(app.router.routes, dict(scope))
            assert (template, leaf.endpoint.__name__) == ("/api/users/{user_id}", "user")
    assert CHECKS.router == "public"
    assert [record.getMessage() for record in caplog.records] == [
        "FastAPI's included routers have no _match as expected: their route contexts serve instead"
    ]
