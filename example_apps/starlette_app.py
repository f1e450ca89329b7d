"""A small Starlette app on bisman-ratelimit: rate limits from ``ratelimits.toml``, and the
sessions, chat context, call presence and feature flags of the same library.

Run it on the in-memory default (every store in the process)::

    uvicorn --app-dir example_apps starlette_app:app --host 127.0.0.1 --port 8000 --no-proxy-headers

or on Redis (rate limits, sessions, chat, presence and flags all there)::

    BISMAN_RATELIMIT_STORAGE_URL=redis://127.0.0.1:6390/0 \
        uvicorn --app-dir example_apps starlette_app:app --no-proxy-headers

``--no-proxy-headers`` leaves forwarding headers to the middleware, which
believes them only from the proxies it is told to trust (uvicorn's default
would let any local client pick its own address).

In a browser, log in at ``/login`` as a demo user (``demo_pages.DEMO_USERS``);
from curl, ``Authorization: Bearer <name>`` names the user (a stand-in for
real authentication). Behind a proxy, set ``BISMAN_RATELIMIT_TRUSTED_PROXIES``
to a hop count (``1``) or to CIDRs (``10.0.0.0/8,192.168.0.0/16``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import demo_pages
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from bisman_ratelimit import AsyncLimiter
from bisman_ratelimit.metrics import RateLimitMetrics
from bisman_ratelimit.web import storage_url_from_env
from bisman_ratelimit_starlette import RateLimitMiddleware, SessionMiddleware, limit
from bisman_ratelimit_starlette.admin import AdminPanel
from bisman_ratelimit_starlette.metrics import MetricsEndpoint

CONFIG = Path(__file__).with_name("ratelimits.toml")
# The one name every plugin, example and the command line read; a near miss warns.
STORAGE = storage_url_from_env("memory://")
# A demo key: set a long random one of your own in any real deployment.
SECRET_KEY = os.environ.get("EXAMPLE_SECRET_KEY", "example-only-insecure-key-never-deploy-this-one")
# Signs the admin panel's forms: the same in every worker process (a form that one
# worker signed is refused by another that signs with a key of its own).
ADMIN_SECRET = os.environ.get("EXAMPLE_ADMIN_SECRET", SECRET_KEY + ":admin-panel")

demo_pages.configure_logging()


def trusted_proxies() -> int | list[str] | None:
    value = os.environ.get("BISMAN_RATELIMIT_TRUSTED_PROXIES", "").strip()
    if not value:
        return None
    return int(value) if value.isdigit() else [part.strip() for part in value.split(",")]


async def home(request: Request) -> Response:
    storage = STORAGE.split("://", 1)[0]
    if demo_pages.wants_html(request):
        return await demo_pages.home_page(request, storage)
    return JSONResponse({"app": "starlette", "storage": storage})


async def login(request: Request) -> Response:
    """The API's login (JSON); browsers use the form at ``/login``."""
    form = await request.json() if request.headers.get("content-type") == "application/json" else {}
    if demo_pages.check_password(str(form.get("username", "alice")), str(form.get("password", ""))):
        return JSONResponse({"login": "ok"})
    return JSONResponse({"login": "failed"}, status_code=401)


async def calls(request: Request) -> Response:
    return JSONResponse({"call": "set up", "by": request.user.display_name or None}, status_code=201)


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


limiter = AsyncLimiter.from_url(STORAGE)
stores = demo_pages.build_stores(STORAGE)
registry = CollectorRegistry()
metrics = RateLimitMetrics(registry=registry)
panel_engine = demo_pages.build_panel_engine(STORAGE, stores, limiter=limiter, config=CONFIG)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    yield
    await stores.aclose()
    await limiter.aclose()
    panel_engine.close()


app = Starlette(
    routes=[
        Route("/", home),
        Route("/auth/login", login, methods=["POST"]),
        Route("/api/calls", calls, methods=["POST"]),
        Route("/chat/threads/{thread_id}/messages", demo_pages.chat_messages, methods=["GET", "POST"]),
        Route("/reports/export", export, methods=["POST"]),
        Route("/health", health),
        # Exempt from every limit, so the scrape still answers while the global limit sheds load.
        Route("/metrics", MetricsEndpoint(registry=registry)),
        WebSocketRoute("/chat/ws", chat_socket),
        *demo_pages.routes,
        # The operators' pages, for staff signed in through /login (alice).
        Mount(
            "/admin/ratelimit",
            AdminPanel(
                engine=panel_engine, authorize=demo_pages.staff_only, limiter=limiter, secret=ADMIN_SECRET
            ),
        ),
    ],
    middleware=[
        # Sessions first, then the user they name, so that limits keyed by user see the user.
        Middleware(
            SessionMiddleware,
            store=stores.sessions,
            secret_key=SECRET_KEY,
            # Plain http on localhost; keep the default (Secure cookies) behind https.
            https_only=os.environ.get("EXAMPLE_HTTPS", "") == "1",
        ),
        Middleware(AuthenticationMiddleware, backend=demo_pages.DemoUsers()),
        Middleware(
            RateLimitMiddleware,
            limiter=limiter,
            config=CONFIG,
            trusted_proxies=trusted_proxies(),
            websocket_message_limits="30/minute",
            metrics=metrics,
        ),
    ],
    lifespan=lifespan,
)
app.state.stores = stores
