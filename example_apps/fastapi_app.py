"""The same app in FastAPI: the limits of ``ratelimits.toml`` plus one declared as a dependency,
and the pages of ``demo_pages`` (log in, session, chat, call room, theme flag).

    uvicorn --app-dir example_apps fastapi_app:app --host 127.0.0.1 --port 8000 --no-proxy-headers
    BISMAN_RATELIMIT_STORAGE_URL=redis://127.0.0.1:6390/0 \
        uvicorn --app-dir example_apps fastapi_app:app --no-proxy-headers

In a browser, log in at ``/login``; from curl, ``Authorization: Bearer <name>``
names the user (a stand-in for real authentication).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import demo_pages
from fastapi import Depends, FastAPI, Request, Response
from prometheus_client import CollectorRegistry
from pydantic import BaseModel
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.routing import Route

from bisman_ratelimit import AsyncLimiter
from bisman_ratelimit.metrics import RateLimitMetrics
from bisman_ratelimit.web import storage_url_from_env
from bisman_ratelimit_starlette import RateLimit, RateLimitMiddleware, SessionMiddleware
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
limiter = AsyncLimiter.from_url(STORAGE)
stores = demo_pages.build_stores(STORAGE)
registry = CollectorRegistry()
panel_engine = demo_pages.build_panel_engine(STORAGE, stores, limiter=limiter, config=CONFIG)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    await stores.aclose()
    await limiter.aclose()
    panel_engine.close()


app = FastAPI(title="bisman-ratelimit example", lifespan=lifespan)
app.state.stores = stores
# The operators' pages, for staff signed in through /login (alice).
app.mount(
    "/admin/ratelimit",
    AdminPanel(engine=panel_engine, authorize=demo_pages.staff_only, limiter=limiter, secret=ADMIN_SECRET),
)


class Credentials(BaseModel):
    username: str = ""
    password: str = ""


@app.get("/", response_model=None)
async def home(request: Request) -> Response | dict[str, str]:
    storage = STORAGE.split("://", 1)[0]
    if demo_pages.wants_html(request):
        return await demo_pages.home_page(request, storage)
    return {"app": "fastapi", "storage": storage}


@app.post("/auth/login")
async def login(credentials: Credentials, response: Response) -> dict[str, str]:
    if demo_pages.check_password(credentials.username or "alice", credentials.password):
        return {"login": "ok"}
    response.status_code = 401
    return {"login": "failed"}


@app.post("/api/calls", status_code=201)
async def calls() -> dict[str, str]:
    return {"call": "set up"}


@app.get("/chat/threads/{thread_id}/messages")
async def read_messages(thread_id: str) -> dict[str, Any]:
    return {"thread": thread_id, "messages": await stores.chat.last(thread_id)}


@app.post("/chat/threads/{thread_id}/messages", status_code=201, response_model=None)
async def post_message(thread_id: str, request: Request) -> Response:
    # JSON from the API, a form post from the chat page: the shared endpoint reads both.
    return await demo_pages.chat_messages(request)


# Declared in code: three exports a minute per user, no request parameter needed.
@app.post("/reports/export", status_code=202, dependencies=[Depends(RateLimit("3/minute", key="user"))])
async def export() -> dict[str, str]:
    return {"export": "queued"}


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


# Exempt from every limit, so the scrape still answers while the global limit sheds load.
app.router.routes.append(Route("/metrics", MetricsEndpoint(registry=registry)))
# The pages every example shows, shared with the Starlette example.
app.router.routes.extend(demo_pages.routes)

# add_middleware wraps: the last added runs first, so the limiter is added first,
# then authentication (the limits keyed by user need the user), then sessions (which name the user).
app.add_middleware(
    RateLimitMiddleware, limiter=limiter, config=CONFIG, metrics=RateLimitMetrics(registry=registry)
)
app.add_middleware(AuthenticationMiddleware, backend=demo_pages.DemoUsers())
app.add_middleware(
    SessionMiddleware,
    store=stores.sessions,
    secret_key=SECRET_KEY,
    # Plain http on localhost; keep the default (Secure cookies) behind https.
    https_only=os.environ.get("EXAMPLE_HTTPS", "") == "1",
)
