"""A burst of concurrent requests on a healthy Redis: the SessionMiddleware answers every one.

The app runs in a real uvicorn process (one worker) with a store built from
a URL; 200 clients, each on a connection of its own, read and write one
session at once. Before, a burst opened a Redis connection per request
under the budget's connect timeout, and the requests that waited for a
connection of the pool waited the budget of a crowded event loop: with the
default 50 ms, 130 of 200 were answered 503, then 27 and 10 of the bursts
after. The store's connections are now opened at startup, and the calls
that come together go out together on a few of them.

The budget here is 200 ms, as in ``test_starlette_under_load.py``: other
load on a shared test machine can keep Redis itself off the CPU for 50 ms,
and that is not what this test is about. Before, it still got 503 for
about a quarter of the writes.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from support import served

from bisman_ratelimit.stores import AsyncSessionStore
from bisman_ratelimit.testing import free_port
from bisman_ratelimit_starlette import SessionMiddleware

HERE = Path(__file__).resolve().parent
SECRET = "session-burst-secret-" * 2
BURST = 200
# The store's connections carry this name, so that the test can count them.
NAME = "session-burst-app"


async def login(request: Request) -> JSONResponse:
    request.session.rotate(user_id="alice")
    request.session["user"] = "alice"
    return JSONResponse({})


async def visit(request: Request) -> JSONResponse:
    # Each request adds a field of its own: the writes of the burst all land, or the count says so.
    n = request.query_params["n"]
    request.session[f"visit{n}"] = int(n)
    return JSONResponse({"user": request.session.get("user")})


async def show(request: Request) -> JSONResponse:
    return JSONResponse(dict(request.session))


def session_app() -> Starlette:
    """The app uvicorn serves (``--factory``), on the store at ``BURST_STORE``."""
    app = Starlette(
        routes=[Route("/login", login, methods=["POST"]), Route("/visit", visit), Route("/show", show)]
    )
    store = AsyncSessionStore(os.environ["BURST_STORE"])
    app.add_middleware(SessionMiddleware, store=store, secret_key=SECRET, https_only=False)
    return app


@pytest.fixture
def server(redis_url: str) -> Iterator[str]:
    port = free_port()
    path = os.pathsep.join([str(HERE.parent), str(HERE), os.environ.get("PYTHONPATH", "")])
    store = f"{redis_url}?timeout=200ms&client_name={NAME}"
    env = {**os.environ, "BURST_STORE": store, "PYTHONPATH": path}
    command = [
        sys.executable, "-m", "uvicorn", "--factory", "test_sessions_burst:session_app",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--log-level", "warning",
    ]  # fmt: skip
    # uvicorn listens once the lifespan startup (which opens the store's connections) is over.
    with served(command, port, env) as base:
        yield base


async def test_a_burst_of_session_requests_on_a_healthy_redis_gets_no_503(
    server: str, redis_client: redis.Redis
) -> None:
    # The worker opened its store's pool at startup, before any request: no request opens one.
    named = [entry for entry in redis_client.client_list() if entry["name"] == NAME]
    assert len(named) == 64
    async with httpx.AsyncClient(base_url=server, timeout=30) as one:
        cookie = (await one.post("/login")).cookies["session"]
    headers = {"cookie": f"session={cookie}"}
    # A connection per request, as 200 browsers would open.
    limits = httpx.Limits(max_connections=BURST, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=server, headers=headers, timeout=30, limits=limits) as client:
        # The first burst meets the connections the app opened at startup; the second, the same ones.
        writes = await asyncio.gather(*(client.get("/visit", params={"n": n}) for n in range(BURST)))
        reads = await asyncio.gather(*(client.get("/show") for _ in range(BURST)))
        assert Counter(response.status_code for response in writes) == {200: BURST}
        assert Counter(response.status_code for response in reads) == {200: BURST}
        assert {response.json()["user"] for response in writes} == {"alice"}
        # Every write landed, each in its own field of the one session.
        assert (await client.get("/show")).json() == {
            "user": "alice",
            **{f"visit{n}": n for n in range(BURST)},
        }
