"""Server-side sessions for Starlette and any ASGI app.

A drop-in for ``starlette.middleware.sessions.SessionMiddleware``:
``request.session`` is a dict as usual, but the data stays in the session
store (Redis) and the cookie carries only the signed session id::

    app.add_middleware(
        SessionMiddleware,
        store=AsyncSessionStore("redis://localhost:6379/0"),
        secret_key=["new secret", "old secret"],
    )

Loading the session renews it, in one round trip. At the response, only
the fields that changed are written. ``request.session.rotate(user_id=...)``
at login moves the data to a new id. If the store cannot be reached the
request is answered ``503`` and the app is not called with an empty
session: a user is never silently logged out, and a write is never lost
without the client being told.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bisman_ratelimit.core import InvalidArgument, StorageUnavailable
from bisman_ratelimit.stores import AsyncSessionStore, Secret, Signer, encode_json

__all__ = ["ServerSession", "SessionMiddleware"]

logger = logging.getLogger("bisman_ratelimit.sessions")

UNAVAILABLE_TEXT = "Service unavailable: the session store cannot be reached. Please try again shortly."


class ServerSession(dict[str, Any]):
    """``request.session``: the session's data, plus its id and :meth:`rotate`."""

    def __init__(
        self, data: dict[str, Any] | None = None, *, session_id: str | None = None, user_id: str | None = None
    ) -> None:
        super().__init__(data or {})
        self.id = session_id
        self.user_id = user_id
        self.rotation: tuple[bool, str | None] = (False, None)

    def rotate(self, *, user_id: object = None) -> None:
        """Move the data to a new session id when the response starts.

        Call it at login (with the user's id, so "log out everywhere" finds
        the session) and at any change of privilege.
        """
        self.rotation = (True, None if user_id is None else str(user_id))


def _encoded(data: dict[str, Any]) -> dict[str, str]:
    return {name: encode_json(value, f"request.session[{name!r}]") for name, value in data.items()}


class SessionMiddleware:
    """Pure ASGI middleware putting a :class:`ServerSession` in ``scope["session"]``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: AsyncSessionStore | str,
        secret_key: str | Secret | Sequence[str | Secret],
        session_cookie: str = "session",
        max_age: int | None = None,
        path: str = "/",
        same_site: Literal["lax", "strict", "none"] = "lax",
        https_only: bool = True,
        domain: str | None = None,
        partitioned: bool = False,
    ) -> None:
        self.app = app
        self.store = store if isinstance(store, AsyncSessionStore) else AsyncSessionStore(store)
        self.signer = Signer(secret_key, salt="bisman-ratelimit.session-cookie")
        self.session_cookie = session_cookie
        if same_site not in ("lax", "strict", "none"):
            raise InvalidArgument(f"same_site must be 'lax', 'strict' or 'none', got {same_site!r}")
        if same_site == "none" and not https_only:
            raise InvalidArgument(
                "same_site='none' needs https_only=True: browsers drop such cookies otherwise"
            )
        if max_age is None:
            # The cookie need not outlive the longest a session can live.
            max_age = int(self.store.core.absolute_lifetime)
        flags = f"; Path={path}; HttpOnly; SameSite={same_site.capitalize()}"
        if https_only:
            flags += "; Secure"
        if domain is not None:
            flags += f"; Domain={domain}"
        if partitioned:
            flags += "; Partitioned"
        self._set_flags = f"; Max-Age={max_age}{flags}"
        self._clear_flags = f"; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT{flags}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        cookie = HTTPConnection(scope).cookies.get(self.session_cookie)
        session_id = None if cookie is None else self.signer.unsign(cookie)
        try:
            loaded = None if session_id is None else await self.store.load(session_id)
        except StorageUnavailable as exc:
            await self._unavailable(scope, receive, send, exc)
            return
        if loaded is None:
            session = ServerSession()
        else:
            session = ServerSession(loaded.data, session_id=loaded.id, user_id=loaded.user_id)
        initial = _encoded(session)
        scope["session"] = session
        if scope["type"] == "websocket":
            # No response headers to carry a new cookie: the session is read-only here.
            await self.app(scope, receive, send)
            return

        failed = False

        async def send_wrapper(message: Message) -> None:
            nonlocal failed
            if failed:
                return
            if message["type"] == "http.response.start":
                try:
                    cookie_value = await self._commit(session, initial)
                except StorageUnavailable as exc:
                    failed = True
                    await self._unavailable(scope, receive, send, exc)
                    return
                headers = MutableHeaders(scope=message)
                if cookie is not None or cookie_value is not None:
                    headers.add_vary_header("Cookie")
                if cookie_value == "":
                    headers.append("Set-Cookie", f"{self.session_cookie}=null{self._clear_flags}")
                elif cookie_value is not None:
                    headers.append("Set-Cookie", f"{self.session_cookie}={cookie_value}{self._set_flags}")
                elif cookie is not None and session.id is None:
                    # A forged, tampered or expired cookie: drop it.
                    headers.append("Set-Cookie", f"{self.session_cookie}=null{self._clear_flags}")
            await send(message)

        await self.app(scope, receive, send_wrapper)

    async def _commit(self, session: ServerSession, initial: dict[str, str]) -> str | None:
        """Write what changed. Returns the signed id for a new cookie, ``""`` to clear it, else ``None``."""
        current = _encoded(session)
        rotate, user_id = session.rotation
        store = self.store
        if session.id is None:
            if not session:
                return None
            created = await store.create(dict(session), user_id=user_id)
            session.id, session.user_id = created.id, created.user_id
            return self.signer.sign(created.id)
        if not session and not rotate:
            await store.delete(session.id)
            session.id = None
            return ""
        new_cookie = None
        if rotate:
            new_id = await store.rotate(session.id, user_id=user_id)
            if new_id is None:
                # Ended meanwhile (expired, or logged out everywhere): never bring it back.
                session.id = None
                return ""
            session.id = new_id
            session.user_id = user_id or session.user_id
            new_cookie = self.signer.sign(new_id)
        values = {name: session[name] for name, value in current.items() if initial.get(name) != value}
        removed = [name for name in initial if name not in current]
        if (values or removed) and not await store.update(session.id, values=values, remove=removed):
            session.id = None
            return ""
        return new_cookie

    async def _unavailable(self, scope: Scope, receive: Receive, send: Send, exc: StorageUnavailable) -> None:
        logger.warning("session store unreachable, answering 503: %s", exc)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1013, "reason": "session store unavailable"})
            return
        response = PlainTextResponse(UNAVAILABLE_TEXT, status_code=503, headers={"Retry-After": "1"})
        await response(scope, receive, send)
