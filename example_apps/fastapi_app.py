"""The same API in FastAPI, with the limits of ``ratelimits.toml`` plus one declared as a dependency.

    uvicorn --app-dir example_apps fastapi_app:app --host 127.0.0.1 --port 8000 --no-proxy-headers
    BISMAN_RATELIMIT_STORAGE_URL=redis://127.0.0.1:6390/0 \
        uvicorn --app-dir example_apps fastapi_app:app --no-proxy-headers

Users are whoever the ``Authorization: Bearer <name>`` header names (a stand-in
for real authentication).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Response
from pydantic import BaseModel
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request

from bisman_ratelimit import AsyncLimiter
from bisman_ratelimit.ops import PanelEngine
from bisman_ratelimit.web import storage_url_from_env
from bisman_ratelimit_starlette import RateLimit, RateLimitMiddleware
from bisman_ratelimit_starlette.admin import AdminPanel

CONFIG = Path(__file__).with_name("ratelimits.toml")
# The one name every plugin, example and the command line read; a near miss warns.
STORAGE = storage_url_from_env("memory://")

limiter = AsyncLimiter.from_url(STORAGE)
panel_engine = PanelEngine.from_url(STORAGE, limiter=limiter, config=CONFIG)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    await limiter.aclose()
    panel_engine.close()


def admin_only(request: Request) -> str | None:
    """Who may use the admin panel: the logged-in user ``admin`` (put your staff check here)."""
    user = request.user
    return user.display_name if user.is_authenticated and user.display_name == "admin" else None


app = FastAPI(title="bisman-ratelimit example", lifespan=lifespan)
app.mount("/admin/ratelimit", AdminPanel(engine=panel_engine, authorize=admin_only, limiter=limiter))


class BearerNames(AuthenticationBackend):
    """``Authorization: Bearer alice`` is user alice. For the demo only."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        scheme, _, name = conn.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not name:
            return None
        return AuthCredentials(["authenticated"]), SimpleUser(name)


class Credentials(BaseModel):
    username: str = ""
    password: str = ""


@app.get("/")
async def home() -> dict[str, str]:
    return {"app": "fastapi", "storage": STORAGE.split("://", 1)[0]}


@app.post("/auth/login")
async def login(credentials: Credentials, response: Response) -> dict[str, str]:
    if credentials.password == "correct horse":
        return {"login": "ok"}
    response.status_code = 401
    return {"login": "failed"}


@app.post("/api/calls", status_code=201)
async def calls() -> dict[str, str]:
    return {"call": "set up"}


@app.get("/chat/threads/{thread_id}/messages")
async def read_messages(thread_id: str) -> dict[str, Any]:
    return {"thread": thread_id, "messages": []}


@app.post("/chat/threads/{thread_id}/messages", status_code=201)
async def post_message(thread_id: str) -> dict[str, Any]:
    return {"thread": thread_id, "posted": True}


# Declared in code: three exports a minute per user, no request parameter needed.
@app.post("/reports/export", status_code=202, dependencies=[Depends(RateLimit("3/minute", key="user"))])
async def export() -> dict[str, str]:
    return {"export": "queued"}


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


# add_middleware wraps: the last added runs first, so authentication is added after the limiter.
app.add_middleware(RateLimitMiddleware, limiter=limiter, config=CONFIG)
app.add_middleware(AuthenticationMiddleware, backend=BearerNames())
