"""A small Starlette app protected by bisman-ratelimit, with the limits of ``ratelimits.toml``.

Run it on the in-memory default::

    uvicorn --app-dir example_apps starlette_app:app --host 127.0.0.1 --port 8000 --no-proxy-headers

or on Redis::

    BISMAN_RATELIMIT_STORAGE_URL=redis://127.0.0.1:6390/0 \
        uvicorn --app-dir example_apps starlette_app:app --no-proxy-headers

``--no-proxy-headers`` leaves forwarding headers to the middleware, which
believes them only from the proxies it is told to trust (uvicorn's default
would let any local client pick its own address).

Users are whoever the ``Authorization: Bearer <name>`` header names (a stand-in
for real authentication). Behind a proxy, set ``BISMAN_RATELIMIT_TRUSTED_PROXIES``
to a hop count (``1``) or to CIDRs (``10.0.0.0/8,192.168.0.0/16``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from bisman_ratelimit import AsyncLimiter
from bisman_ratelimit.ops import PanelEngine
from bisman_ratelimit.web import storage_url_from_env
from bisman_ratelimit_starlette import RateLimitMiddleware, limit
from bisman_ratelimit_starlette.admin import AdminPanel

CONFIG = Path(__file__).with_name("ratelimits.toml")
# The one name every plugin, example and the command line read; a near miss warns.
STORAGE = storage_url_from_env("memory://")


def trusted_proxies() -> int | list[str] | None:
    value = os.environ.get("BISMAN_RATELIMIT_TRUSTED_PROXIES", "").strip()
    if not value:
        return None
    return int(value) if value.isdigit() else [part.strip() for part in value.split(",")]


class BearerNames(AuthenticationBackend):
    """``Authorization: Bearer alice`` is user alice. For the demo only."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        scheme, _, name = conn.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not name:
            return None
        return AuthCredentials(["authenticated"]), SimpleUser(name)


async def home(request: Request) -> Response:
    return JSONResponse({"app": "starlette", "storage": STORAGE.split("://", 1)[0]})


async def login(request: Request) -> Response:
    form = await request.json() if request.headers.get("content-type") == "application/json" else {}
    if form.get("password") == "correct horse":
        return JSONResponse({"login": "ok"})
    return JSONResponse({"login": "failed"}, status_code=401)


async def calls(request: Request) -> Response:
    return JSONResponse({"call": "set up", "by": request.user.display_name or None}, status_code=201)


async def messages(request: Request) -> Response:
    thread = request.path_params["thread_id"]
    if request.method == "POST":
        return JSONResponse({"thread": thread, "posted": True}, status_code=201)
    return JSONResponse({"thread": thread, "messages": []})


@limit("3/minute", key="user")
async def export(request: Request) -> Response:
    """Declared in code rather than in the file: three exports a minute per user."""
    return JSONResponse({"export": "queued"}, status_code=202)


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def chat_socket(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect:
        pass


def admin_only(request: Request) -> str | None:
    """Who may use the admin panel: the logged-in user ``admin`` (put your staff check here)."""
    user = request.user
    return user.display_name if user.is_authenticated and user.display_name == "admin" else None


limiter = AsyncLimiter.from_url(STORAGE)
panel_engine = PanelEngine.from_url(STORAGE, limiter=limiter, config=CONFIG)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    yield
    await limiter.aclose()
    panel_engine.close()


app = Starlette(
    routes=[
        Route("/", home),
        Route("/auth/login", login, methods=["POST"]),
        Route("/api/calls", calls, methods=["POST"]),
        Route("/chat/threads/{thread_id}/messages", messages, methods=["GET", "POST"]),
        Route("/reports/export", export, methods=["POST"]),
        Route("/health", health),
        WebSocketRoute("/chat/ws", chat_socket),
        Mount("/admin/ratelimit", AdminPanel(engine=panel_engine, authorize=admin_only, limiter=limiter)),
    ],
    middleware=[
        # Authentication runs first, so that limits keyed by user see the user.
        Middleware(AuthenticationMiddleware, backend=BearerNames()),
        Middleware(
            RateLimitMiddleware,
            limiter=limiter,
            config=CONFIG,
            trusted_proxies=trusted_proxies(),
            websocket_message_limits="30/minute",
        ),
    ],
    lifespan=lifespan,
)
