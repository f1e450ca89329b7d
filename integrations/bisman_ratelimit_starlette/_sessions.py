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
request is answered ``503`` (so is a store answering with an error, out
of memory or read-only) and the app is not called with an empty
session: a user is never silently logged out, and a write is never lost
without the client being told. A request whose session a concurrent
login rotated away (the old id now forwards to the new one) gets an empty
session and keeps its cookie; if it changed the session, it is answered
``409`` and nothing is saved: its write is neither lost silently nor made
on the new session by the holder of the old id.

``max_age`` means what it means for Starlette's middleware, and holds on
the server too: the signed cookie carries the time it was issued, and a
cookie replayed after ``max_age`` seconds names no session, whatever the
browser was told. ``max_age=None`` makes a browser-session cookie; the
store's absolute lifetime still ends the session on the server.
``Vary: Cookie`` is sent only when the app used the session.

The store's connections are opened at startup (or by the first requests,
which wait for it), as ``RateLimitMiddleware`` opens the limiter's: a
burst of first requests would each open one under the budget's connect
timeout, and be answered 503 by a healthy Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bisman_ratelimit.core import InvalidArgument, StorageError
from bisman_ratelimit.stores import AsyncSessionStore, Secret, Session, Signer, encode_json

if TYPE_CHECKING:
    from _collections_abc import dict_items, dict_keys, dict_values


logger = logging.getLogger("bisman_ratelimit.sessions")

UNAVAILABLE_TEXT = "Service unavailable: the session store cannot be reached. Please try again shortly."
ROTATED_TEXT = "Conflict: the session was renewed (a sign-in) during this request. Please try again."


class _Rotated(Exception):
    """The session was rotated away while the request ran: its changes were not saved."""


class ServerSession(dict[str, Any]):
    """``request.session``: the session's data, plus its id and :meth:`rotate`."""

    def __init__(
        self, data: dict[str, Any] | None = None, *, session_id: str | None = None, user_id: str | None = None
    ) -> None:
        super().__init__(data or {})
        self.id = session_id
        self.user_id = user_id
        self.rotation: tuple[bool, str | None] = (False, None)
        #: Whether the app read or wrote the session (responses then vary by cookie).
        self.accessed = False

    # Every way in marks the session accessed; the middleware reads it through
    # dict's own methods so as not to.
    def __getitem__(self, name: str) -> Any:
        self.accessed = True
        return super().__getitem__(name)

    def __setitem__(self, name: str, value: Any) -> None:
        self.accessed = True
        super().__setitem__(name, value)

    def __delitem__(self, name: str) -> None:
        self.accessed = True
        super().__delitem__(name)

    def __contains__(self, name: object) -> bool:
        self.accessed = True
        return super().__contains__(name)

    def __iter__(self) -> Iterator[str]:
        self.accessed = True
        return super().__iter__()

    def __len__(self) -> int:
        self.accessed = True
        return super().__len__()

    def get(self, name: str, default: Any = None) -> Any:
        self.accessed = True
        return super().get(name, default)

    def keys(self) -> dict_keys[str, Any]:
        self.accessed = True
        return super().keys()

    def values(self) -> dict_values[str, Any]:
        self.accessed = True
        return super().values()

    def items(self) -> dict_items[str, Any]:
        self.accessed = True
        return super().items()

    def pop(self, name: str, *default: Any) -> Any:
        self.accessed = True
        return super().pop(name, *default)

    def popitem(self) -> tuple[str, Any]:
        self.accessed = True
        return super().popitem()

    def __ior__(self, other: Any) -> ServerSession:  # type: ignore[override,misc]
        self.accessed = True
        return super().__ior__(other)

    def setdefault(self, name: str, default: Any = None) -> Any:
        self.accessed = True
        return super().setdefault(name, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.accessed = True
        super().update(*args, **kwargs)

    def clear(self) -> None:
        self.accessed = True
        super().clear()

    def rotate(self, *, user_id: object = None) -> None:
        """Move the data to a new session id when the response starts.

        Call it at login (with the user's id, so "log out everywhere" finds
        the session) and at any change of privilege.
        """
        self.accessed = True
        self.rotation = (True, None if user_id is None else str(user_id))


def _encoded(data: dict[str, Any]) -> dict[str, str]:
    return {name: encode_json(value, f"request.session[{name!r}]") for name, value in dict.items(data)}


class SessionMiddleware:
    """Pure ASGI middleware putting a :class:`ServerSession` in ``scope["session"]``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: AsyncSessionStore | str,
        secret_key: str | Secret | Sequence[str | Secret],
        session_cookie: str = "session",
        max_age: int | None = 14 * 24 * 3600,
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
        if max_age is not None and (isinstance(max_age, bool) or not isinstance(max_age, int) or max_age < 1):
            raise InvalidArgument(f"max_age must be a whole number of seconds >= 1, or None, got {max_age!r}")
        self.max_age = max_age
        flags = f"; Path={path}; HttpOnly; SameSite={same_site.capitalize()}"
        if https_only:
            flags += "; Secure"
        if domain is not None:
            flags += f"; Domain={domain}"
        if partitioned:
            flags += "; Partitioned"
        if max_age is None:
            self._set_flags = flags  # a browser-session cookie
        else:
            # The cookie need not outlive the longest a session can live.
            self._set_flags = f"; Max-Age={min(max_age, int(self.store.core.absolute_lifetime))}{flags}"
        self._clear_flags = f"; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT{flags}"
        # Connections to the store, opened at startup (or by the first requests, which wait for it).
        self._warming: asyncio.Future[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            if scope["type"] == "lifespan":
                receive = self._warm_on_startup(receive)
            await self.app(scope, receive, send)
            return
        warming = self._warming
        if warming is None or not warming.done():
            await self._warm()

        cookie = HTTPConnection(scope).cookies.get(self.session_cookie)
        session_id = None if cookie is None else self._session_id(cookie)
        store = self.store
        try:
            found = None if session_id is None else await store.run(store.core.lookup(session_id))
        # Unreachable, or answering with an error (out of memory, read-only): a 503 either way.
        except StorageError as exc:
            await self._unavailable(scope, receive, send, exc)
            return
        # Rotated away by a concurrent login: the browser holds, or is about to get, the new cookie.
        rotated = found == "rotated"
        if isinstance(found, Session):
            session = ServerSession(found.data, session_id=found.id, user_id=found.user_id)
        else:
            session = ServerSession()
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
                    if rotated and (dict.__len__(session) or session.rotation[0]):
                        raise _Rotated
                    cookie_value = await self._commit(session, initial)
                except StorageError as exc:
                    failed = True
                    await self._unavailable(scope, receive, send, exc)
                    return
                except _Rotated:
                    failed = True
                    await self._conflict(scope, receive, send)
                    return
                headers = MutableHeaders(scope=message)
                if session.accessed:
                    headers.add_vary_header("Cookie")
                if cookie_value == "":
                    headers.append("Set-Cookie", f"{self.session_cookie}=null{self._clear_flags}")
                elif cookie_value is not None:
                    headers.append("Set-Cookie", f"{self.session_cookie}={cookie_value}{self._set_flags}")
                elif cookie is not None and session.id is None and not rotated:
                    # A forged, tampered or expired cookie: drop it.
                    headers.append("Set-Cookie", f"{self.session_cookie}=null{self._clear_flags}")
            await send(message)

        await self.app(scope, receive, send_wrapper)

    def _warm_on_startup(self, receive: Receive) -> Receive:
        async def receive_after_warming() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self._warm()
            return message

        return receive_after_warming

    async def _warm(self) -> None:
        """Open the store's connections once; the requests that come meanwhile wait for that."""
        warming = self._warming
        if warming is None:
            warming = self._warming = asyncio.ensure_future(self._open_connections())
        elif warming.get_loop() is not asyncio.get_running_loop():
            return  # another event loop's client is warming (each loop has a client of its own)
        await asyncio.shield(warming)

    async def _open_connections(self) -> None:
        try:
            await self.store.warm()
        except StorageError as exc:
            logger.warning("could not open connections to the session store in advance: %s", exc)

    def _cookie(self, session_id: str) -> str:
        return self.signer.sign(f"{session_id}.{int(time.time())}")

    def _session_id(self, cookie: str) -> str | None:
        """The id a cookie names, if it is ours and no older than ``max_age``."""
        value = self.signer.unsign(cookie)
        if value is None:
            return None
        session_id, _, issued = value.rpartition(".")
        if not issued.isdigit():
            return None
        if self.max_age is not None and time.time() - int(issued) > self.max_age:
            return None
        return session_id

    async def _commit(self, session: ServerSession, initial: dict[str, str]) -> str | None:
        """Write what changed. Returns the signed id for a new cookie, ``""`` to clear it, else ``None``."""
        current = _encoded(session)
        rotate, user_id = session.rotation
        store = self.store
        if session.id is None:
            if not dict.__len__(session):
                return None
            created = await store.create(dict(dict.items(session)), user_id=user_id)
            session.id, session.user_id = created.id, created.user_id
            return self._cookie(created.id)
        if not dict.__len__(session) and not rotate:
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
            new_cookie = self._cookie(new_id)
        values = {
            name: dict.__getitem__(session, name)
            for name, value in current.items()
            if initial.get(name) != value
        }
        removed = [name for name in initial if name not in current]
        if values or removed:
            outcome = await store.run(store.core.write(session.id, values=values, remove=removed))
            if outcome == "rotated":
                raise _Rotated
            if outcome == "gone":
                session.id = None
                return ""
        return new_cookie

    async def _conflict(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = PlainTextResponse(ROTATED_TEXT, status_code=409)
        await response(scope, receive, send)

    async def _unavailable(self, scope: Scope, receive: Receive, send: Send, exc: StorageError) -> None:
        logger.warning("session store unreachable, answering 503: %s", exc)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1013, "reason": "session store unavailable"})
            return
        response = PlainTextResponse(UNAVAILABLE_TEXT, status_code=503, headers={"Retry-After": "1"})
        await response(scope, receive, send)
