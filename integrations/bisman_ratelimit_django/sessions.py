"""A Django ``SESSION_ENGINE`` on the bisman-ratelimit session store.

::

    SESSION_ENGINE = "bisman_ratelimit_django.sessions"
    BISMAN_SESSIONS = {
        "URL": "redis://localhost:6379/0",   # required; "memory://" for tests
        "ABSOLUTE_LIFETIME": 12 * 3600,      # seconds a session may live at most
    }
    MIDDLEWARE = [
        "bisman_ratelimit_django.sessions.SessionStoreUnavailableMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        ...
    ]

Sessions are Redis hashes with rolling renewal on every load (one round
trip) and an absolute deadline; the idle TTL is Django's expiry age
(``SESSION_COOKIE_AGE`` or ``set_expiry()``). The cookie value is the
session id signed with ``SECRET_KEY`` (``SECRET_KEY_FALLBACKS`` still
verify). ``cycle_key()`` (called by ``login()``) moves the data to a new id
(the old id stops working at once; a request still holding it that changes
the session gets Django's 400, not a new empty session), and a session holding ``_auth_user_id`` joins that
user's index, so :func:`logout_everywhere` ends all of a user's sessions.

A save writes only the keys whose value differs from what the request
loaded (changed in place too) and removes the keys gone, in one atomic
script, so two concurrent requests changing different keys keep both; a
new session is written whole.

Values must be JSON-serialisable, as with Django's default serializer.
When the store cannot be reached, loads and saves raise
:class:`~bisman_ratelimit.core._errors.StorageUnavailable` (never an empty
session), and :class:`SessionStoreUnavailableMiddleware` turns that into
a ``503``. Every method has its ``a``-prefixed async twin, sharing one
I/O-free flow.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.contrib.sessions.backends.base import CreateError, SessionBase, UpdateError
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponse

from bisman_ratelimit.core import BismanRateLimitError, StorageError, StorageUnavailable
from bisman_ratelimit.stores import (
    AsyncSessionStore,
    Flow,
    MemoryBackend,
    Signer,
    backend_from_url,
    is_session_id,
    new_session_id,
)
from bisman_ratelimit.stores import Session as _Session
from bisman_ratelimit.stores import SessionStore as _Store

__all__ = [
    "SessionStore",
    "SessionStoreUnavailableMiddleware",
    "aclose_connections",
    "alogout_everywhere",
    "close_connections",
    "logout_everywhere",
]

_log = logging.getLogger("bisman_ratelimit.django")

SETTING = "BISMAN_SESSIONS"
# django.contrib.auth keeps the logged-in user's id under this session key.
AUTH_USER_ID = "_auth_user_id"
UNAVAILABLE_TEXT = "Service unavailable: the session store cannot be reached. Please try again shortly."


@dataclass
class _Engine:
    """The stores built from the settings, once per process."""

    url: str
    absolute_lifetime: float
    prefix: str
    memory: MemoryBackend | None
    sync_store: _Store | None = None
    async_stores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncSessionStore] | None = None

    def store(self) -> _Store:
        if self.sync_store is None:
            # Built from the URL itself, the store owns its client, and can open its connections.
            self.sync_store = _Store(
                self.memory or self.url,
                absolute_lifetime=self.absolute_lifetime,
                prefix=self.prefix,
            )
        return self.sync_store

    def async_store(self) -> AsyncSessionStore:
        # An asyncio Redis client belongs to the loop it was made in.
        if self.async_stores is None:
            self.async_stores = weakref.WeakKeyDictionary()
        loop = asyncio.get_running_loop()
        store = self.async_stores.get(loop)
        if store is None:
            store = self.async_stores[loop] = AsyncSessionStore(
                self.memory or backend_from_url(self.url, use_async=True, store=AsyncSessionStore),
                absolute_lifetime=self.absolute_lifetime,
                prefix=self.prefix,
            )
        return store


_engine: _Engine | None = None
_signer: Signer | None = None


def _build_engine() -> _Engine:
    options = getattr(settings, SETTING, None)
    if not isinstance(options, dict) or "URL" not in options:
        raise ImproperlyConfigured(
            f"SESSION_ENGINE {__name__!r} needs settings.{SETTING} = {{'URL': 'redis://host:port/0'}}"
        )
    unknown = set(options) - {"URL", "ABSOLUTE_LIFETIME", "PREFIX"}
    if unknown:
        raise ImproperlyConfigured(
            f"settings.{SETTING}: unknown key(s) {', '.join(sorted(unknown))}; "
            "expected URL, ABSOLUTE_LIFETIME, PREFIX"
        )
    url = options["URL"]
    try:
        memory = backend_from_url(url, use_async=False) if str(url).startswith("memory://") else None
        engine = _Engine(
            url=url,
            absolute_lifetime=options.get("ABSOLUTE_LIFETIME", 12 * 3600),
            prefix=options.get("PREFIX", "auth:sess"),
            memory=memory if isinstance(memory, MemoryBackend) else None,
        )
        engine.store()  # validates the remaining options now
    except BismanRateLimitError as exc:
        raise ImproperlyConfigured(f"settings.{SETTING}: {exc}") from None
    return engine


def _get_engine() -> _Engine:
    global _engine
    if _engine is None:
        _engine = _build_engine()
    return _engine


def _get_signer() -> Signer:
    global _signer
    if _signer is None:
        secrets = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
        try:
            _signer = Signer(secrets, salt="bisman-ratelimit.django-session")
        except BismanRateLimitError as exc:
            raise ImproperlyConfigured(f"SECRET_KEY signs the session cookies: {exc}") from None
    return _signer


def _reset(*, setting: str, **kwargs: Any) -> None:
    global _engine, _signer
    if setting == SETTING:
        close_connections()
        _engine = None
    elif setting in ("SECRET_KEY", "SECRET_KEY_FALLBACKS"):
        _signer = None


def close_connections() -> None:
    """Close the synchronous Redis client of this process, if one was opened."""
    if _engine is not None and _engine.sync_store is not None:
        _engine.sync_store.backend.close()
        _engine.sync_store = None


async def aclose_connections() -> None:
    """Close the asyncio Redis client of the running event loop, if one was opened."""
    if _engine is not None and _engine.async_stores is not None:
        store = _engine.async_stores.pop(asyncio.get_running_loop(), None)
        # A redis.asyncio Redis or RedisCluster client: both close alike.
        if store is not None and not isinstance(store.backend, MemoryBackend):
            await store.backend.aclose()


setting_changed.connect(_reset, dispatch_uid="bisman_ratelimit_django.sessions")


def _encoded(data: dict[str, Any]) -> dict[str, str]:
    """Each value as JSON, to tell what a request changed (in place too) from what it loaded."""
    return {key: json.dumps(value, sort_keys=True, default=repr) for key, value in data.items()}


class SessionStore(SessionBase):
    """Django's session interface on the bisman-ratelimit session store."""

    def __init__(self, session_key: str | None = None) -> None:
        super().__init__(session_key)
        self.unavailable: StorageUnavailable | None = None
        #: The key named a session a concurrent login rotated away: saving would start another.
        self.rotated_away = False
        # Each key's value as loaded (or last saved), encoded: a save writes the keys whose
        # value differs, and removes the keys gone. None: nothing loaded, write the whole session.
        self._stored: dict[str, str] | None = None

    # Each operation is one flow, run by a sync or an async method.

    def _sid(self, session_key: str | None) -> str | None:
        if not session_key:
            return None
        sid = _get_signer().unsign(session_key)
        return sid if is_session_id(sid) else None

    def _get_new_session_key(self) -> str:
        return _get_signer().sign(new_session_id())

    async def _aget_new_session_key(self) -> str:
        return self._get_new_session_key()

    def _load_flow(self) -> Flow[dict[str, Any]]:
        sid = self._sid(self.session_key)
        session = None if sid is None else (yield from _get_engine().store().core.lookup(sid))
        self.rotated_away = session == "rotated"
        if not isinstance(session, _Session):
            self._session_key = None
            self._stored = None
            return {}
        data = dict(session.data)
        self._stored = _encoded(data)
        return data

    def _exists_flow(self, session_key: str | None) -> Flow[bool]:
        sid = self._sid(session_key)
        if sid is None:
            return False
        found = yield from _get_engine().store().core.get_fields(sid, [AUTH_USER_ID])
        return found is not None

    def _save_flow(self, must_create: bool, data: dict[str, Any], age: int) -> Flow[None]:
        sid = self._sid(self.session_key)
        if sid is None:
            # A key not made here, or not signed with our secret, names no session.
            if not must_create:
                raise UpdateError
            self._session_key = self._get_new_session_key()
            sid = self._sid(self.session_key)
            assert sid is not None
        user = data.get(AUTH_USER_ID)
        core = _get_engine().store().core
        if age <= 0:
            # Already expired: there is nothing to keep.
            yield from core.delete(sid)
            return
        stored = self._stored
        now = _encoded(data)
        if must_create:
            if (yield from core.create_with_id(sid, data, user_id=user, idle_ttl=age)) is None:
                raise CreateError
        elif stored is None:
            if not (yield from core.update(sid, values=data, mode="replace", user_id=user, idle_ttl=age)):
                raise UpdateError
        else:
            written = {key: data[key] for key, value in now.items() if stored.get(key) != value}
            removed = [key for key in stored if key not in now]
            if not (yield from core.update(sid, values=written, remove=removed, user_id=user, idle_ttl=age)):
                raise UpdateError
        # Saved: the next save writes what changes from here.
        self._stored = now

    def _delete_flow(self, session_key: str | None) -> Flow[None]:
        if session_key is None:
            session_key = self.session_key
        sid = self._sid(session_key)
        if sid is not None:
            yield from _get_engine().store().core.delete(sid)

    def _cycle_flow(self, data: dict[str, Any]) -> Flow[None]:
        sid = self._sid(self.session_key)
        new_id = None if sid is None else (yield from _get_engine().store().core.rotate(sid))
        if new_id is None:
            # No stored session to move: start a new one holding the data.
            self._session_key = None
            self._session_cache = data
            return
        self._session_key = _get_signer().sign(new_id)
        self._session_cache = data
        self.modified = True

    def _sync(self, flow: Flow[Any]) -> Any:
        try:
            return _get_engine().store().run(flow)
        except StorageUnavailable as exc:
            self.unavailable = exc
            raise

    async def _async(self, flow: Flow[Any]) -> Any:
        try:
            return await _get_engine().async_store().run(flow)
        except StorageUnavailable as exc:
            self.unavailable = exc
            raise

    def load(self) -> dict[str, Any]:
        result: dict[str, Any] = self._sync(self._load_flow())
        return result

    async def aload(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._async(self._load_flow())
        return result

    def exists(self, session_key: str | None) -> bool:
        return bool(self._sync(self._exists_flow(session_key)))

    async def aexists(self, session_key: str | None) -> bool:
        return bool(await self._async(self._exists_flow(session_key)))

    def create(self) -> None:
        self._session_key = self._get_new_session_key()
        self.save(must_create=True)
        self.modified = True

    async def acreate(self) -> None:
        self._session_key = await self._aget_new_session_key()
        await self.asave(must_create=True)
        self.modified = True

    # _get_session, _aget_session and _session are Django's, missing from its type stubs.

    def save(self, must_create: bool = False) -> None:
        # A session without a key is created, and so left modified, as Django's
        # cache backend does: the middleware then saves it again at the end of
        # the request, and finds out if it was deleted meanwhile.
        if self.rotated_away and not must_create:
            # Django answers 400 (SessionInterrupted) and leaves the cookie of the login alone.
            raise UpdateError
        if self.session_key is None:
            return self.create()
        data = self._get_session(no_load=must_create)  # type: ignore[attr-defined]
        if self.session_key is None and not must_create:
            # Loading found no such session: keep the data under a new one.
            return self.create()
        self._sync(self._save_flow(must_create, data, self.get_expiry_age()))

    async def asave(self, must_create: bool = False) -> None:
        if self.rotated_away and not must_create:
            raise UpdateError
        if self.session_key is None:
            return await self.acreate()
        data = await self._aget_session(no_load=must_create)  # type: ignore[attr-defined]
        if self.session_key is None and not must_create:
            return await self.acreate()
        await self._async(self._save_flow(must_create, data, await self.aget_expiry_age()))

    def delete(self, session_key: str | None = None) -> None:
        self._sync(self._delete_flow(session_key))

    async def adelete(self, session_key: str | None = None) -> None:
        await self._async(self._delete_flow(session_key))

    def cycle_key(self) -> None:
        data = self._session  # type: ignore[attr-defined]
        self._sync(self._cycle_flow(data))
        if self.session_key is None:
            self.create()

    async def acycle_key(self) -> None:
        data = await self._aget_session()  # type: ignore[attr-defined]
        await self._async(self._cycle_flow(data))
        if self.session_key is None:
            await self.acreate()

    @classmethod
    def clear_expired(cls) -> None:
        """Nothing to do: the store expires sessions itself."""

    @classmethod
    async def aclear_expired(cls) -> None:
        """Nothing to do: the store expires sessions itself."""


def logout_everywhere(user_id: object) -> list[str]:
    """End every session of the user (by ``user.pk``); returns how many ids were removed."""
    return _get_engine().store().delete_user_sessions(str(user_id))


async def alogout_everywhere(user_id: object) -> list[str]:
    """:func:`logout_everywhere` for async code."""
    return await _get_engine().async_store().delete_user_sessions(str(user_id))


# Connections a synchronous stack opens when the middleware is loaded, as the rate-limit
# middleware opens its own: a threaded server's first requests then find them open.
_WARM_CONNECTIONS = 8


def _warm_store() -> None:
    if getattr(settings, "SESSION_ENGINE", None) != __name__:
        return
    try:
        _get_engine().store().warm(_WARM_CONNECTIONS)
    except StorageError as exc:
        _log.warning("could not open connections to the session store in advance: %s", exc)


class SessionStoreUnavailableMiddleware:
    """Answers ``503`` when the session store could not be reached during the request.

    Put it before (outside) Django's ``SessionMiddleware``, so it also sees
    a failure to save the session after the view.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)
        else:
            _warm_store()

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        return self._checked(request, self.get_response(request))

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        return self._checked(request, await self.get_response(request))

    @staticmethod
    def _checked(request: HttpRequest, response: HttpResponse) -> HttpResponse:
        session = getattr(request, "session", None)
        if isinstance(session, SessionStore) and session.unavailable is not None:
            return HttpResponse(
                UNAVAILABLE_TEXT,
                status=503,
                content_type="text/plain; charset=utf-8",
                headers={"Retry-After": "1"},
            )
        return response
