"""The pages the Starlette and FastAPI examples share: log in, chat, a call room, the theme flag.

Server-rendered HTML with no script and a few lines of CSS, so that every
page works with a plain browser (or curl). The stores live on
``app.state.stores``, built by :func:`build_stores` from the same URL as
the rate limits: ``memory://`` keeps everything in the process, a Redis
URL puts sessions, chat context, presence and flags on Redis too.
"""

from __future__ import annotations

import hashlib
import html
import logging
import os
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from bisman_ratelimit import AsyncLimiter
from bisman_ratelimit.ops import PanelEngine
from bisman_ratelimit.stores import (
    AsyncChatContext,
    AsyncFlags,
    AsyncPresence,
    AsyncSessionStore,
    FlagAdmin,
    MemoryBackend,
    SessionStore,
)

# Two demo accounts: one staff (may open the operator pages), one not.
DEMO_USERS = {
    "alice": {"password": "correct horse", "staff": True},
    "bob": {"password": "battery staple", "staff": False},
}
CHAT_KEEP = 30  # the seed keeps the last 30 messages of a thread (chat:ctx)


def configure_logging() -> None:
    """Shadow refusals, outages and the breaker's changes, on stderr with the logger's name.

    The library logs them at WARNING (and recoveries at INFO) without a handler of its own:
    this gives them one, so they show whatever logging the server sets up.
    """
    library = logging.getLogger("bisman_ratelimit")
    if library.handlers:  # imported twice (uvicorn --reload): one handler is enough
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s [%(name)s] %(message)s"))
    library.addHandler(handler)
    library.setLevel(logging.INFO)
    library.propagate = False


@dataclass(frozen=True)
class Stores:
    """Every store the example uses, on one backend."""

    backend: MemoryBackend | str  # the URL of a Redis server
    sessions: AsyncSessionStore
    chat: AsyncChatContext
    presence: AsyncPresence
    flags: AsyncFlags

    async def aclose(self) -> None:
        for store in (self.sessions, self.chat, self.presence, self.flags):
            await store.aclose()


def build_stores(url: str) -> Stores:
    # In memory, the stores must share one backend: the flags cache hears a change
    # only on the backend it was made on.
    backend = MemoryBackend() if url.startswith("memory://") else url
    return Stores(
        backend=backend,
        sessions=AsyncSessionStore(backend),
        chat=AsyncChatContext(backend, keep=CHAT_KEEP),
        presence=AsyncPresence(backend),
        flags=AsyncFlags(backend, max_age=5.0),
    )


def build_panel_engine(
    url: str, stores: Stores, *, limiter: AsyncLimiter, config: str | os.PathLike[str]
) -> PanelEngine:
    """The admin panel's engine over the example's own stores and limiter."""
    if isinstance(stores.backend, MemoryBackend):
        # On memory the panel must change this process's flags and sessions, not stores of its own.
        return PanelEngine.from_url(
            url,
            limiter=limiter,
            config=config,
            flags=FlagAdmin(stores.backend),
            sessions=SessionStore(stores.backend),
        )
    return PanelEngine.from_url(url, limiter=limiter, config=config)


def staff_only(request: Request) -> str | None:
    """Who may use the admin panel: a signed-in staff user, named in the panel's audit trail."""
    return str(request.user.display_name) if "staff" in request.auth.scopes else None


class DemoUsers(AuthenticationBackend):
    """The user the session names (after a log in), else ``Authorization: Bearer <name>`` (for curl)."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        name = conn.session.get("user") if "session" in conn.scope else None
        if not name:
            scheme, _, bearer = conn.headers.get("authorization", "").partition(" ")
            name = bearer.strip() if scheme.lower() == "bearer" else None
        if not name:
            return None
        staff = DEMO_USERS.get(name, {}).get("staff", False)
        return AuthCredentials(["authenticated", "staff"] if staff else ["authenticated"]), SimpleUser(name)


def _stores(request: Request) -> Stores:
    stores: Stores = request.app.state.stores
    return stores


def wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def _e(value: object) -> str:
    return html.escape(str(value))


STYLE = """
body { font: 16px/1.5 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; }
body.dark { background: #15171c; color: #e6e6e6; } body.dark a { color: #8ab4f8; }
nav a { margin-right: 1rem; } .who { margin: 1rem 0; } li { margin: .2rem 0; } .error { color: #c0392b; }
form.inline { display: inline; } input, button { font: inherit; }
"""


async def page(request: Request, title: str, body: str, *, status_code: int = 200) -> HTMLResponse:
    """``body`` (already escaped) in the site's layout, light or dark as the ``darkMode`` flag says."""
    dark = await _stores(request).flags.is_enabled("darkMode")
    user = request.user.display_name if request.user.is_authenticated else ""
    who = (
        f'signed in as <b id="user">{_e(user)}</b> '
        '<form class="inline" method="post" action="/logout"><button id="logout">Log out</button></form>'
        if user
        else '<a href="/login" id="login-link">Log in</a>'
    )
    document = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title><style>{STYLE}</style></head>
<body class="{"dark" if dark else "light"}" data-theme="{"dark" if dark else "light"}">
<nav><a href="/">Home</a><a href="/session">Session</a><a href="/chat/lobby">Chat</a>
<a href="/calls/standup">Call room</a><a href="/metrics">Metrics</a>
<a href="/admin/ratelimit/flags">Admin</a></nav>
<div class="who">{who}</div>
<h1>{_e(title)}</h1>
{body}
</body></html>"""
    return HTMLResponse(document, status_code=status_code, headers={"Cache-Control": "no-store"})


async def home_page(request: Request, storage: str) -> Response:
    body = f"""<p>Storage: <b id="storage">{_e(storage)}</b>
(rate limits, sessions, chat, presence, flags).</p>
<ul>
<li><a href="/login">Log in</a> as alice (staff) or bob: the session id changes at log in.</li>
<li><a href="/session">Session</a>: what the session holds, renewed on every request.</li>
<li><a href="/chat/lobby">Chat</a>: the last {CHAT_KEEP} messages of a thread (chat:ctx).</li>
<li><a href="/calls/standup">Call room</a>: join, heartbeat, leave (call:room).</li>
<li><a href="/flags">Flags</a>: <code>darkMode</code> switches this page's theme.</li>
<li><a href="/metrics">Metrics</a>: Prometheus, never rate limited.</li>
<li><a href="/admin/ratelimit/flags">Admin panel</a>: flags, limited clients, sessions
(staff only: alice).</li>
</ul>"""
    return await page(request, "bisman-ratelimit example", body)


async def login_form(request: Request) -> Response:
    return await page(request, "Log in", _login_form(""))


def _login_form(error: str) -> str:
    message = f'<p class="error" id="error">{_e(error)}</p>' if error else ""
    return f"""{message}<form method="post" action="/login">
<label>User <input name="username" id="username" autocomplete="username"></label>
<label>Password <input name="password" id="password" type="password"></label>
<button id="submit">Log in</button></form>
<p>Demo users: <code>alice</code> / <code>correct horse</code> (staff),
<code>bob</code> / <code>battery staple</code>. Five failed tries a minute per address, then 429.</p>"""


async def form_fields(request: Request) -> dict[str, str]:
    """The fields of a form post (``application/x-www-form-urlencoded``: all these pages send)."""
    # Parsed here rather than with request.form(), which needs python-multipart for this alone.
    return dict(parse_qsl((await request.body()).decode("utf-8", "replace"), max_num_fields=20))


def check_password(username: str, password: str) -> bool:
    user = DEMO_USERS.get(username)
    return user is not None and user["password"] == password


async def login_submit(request: Request) -> Response:
    form = await form_fields(request)
    username, password = form.get("username", ""), form.get("password", "")
    if not check_password(username, password):
        # A 401 is what the limits file counts (deduct_when): only failed logins use up the limit.
        return await page(request, "Log in", _login_form("Wrong user or password."), status_code=401)
    # A new id at every change of privilege, so that an id planted before the login is worthless.
    request.session.rotate(user_id=username)
    request.session["user"] = username
    request.session["logged_in_at"] = int(time.time())
    return RedirectResponse("/session", status_code=303)


async def logout(request: Request) -> Response:
    request.session.clear()  # deletes the session from the store and clears the cookie
    return RedirectResponse("/", status_code=303)


def fingerprint(session_id: str | None) -> str:
    """A short digest of the session id: it shows the id change without showing the id."""
    return "none" if session_id is None else hashlib.sha256(session_id.encode()).hexdigest()[:10]


async def session_page(request: Request) -> Response:
    session = request.session
    session["views"] = session.get("views", 0) + 1
    stored = None if session.id is None else await _stores(request).sessions.load(session.id)
    rows = "".join(
        f'<li><code>{_e(name)}</code> = <span id="field-{_e(name)}">{_e(value)}</span></li>'
        for name, value in sorted(dict.items(session))
    )
    ttl = (
        "a new session: it is stored when this response is sent"
        if stored is None
        else f'idle timeout renewed to <b id="ttl">{round(stored.ttl)}</b> s by this request; '
        f"ends for good in {round(stored.absolute_expires_at - time.time())} s"
    )
    body = f"""<p>Session <code id="fingerprint">{fingerprint(session.id)}</code> (a digest of its id).</p>
<p>{ttl}</p><ul id="session-data">{rows}</ul>"""
    return await page(request, "Session", body)


def _author(request: Request) -> str:
    return request.user.display_name if request.user.is_authenticated else "anonymous"


async def chat_page(request: Request) -> Response:
    thread = request.path_params["thread_id"]
    messages = await _stores(request).chat.last(thread)
    items = "".join(
        f'<li class="message"><b>{_e(m.get("by", "?"))}</b>: {_e(m.get("text", ""))}</li>' for m in messages
    )
    body = f"""<p>The last {CHAT_KEEP} messages of thread <code>{_e(thread)}</code>, oldest first.</p>
<ol id="messages">{items}</ol>
<form method="post" action="/chat/threads/{_e(thread)}/messages">
<input name="text" id="text" maxlength="500" required> <button id="send">Send</button></form>"""
    return await page(request, f"Chat: {thread}", body)


async def chat_messages(request: Request) -> Response:
    """``GET``: the last messages as JSON; ``POST`` (form or JSON ``{"text": ...}``): append one."""
    thread = request.path_params["thread_id"]
    chat = _stores(request).chat
    if request.method == "GET":
        return JSONResponse({"thread": thread, "messages": await chat.last(thread)})
    if request.headers.get("content-type", "").startswith("application/json"):
        text = str((await request.json()).get("text", ""))
    else:
        text = (await form_fields(request)).get("text", "")
    if not text.strip():
        return JSONResponse({"error": "a message needs some text"}, status_code=422)
    number = await chat.append(thread, {"by": _author(request), "text": text[:500], "at": time.time()})
    if wants_html(request):
        return RedirectResponse(f"/chat/{thread}", status_code=303)
    return JSONResponse({"thread": thread, "posted": True, "number": number}, status_code=201)


async def call_page(request: Request) -> Response:
    room = request.path_params["room"]
    participants = await _stores(request).presence.participants(room)
    items = "".join(f'<li class="participant">{_e(p.id)}</li>' for p in participants)
    buttons = "".join(
        f'<form class="inline" method="post" action="/calls/{_e(room)}/{action}">'
        f'<button id="{action}">{label}</button></form> '
        for action, label in (("join", "Join"), ("heartbeat", "Heartbeat"), ("leave", "Leave"))
    )
    body = f"""<p>Who is in room <code>{_e(room)}</code>:
a participant with no heartbeat for 30 s drops out.</p>
<ul id="participants">{items}</ul>
{buttons if request.user.is_authenticated else '<p><a href="/login">Log in</a> to join.</p>'}"""
    return await page(request, f"Call room: {room}", body)


async def call_action(request: Request) -> Response:
    """Join, heartbeat or leave a room as the signed-in user."""
    room, action = request.path_params["room"], request.path_params["action"]
    if not request.user.is_authenticated:
        return JSONResponse({"error": "log in to take part in a call"}, status_code=401)
    presence = _stores(request).presence
    operations = {"join": presence.join, "heartbeat": presence.heartbeat, "leave": presence.leave}
    if action not in operations:
        error = f"unknown action {action!r}: join, heartbeat or leave"
        return JSONResponse({"error": error}, status_code=404)
    state = await operations[action](room, request.user.display_name)
    if wants_html(request):
        return RedirectResponse(f"/calls/{room}", status_code=303)
    return JSONResponse({"room": room, "present": state.present, "participants": state.participants})


async def participants(request: Request) -> Response:
    room = request.path_params["room"]
    people = await _stores(request).presence.participants(room)
    return JSONResponse({"room": room, "participants": [p.id for p in people]})


async def flags_view(request: Request) -> Response:
    flags: dict[str, Any] = {name: flag.value for name, flag in (await _stores(request).flags.all()).items()}
    if not wants_html(request):
        return JSONResponse({"flags": flags})
    items = "".join(
        f"<li><code>{_e(name)}</code> = {_e(value)}</li>" for name, value in sorted(flags.items())
    )
    body = f"""<ul id="flags">{items or "<li>no flag set</li>"}</ul>
<p>Flags change only through the operators' tools: the <a href="/admin/ratelimit/flags">admin panel</a>, or
<code>bisman-ratelimit flags set darkMode true --type bool --url redis://…</code> on Redis;
every process hears of it.</p>"""
    return await page(request, "Feature flags", body)


routes = [
    Route("/login", login_form, methods=["GET"]),
    Route("/login", login_submit, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/session", session_page),
    Route("/chat/{thread_id}", chat_page),
    Route("/calls/{room}", call_page),
    Route("/calls/{room}/{action}", call_action, methods=["POST"]),
    Route("/api/calls/{room}/participants", participants),
    Route("/flags", flags_view),
]
