"""The admin panel as a mountable ASGI app, for Starlette and FastAPI.

::

    from bisman_ratelimit.ops import PanelEngine
    from bisman_ratelimit_starlette.admin import AdminPanel

    panel = AdminPanel(engine=PanelEngine(flags=FlagAdmin(url)), authorize=staff_only)
    app.mount("/admin/ratelimit", panel)

``authorize`` takes the request and returns who is asking (a name for the
audit trail), or ``None`` to refuse with 403; it may be async. There is no
default: the panel does not start without one.

Every write carries a CSRF token: an HMAC, under the panel's secret, of a
random value in a ``SameSite=Strict`` cookie and of the user's name (a
signed double-submit token). Every response is ``Cache-Control:
no-store``, errors included; a page or write that Redis fails under
answers 503 with the error page. The panel's own requests are counted by the library (per
user, ``rate``), and ``RateLimitMiddleware`` leaves the panel out of
every other limit, the global one included, so it answers under overload.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, quote

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import Receive, Scope, Send

from bisman_ratelimit import AsyncLimiter, InvalidArgument, Limiter, StorageError
from bisman_ratelimit.ops import ADMIN_KEY, PAGES, PanelEngine

from ._spec import MARKER, Marker

__all__ = ["AdminPanel"]

Authorize = Callable[[Request], "str | Awaitable[str | None] | None"]

CSRF_COOKIE = "bisman_admin_csrf"
CSRF_FIELD = "csrf_token"
_MAX_BODY = 64 * 1024
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; form-action 'self'",
}
_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("bisman_ratelimit_starlette", "templates/admin"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
_TEMPLATES.filters["utc"] = lambda at: time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


class AdminPanel:
    """The admin panel: flags, rate limits, sessions, namespaces, health."""

    def __init__(
        self,
        *,
        engine: PanelEngine,
        authorize: Authorize,
        secret: str | bytes | None = None,
        limiter: Limiter | AsyncLimiter | None = None,
        rate: str = "120/minute",
        title: str = "bisman-ratelimit",
    ) -> None:
        if not callable(authorize):
            raise InvalidArgument(
                "AdminPanel needs authorize=, a callable of the request that returns who is asking "
                "or None to refuse: the panel is never open to everyone"
            )
        if not isinstance(engine, PanelEngine):
            raise InvalidArgument(f"engine must be a PanelEngine, got {engine!r}")
        if secret is None:
            # Forms signed by one process are refused by another: give a secret when there are several.
            secret = secrets.token_bytes(32)
        if isinstance(secret, str):
            secret = secret.encode()
        if not isinstance(secret, bytes) or len(secret) < 16:
            raise InvalidArgument("the admin panel's secret must be at least 16 bytes")
        self.engine = engine
        self.authorize = authorize
        self._secret = secret
        self.limiter = limiter if limiter is not None else Limiter()
        self.rate = rate
        self.title = title
        # The panel checks rate itself; the middleware leaves it out of every limit, the global one too.
        setattr(self, MARKER, Marker(exempt=True))

    def __repr__(self) -> str:
        return f"<AdminPanel rate={self.rate!r}>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise RuntimeError(f"AdminPanel serves HTTP only, got a {scope['type']!r} scope")
        request = Request(scope, receive)
        try:
            response = await self._handle(request)
        except _Refused as refused:
            response = self._render(request, "error.html", {"message": refused.message}, refused.status)
        response.headers.update(_HEADERS)
        await response(scope, receive, send)

    # -- plumbing

    def _base(self, request: Request) -> str:
        return str(request.scope.get("root_path", ""))

    def _route(self, request: Request) -> str:
        path: str = request.scope["path"]
        root = self._base(request)
        if root and path.startswith(root):
            path = path[len(root) :]
        return path.strip("/") or "flags"

    def _token(self, nonce: str, who: str) -> str:
        return hmac.new(self._secret, f"{nonce}\0{who}".encode(), hashlib.sha256).hexdigest()

    def _render(
        self, request: Request, template: str, context: dict[str, Any], status: int = 200
    ) -> HTMLResponse:
        nonce = request.cookies.get(CSRF_COOKIE) or ""
        fresh = len(nonce) != 43
        if fresh:
            nonce = secrets.token_urlsafe(32)
        who = request.scope.get("bisman_admin_user", "")
        page = _TEMPLATES.get_template(template).render(
            base=self._base(request),
            pages=PAGES,
            title=self.title,
            who=who,
            csrf_field=CSRF_FIELD,
            csrf_token=self._token(nonce, who),
            **context,
        )
        response = HTMLResponse(page, status_code=status)
        if fresh:
            response.set_cookie(
                CSRF_COOKIE,
                nonce,
                path=self._base(request) or "/",
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
        return response

    async def _form(self, request: Request, who: str) -> dict[str, str]:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > _MAX_BODY:
                raise _Refused(413, "form too large")
        fields = {name: values[0] for name, values in parse_qs(body.decode("utf-8", "replace")).items()}
        nonce = request.cookies.get(CSRF_COOKIE, "")
        token = fields.get(CSRF_FIELD, "")
        if not nonce or not token or not hmac.compare_digest(token, self._token(nonce, who)):
            raise _Refused(403, "CSRF token missing or wrong: reload the page and try again")
        return fields

    async def _who(self, request: Request) -> str:
        who = self.authorize(request)
        if inspect.isawaitable(who):
            who = await who
        if who is None or who == "":
            raise _Refused(403, "not authorized to use the admin panel")
        if not isinstance(who, str):
            raise TypeError(f"authorize() must return a str or None, got {who!r}")
        request.scope["bisman_admin_user"] = who
        return who

    async def _count(self, who: str) -> None:
        key = ADMIN_KEY + who
        try:
            if isinstance(self.limiter, AsyncLimiter):
                decision = await self.limiter.hit(key, self.rate)
            else:
                decision = self.limiter.hit(key, self.rate)
        except StorageError:
            return  # the panel helps most during an outage: it stays open
        if not decision.allowed:
            wait = f"{decision.retry_after:.0f}"
            raise _Refused(429, f"too many requests to the admin panel: try again in {wait} s")

    def _redirect(self, request: Request, page: str, note: str) -> Response:
        return RedirectResponse(f"{self._base(request)}/{page}?note={quote(note)}", status_code=303)

    # -- pages and writes

    async def _handle(self, request: Request) -> Response:
        who = await self._who(request)
        await self._count(who)
        try:
            return await self._serve(request, who)
        except InvalidArgument as exc:
            raise _Refused(400, str(exc)) from None
        except StorageError as exc:
            # Through the usual error page, so an outage answers with the panel's headers too.
            raise _Refused(503, PanelEngine.failure_message(exc)) from None

    async def _serve(self, request: Request, who: str) -> Response:
        route = self._route(request)
        method = request.method
        if method in ("GET", "HEAD"):
            if route not in PAGES:
                raise _Refused(404, f"no such page: {route!r}")
            data = await run_in_threadpool(self.engine.page, route)
            note = request.query_params.get("note", "")
            return self._render(request, f"{route}.html", {"page": route, "data": data, "note": note})
        if method != "POST":
            raise _Refused(405, "method not allowed")
        fields = await self._form(request, who)
        engine = self.engine
        if route == "flags/set":
            name, value, kind = (fields.get(field, "") for field in ("name", "value", "type"))
            flag = await run_in_threadpool(engine.set_flag, who, name, value, kind)
            return self._redirect(request, "flags", f"set {flag.name}")
        if route == "flags/delete":
            name = fields.get("name", "")
            await run_in_threadpool(engine.delete_flag, who, name)
            return self._redirect(request, "flags", f"deleted {name}")
        if route == "limits/reset":
            token = fields.get("client", "")
            if fields.get("confirm") != "yes":
                client = await run_in_threadpool(engine.client, token)
                return self._render(request, "confirm_reset.html", {"page": "limits", "client": client})
            client = await run_in_threadpool(engine.reset_client, who, token)
            return self._redirect(request, "limits", f"reset {client.key} ({client.limit})")
        if route == "sessions/logout":
            user = fields.get("user", "")
            ended = await run_in_threadpool(engine.logout_everywhere, who, user)
            return self._redirect(request, "sessions", f"logged {user} out of {ended} sessions")
        raise _Refused(404, f"no such action: {route!r}")
