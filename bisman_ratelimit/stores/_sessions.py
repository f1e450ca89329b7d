"""Server-side sessions: one Redis hash per session, under ``auth:sess``.

Keys (built with :func:`bisman_ratelimit.core._keys.make_key`)::

    auth:sess:id:<session id>   hash: d:<field> -> JSON value, m:* -> metadata
    auth:sess:user:<user id>    set of the user's session ids ("log out everywhere")

A session has an idle TTL, renewed on every access (rolling renewal), and
an absolute deadline that renewal never passes. Loading a session and
renewing it is one round trip. Session ids are 256 random bits from
:mod:`secrets`; rotating a session (at login) moves its data to a new id
and removes the old one.

:class:`SessionStore` and :class:`AsyncSessionStore` are thin shells over
:class:`SessionCore`, which does no I/O.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from bisman_ratelimit.core import (
    InvalidArgument,
    StorageResponseError,
    TTLPolicyError,
    make_key,
    scan_pattern,
    unescape,
)
from bisman_ratelimit.stores._backend import (
    AsyncStoreShell,
    Call,
    Flow,
    MemoryBackend,
    Op,
    ShellBase,
    StoreShell,
    store_script,
)
from bisman_ratelimit.stores._common import (
    decode_json,
    encode_json,
    positive_int,
    positive_seconds,
    text,
    to_ms,
    valid_prefix,
)
from bisman_ratelimit.stores._namespaces import NamespaceRegistry, default_registry

DEFAULT_IDLE_TTL = 1800.0
DEFAULT_ABSOLUTE_LIFETIME = 12 * 3600.0

_ID = re.compile(r"[A-Za-z0-9_-]{43}")
_DATA = "d:"


def new_session_id() -> str:
    """43 URL-safe characters carrying 256 random bits."""
    return secrets.token_urlsafe(32)


def is_session_id(value: object) -> bool:
    """Whether ``value`` has the shape of an id from :func:`new_session_id`."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


@dataclass(frozen=True)
class Session:
    """A loaded session. Times are the server's, in seconds since the epoch."""

    id: str
    data: dict[str, Any] = field(hash=False)
    user_id: str | None
    created_at: float
    absolute_expires_at: float
    ttl: float
    """Seconds until the idle timeout, counted from this access."""


def _field_name(name: object) -> str:
    if not isinstance(name, str):
        raise InvalidArgument(f"session field names must be str, got {name!r}")
    return _DATA + name


def _user(user_id: object) -> str:
    if not isinstance(user_id, (str, int)) or isinstance(user_id, bool) or user_id == "":
        raise InvalidArgument(f"user_id must be a non-empty str or an int, got {user_id!r}")
    return str(user_id)


class SessionCore:
    """Keys, arguments and decoding for sessions; no I/O."""

    def __init__(
        self,
        *,
        idle_ttl: float = DEFAULT_IDLE_TTL,
        absolute_lifetime: float = DEFAULT_ABSOLUTE_LIFETIME,
        prefix: str = "auth:sess",
        registry: NamespaceRegistry = default_registry,
    ) -> None:
        self.idle_ttl = positive_seconds("idle_ttl", idle_ttl)
        self.absolute_lifetime = positive_seconds("absolute_lifetime", absolute_lifetime)
        self.prefix = valid_prefix("prefix", prefix)
        self.registry = registry
        self.id_prefix = self.session_key("x" * 43)[:-43]
        # Fail at construction, not at the first request, on a policy that refuses these keys.
        self._ttl_ms(self.session_key("x" * 43), self.idle_ttl)
        self._ttl_ms(self.user_key("x"), self.absolute_lifetime)

    def session_key(self, session_id: str) -> str:
        return f"{self.prefix}:{make_key('id', session_id)}"

    def user_key(self, user_id: str) -> str:
        return f"{self.prefix}:{make_key('user', user_id)}"

    def user_index_pattern(self) -> str:
        """A ``SCAN MATCH`` pattern for every user's index key."""
        return scan_pattern(self.user_key("x")[:-1])

    def user_of(self, key: str) -> str | None:
        """The user whose index ``key`` is (from a SCAN), or ``None`` for another key."""
        head = self.user_key("x")[:-1]
        return unescape(key[len(head) :]) if key.startswith(head) and len(key) > len(head) else None

    def _ttl_ms(self, key: str, ttl: float) -> int:
        checked = self.registry.ttl_for(key, ttl)
        if checked is None:
            raise TTLPolicyError(f"write to {key!r}: sessions always expire, but the namespace gives no TTL")
        return to_ms(checked)

    def _idle_ms(self, key: str, idle_ttl: float | None) -> int:
        ttl = self.idle_ttl if idle_ttl is None else positive_seconds("idle_ttl", idle_ttl)
        return self._ttl_ms(key, ttl)

    @staticmethod
    def _pairs(values: Mapping[str, Any]) -> list[str]:
        out: list[str] = []
        for name, value in values.items():
            out += (_field_name(name), encode_json(value, f"session field {name!r}"))
        return out

    def _session(self, session_id: str, raw: Any) -> Session | None:
        if raw is None:
            return None
        ttl_ms, flat = raw
        data: dict[str, Any] = {}
        meta: dict[str, Any] = {}
        pairs = iter(flat)
        # Hot path: one pass, json.loads and int() take the reply's bytes as they are.
        for name, value in zip(pairs, pairs, strict=True):
            name = name.decode() if isinstance(name, bytes) else name
            if name.startswith(_DATA):
                data[name[2:]] = json.loads(value)
            else:
                meta[name] = value
        user = meta.get("m:user")
        return Session(
            id=session_id,
            data=data,
            user_id=None if user is None else text(user),
            created_at=int(meta["m:created"]) / 1000,
            absolute_expires_at=int(meta["m:abs"]) / 1000,
            ttl=int(ttl_ms) / 1000,
        )

    # Operations. Each yields its calls and returns the result.

    def create(
        self, data: Mapping[str, Any] | None = None, *, user_id: object = None, idle_ttl: float | None = None
    ) -> Flow[Session]:
        for _ in range(3):
            session = yield from self.create_with_id(
                new_session_id(), data, user_id=user_id, idle_ttl=idle_ttl
            )
            if session is not None:
                return session
        raise StorageResponseError("could not create a session: three fresh random ids were all taken")

    def create_with_id(
        self,
        session_id: str,
        data: Mapping[str, Any] | None = None,
        *,
        user_id: object = None,
        idle_ttl: float | None = None,
    ) -> Flow[Session | None]:
        """Create a session under an id from :func:`new_session_id`; ``None`` if the id is taken."""
        if not is_session_id(session_id):
            raise InvalidArgument(f"not a session id from new_session_id(): {session_id!r}")
        pairs = self._pairs(data or {})
        user = None if user_id is None else _user(user_id)
        key = self.session_key(session_id)
        keys: tuple[str, ...] = (key,)
        life = to_ms(self.absolute_lifetime)
        if user is not None:
            keys = (key, self.user_key(user))
            life = self._ttl_ms(keys[1], self.absolute_lifetime)
        idle = self._idle_ms(key, idle_ttl)
        now_ms = yield Call(CREATE, keys, (session_id, idle, life, user or "", *pairs))
        if not now_ms:
            return None
        return Session(
            id=session_id,
            data=dict(data or {}),
            user_id=user,
            created_at=int(now_ms) / 1000,
            absolute_expires_at=(int(now_ms) + life) / 1000,
            ttl=min(idle, life) / 1000,
        )

    def load(self, session_id: str) -> Flow[Session | None]:
        if not is_session_id(session_id):
            return None
        raw = yield Call(LOAD, (self.session_key(session_id),), ("all",))
        return self._session(session_id, raw)

    def get_fields(self, session_id: str, names: Sequence[str]) -> Flow[dict[str, Any] | None]:
        fields = [_field_name(name) for name in names]
        if not fields:
            raise InvalidArgument("get_fields() needs at least one field name")
        if not is_session_id(session_id):
            return None
        raw = yield Call(LOAD, (self.session_key(session_id),), ("some", *fields))
        if raw is None:
            return None
        return {
            name: decode_json(value) for name, value in zip(names, raw[1], strict=True) if value is not None
        }

    def update(
        self,
        session_id: str,
        *,
        values: Mapping[str, Any] | None = None,
        remove: Iterable[str] = (),
        mode: Literal["patch", "replace"] = "patch",
        user_id: object = None,
        idle_ttl: float | None = None,
    ) -> Flow[bool]:
        pairs = self._pairs(values or {})
        removed = [] if mode == "replace" else [_field_name(name) for name in remove]
        if removed and values and any(_field_name(name) in removed for name in values):
            raise InvalidArgument("update(): a field cannot be both written and removed")
        if not is_session_id(session_id):
            return False
        key = self.session_key(session_id)
        idle = self._idle_ms(key, idle_ttl)
        keys: tuple[str, ...] = (key,)
        user = ""
        if user_id is not None:
            user = _user(user_id)
            keys = (key, self.user_key(user))
            self._ttl_ms(keys[1], self.absolute_lifetime)
        args = (session_id, mode, "" if idle_ttl is None else idle, user, len(pairs) // 2, *pairs, *removed)
        result = yield Call(WRITE, keys, args)
        return bool(result)

    def rotate(self, session_id: str, *, user_id: object = None) -> Flow[str | None]:
        if not is_session_id(session_id):
            return None
        user = None if user_id is None else _user(user_id)
        for _ in range(3):
            new_id = new_session_id()
            keys: tuple[str, ...] = (self.session_key(session_id), self.session_key(new_id))
            life = to_ms(self.absolute_lifetime)
            if user is not None:
                keys += (self.user_key(user),)
                life = self._ttl_ms(keys[2], self.absolute_lifetime)
            self._ttl_ms(keys[1], self.idle_ttl)
            result = yield Call(ROTATE, keys, (session_id, new_id, user or "", life))
            if result == 1:
                return new_id
            if result == 0:
                return None
        raise StorageResponseError("could not rotate the session: three fresh random ids were all taken")

    def delete(self, session_id: str) -> Flow[bool]:
        if not is_session_id(session_id):
            return False
        result = yield Call(DELETE, (self.session_key(session_id),), (session_id,))
        return bool(result)

    def user_sessions(self, user_id: object, action: Literal["list", "delete"]) -> Flow[list[str]]:
        raw = yield Call(USER, (self.user_key(_user(user_id)),), (action, self.id_prefix))
        return sorted(text(item) for item in raw)


class _SessionShell(ShellBase):
    """The constructor :class:`SessionStore` and :class:`AsyncSessionStore` share."""

    cluster_refusal = (
        "its scripts find a user's session index and the sessions it lists from stored values, "
        "keys that Redis Cluster cannot route or keep in one slot"
    )

    def __init__(
        self,
        backend: object,
        *,
        idle_ttl: float = DEFAULT_IDLE_TTL,
        absolute_lifetime: float = DEFAULT_ABSOLUTE_LIFETIME,
        prefix: str = "auth:sess",
        registry: NamespaceRegistry = default_registry,
    ) -> None:
        super().__init__(backend)
        self.core = SessionCore(
            idle_ttl=idle_ttl, absolute_lifetime=absolute_lifetime, prefix=prefix, registry=registry
        )


class SessionStore(_SessionShell, StoreShell):
    """Sessions on Redis or in memory, synchronously.

    ``backend`` is a URL (``redis://...``, ``memory://``), a ``redis.Redis``
    client or a :class:`~bisman_ratelimit.stores._backend.MemoryBackend`.
    """

    def create(
        self, data: Mapping[str, Any] | None = None, *, user_id: object = None, idle_ttl: float | None = None
    ) -> Session:
        """Store a new session under a fresh random id."""
        return self._run(self.core.create(data, user_id=user_id, idle_ttl=idle_ttl))

    def load(self, session_id: str) -> Session | None:
        """The session, renewed; ``None`` if it is unknown or expired."""
        return self._run(self.core.load(session_id))

    def get_fields(self, session_id: str, names: Sequence[str]) -> dict[str, Any] | None:
        """Only the named fields that are present (renews the session too)."""
        return self._run(self.core.get_fields(session_id, names))

    def set_fields(self, session_id: str, values: Mapping[str, Any]) -> bool:
        """Write fields atomically; ``False`` if the session is gone."""
        return self._run(self.core.update(session_id, values=values))

    def delete_fields(self, session_id: str, names: Iterable[str]) -> bool:
        """Remove fields atomically; ``False`` if the session is gone."""
        return self._run(self.core.update(session_id, remove=names))

    def update(
        self,
        session_id: str,
        *,
        values: Mapping[str, Any] | None = None,
        remove: Iterable[str] = (),
        user_id: object = None,
        idle_ttl: float | None = None,
    ) -> bool:
        """Write ``values`` and remove fields in one atomic step; ``False`` if the session is gone."""
        return self._run(
            self.core.update(session_id, values=values, remove=remove, user_id=user_id, idle_ttl=idle_ttl)
        )

    def replace(
        self,
        session_id: str,
        data: Mapping[str, Any],
        *,
        user_id: object = None,
        idle_ttl: float | None = None,
    ) -> bool:
        """Make ``data`` the session's whole content; ``False`` if the session is gone."""
        return self._run(
            self.core.update(session_id, values=data, mode="replace", user_id=user_id, idle_ttl=idle_ttl)
        )

    def rotate(self, session_id: str, *, user_id: object = None) -> str | None:
        """Move the session to a new id and return it; the old id stops working.

        Call it at login with ``user_id``: the session joins the user's
        index and its absolute lifetime starts anew.
        """
        return self._run(self.core.rotate(session_id, user_id=user_id))

    def delete(self, session_id: str) -> bool:
        """Delete the session; ``False`` if it did not exist."""
        return self._run(self.core.delete(session_id))

    def user_sessions(self, user_id: object) -> list[str]:
        """Ids of the user's live sessions."""
        return self._run(self.core.user_sessions(user_id, "list"))

    def users(self, max_users: int) -> tuple[list[str], bool]:
        """Up to ``max_users`` users with a session index, sorted, and whether that is all of them.

        A bounded SCAN on Redis; for operators' pages, not request code.
        """
        limit = positive_int("max_users", max_users)
        found: list[str] = []
        backend = self.backend
        keys = (
            backend.live_keys()
            if isinstance(backend, MemoryBackend)
            else backend.scan_iter(match=self.core.user_index_pattern(), count=1000)
        )
        for raw in keys:
            user = self.core.user_of(text(raw))
            if user is not None:
                if len(found) >= limit:
                    return sorted(found), False
                found.append(user)
        return sorted(found), True

    def delete_user_sessions(self, user_id: object) -> list[str]:
        """Log the user out everywhere; returns the ids deleted."""
        return self._run(self.core.user_sessions(user_id, "delete"))


class AsyncSessionStore(_SessionShell, AsyncStoreShell):
    """:class:`SessionStore` for asyncio, on ``redis.asyncio.Redis`` or memory."""

    async def create(
        self, data: Mapping[str, Any] | None = None, *, user_id: object = None, idle_ttl: float | None = None
    ) -> Session:
        """Store a new session under a fresh random id."""
        return await self._run(self.core.create(data, user_id=user_id, idle_ttl=idle_ttl))

    async def load(self, session_id: str) -> Session | None:
        """The session, renewed; ``None`` if it is unknown or expired."""
        return await self._run(self.core.load(session_id))

    async def get_fields(self, session_id: str, names: Sequence[str]) -> dict[str, Any] | None:
        """Only the named fields that are present (renews the session too)."""
        return await self._run(self.core.get_fields(session_id, names))

    async def set_fields(self, session_id: str, values: Mapping[str, Any]) -> bool:
        """Write fields atomically; ``False`` if the session is gone."""
        return await self._run(self.core.update(session_id, values=values))

    async def delete_fields(self, session_id: str, names: Iterable[str]) -> bool:
        """Remove fields atomically; ``False`` if the session is gone."""
        return await self._run(self.core.update(session_id, remove=names))

    async def update(
        self,
        session_id: str,
        *,
        values: Mapping[str, Any] | None = None,
        remove: Iterable[str] = (),
        user_id: object = None,
        idle_ttl: float | None = None,
    ) -> bool:
        """Write ``values`` and remove fields in one atomic step; ``False`` if the session is gone."""
        return await self._run(
            self.core.update(session_id, values=values, remove=remove, user_id=user_id, idle_ttl=idle_ttl)
        )

    async def replace(
        self,
        session_id: str,
        data: Mapping[str, Any],
        *,
        user_id: object = None,
        idle_ttl: float | None = None,
    ) -> bool:
        """Make ``data`` the session's whole content; ``False`` if the session is gone."""
        return await self._run(
            self.core.update(session_id, values=data, mode="replace", user_id=user_id, idle_ttl=idle_ttl)
        )

    async def rotate(self, session_id: str, *, user_id: object = None) -> str | None:
        """Move the session to a new id and return it; see :meth:`SessionStore.rotate`."""
        return await self._run(self.core.rotate(session_id, user_id=user_id))

    async def delete(self, session_id: str) -> bool:
        """Delete the session; ``False`` if it did not exist."""
        return await self._run(self.core.delete(session_id))

    async def user_sessions(self, user_id: object) -> list[str]:
        """Ids of the user's live sessions."""
        return await self._run(self.core.user_sessions(user_id, "list"))

    async def delete_user_sessions(self, user_id: object) -> list[str]:
        """Log the user out everywhere; returns the ids deleted."""
        return await self._run(self.core.user_sessions(user_id, "delete"))


# The same operations in Python, for MemoryBackend. Each mirrors its script
# in stores/lua/ (args start at the script's ARGV[2]).


def _live_session(m: MemoryBackend, key: str, now: int) -> tuple[dict[str, str], int] | None:
    """The hash and the ms left before its absolute deadline; drops it once past."""
    h: dict[str, str] | None = m.get(key, now)
    if h is None or "m:abs" not in h:
        return None
    left = int(h["m:abs"]) - now
    if left <= 0:
        m.delete(key, now)
        return None
    return h, left


def _add_to_index(m: MemoryBackend, index: str, session_id: str, ttl: int, now: int) -> None:
    members: set[str] = m.get(index, now) or set()
    members.add(session_id)
    m.put(index, members, now)
    if m.pttl(index, now) < ttl:
        m.expire(index, ttl, now)


def _remove_from_index(m: MemoryBackend, index: str, session_id: str, now: int) -> None:
    members: set[str] | None = m.get(index, now)
    if members is not None:
        members.discard(session_id)
        m.drop_if_empty(index, now)


def _mem_load(m: MemoryBackend, now: int, keys: Sequence[str], args: Sequence[Any]) -> Any:
    found = _live_session(m, keys[0], now)
    if found is None:
        return None
    h, left = found
    ttl = min(int(h["m:idle"]), left)
    m.expire(keys[0], ttl, now)
    if args[0] == "all":
        return [ttl, [item for pair in h.items() for item in pair]]
    return [ttl, [h.get(name) for name in args[1:]]]


def _mem_create(m: MemoryBackend, now: int, keys: Sequence[str], args: Sequence[Any]) -> Any:
    session_id, idle, life, user = args[0], int(args[1]), int(args[2]), args[3]
    if m.get(keys[0], now) is not None:
        return 0
    h = {"m:created": str(now), "m:abs": str(now + life), "m:idle": str(idle)}
    if len(keys) > 1:
        h.update({"m:user": user, "m:index": keys[1]})
    h.update(zip(args[4::2], args[5::2], strict=True))
    m.put(keys[0], h, now)
    m.expire(keys[0], min(idle, life), now)
    if len(keys) > 1:
        _add_to_index(m, keys[1], session_id, life, now)
    return now


def _mem_write(m: MemoryBackend, now: int, keys: Sequence[str], args: Sequence[Any]) -> Any:
    found = _live_session(m, keys[0], now)
    if found is None:
        return 0
    h, left = found
    session_id, mode, idle_arg, user, n = args[0], args[1], args[2], args[3], int(args[4])
    idle = int(h["m:idle"]) if idle_arg == "" else int(idle_arg)
    if len(keys) > 1 and keys[1] != h.get("m:index"):
        if "m:index" in h:
            _remove_from_index(m, h["m:index"], session_id, now)
        h["m:user"], h["m:index"] = user, keys[1]
        _add_to_index(m, keys[1], session_id, left, now)
    if mode == "replace":
        for name in [name for name in h if name.startswith(_DATA)]:
            del h[name]
    h["m:idle"] = str(idle)
    h.update(zip(args[5 : 5 + 2 * n : 2], args[6 : 6 + 2 * n : 2], strict=True))
    for name in args[5 + 2 * n :]:
        h.pop(name, None)
    m.expire(keys[0], min(idle, left), now)
    return 1


def _mem_rotate(m: MemoryBackend, now: int, keys: Sequence[str], args: Sequence[Any]) -> Any:
    found = _live_session(m, keys[0], now)
    if found is None:
        return 0
    h, left = found
    old_id, new_id, user, life = args[0], args[1], args[2], int(args[3])
    if m.get(keys[1], now) is not None:
        return -1
    m.rename(keys[0], keys[1])
    index = h.get("m:index")
    if index is not None:
        _remove_from_index(m, index, old_id, now)
    if len(keys) > 2:
        index, left = keys[2], life
        h.update({"m:created": str(now), "m:abs": str(now + life), "m:user": user, "m:index": index})
    if index is not None:
        _add_to_index(m, index, new_id, left, now)
    m.expire(keys[1], min(int(h["m:idle"]), left), now)
    return 1


def _mem_delete(m: MemoryBackend, now: int, keys: Sequence[str], args: Sequence[Any]) -> Any:
    h: dict[str, str] | None = m.get(keys[0], now)
    if h is None:
        return 0
    m.delete(keys[0], now)
    if "m:index" in h:
        _remove_from_index(m, h["m:index"], args[0], now)
    return 1


def _mem_user(m: MemoryBackend, now: int, keys: Sequence[str], args: Sequence[Any]) -> Any:
    action, id_prefix = args[0], args[1]
    members: set[str] = m.get(keys[0], now) or set()
    live = []
    for session_id in sorted(members):
        key = id_prefix + session_id
        if _live_session(m, key, now) is not None:
            live.append(session_id)
            if action == "delete":
                m.delete(key, now)
        else:
            members.discard(session_id)
    if action == "delete":
        m.delete(keys[0], now)
    else:
        m.drop_if_empty(keys[0], now)
    return live


LOAD = Op(store_script("session_load.lua"), _mem_load)
CREATE = Op(store_script("session_create.lua"), _mem_create)
WRITE = Op(store_script("session_write.lua"), _mem_write)
ROTATE = Op(store_script("session_rotate.lua"), _mem_rotate)
DELETE = Op(store_script("session_delete.lua"), _mem_delete)
USER = Op(store_script("session_user.lua"), _mem_user)
