"""Server-side sessions: one Redis hash per session, under ``auth:sess``.

Keys (parts from users escaped with :func:`bisman_ratelimit.core.make_key`)::

    auth:sess:{<session id>}        hash: d:<field> -> JSON value, m:* -> metadata
    auth:sess:user:{<user id>}      sorted set: the user's session ids -> when added (ms)

The braces are Redis Cluster hash tags: every script touches one key, so
the stores run on a single primary and on Cluster alike. A user's index
lists sessions that live in other slots, so it is kept in step by calls of
its own, in an order that never lets "log out everywhere" miss a session:

- an id enters the index *before* its session is written (create, login,
  binding to another user), and leaves it *after* the session is gone
  (delete, rotation);
- readers of the index (``user_sessions``, ``delete_user_sessions``) check
  each listed session in its own slot, and drop ids whose session is gone
  or bound elsewhere once they are older than :data:`INDEX_GRACE_MS` (a
  younger one may name a session still being written).

A crash between two such calls thus leaves at worst an index entry naming
no session, which the next reader drops.

Rotation copies the session, writes the copy under the new id, and then
retires the old id in one step, only if the old session is still there
and unchanged: it becomes a short-lived forward (``m:moved``, kept
:data:`ROTATED_GRACE_MS`) that no read or write accepts. Ended meanwhile
(logged out everywhere, expired), the copy is deleted too; written
meanwhile, the copy is made again. A reader of the index that meets a
forward follows it to the new id, so "log out everywhere" landing in the
middle of a rotation ends both ids, and a web layer tells "rotated away"
(a concurrent login) from "ended". A crash between the calls leaves at
worst an unused copy, listed in the user's index, until its idle timeout.

A session has an idle TTL, renewed on every access (rolling renewal), and
an absolute deadline that renewal never passes. Loading a session and
renewing it is one round trip. Session ids are 256 random bits from
:mod:`secrets`.

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

from bisman_ratelimit.backends import Script
from bisman_ratelimit.core import (
    InvalidArgument,
    StorageResponseError,
    TTLPolicyError,
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
)
from bisman_ratelimit.stores._common import (
    decode_json,
    encode_json,
    positive_int,
    positive_seconds,
    tagged,
    text,
    to_ms,
    utf8_text,
    valid_prefix,
)
from bisman_ratelimit.stores._namespaces import NamespaceRegistry, default_registry

DEFAULT_IDLE_TTL = 1800.0
DEFAULT_ABSOLUTE_LIFETIME = 12 * 3600.0

_ID = re.compile(r"[A-Za-z0-9_-]{43}")
_DATA = "d:"

ROTATED_GRACE_MS = 60_000
"""How long a rotated session's old id is kept as a forward to the new one."""

INDEX_GRACE_MS = 60_000
"""How long an index entry may name no session before readers drop it.

An id enters a user's index one call before its session is written; a
reader that finds no session for an entry younger than this leaves it.
"""


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
    return _DATA + utf8_text(name, "a session field name")


def _user(user_id: object) -> str:
    if not isinstance(user_id, (str, int)) or isinstance(user_id, bool) or user_id == "":
        raise InvalidArgument(f"user_id must be a non-empty str or an int, got {user_id!r}")
    return utf8_text(str(user_id), "user_id")


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
        # Fail at construction, not at the first request, on a policy that refuses these keys.
        self._ttl_ms(self.session_key("x" * 43), self.idle_ttl)
        self._ttl_ms(self.user_key("x"), self.absolute_lifetime)

    def session_key(self, session_id: str) -> str:
        # Ids are checked by is_session_id(): no brace, nothing to escape.
        return f"{self.prefix}:{{{session_id}}}"

    def user_key(self, user_id: str) -> str:
        return f"{self.prefix}:user:{tagged(user_id)}"

    def user_index_pattern(self) -> str:
        """A ``SCAN MATCH`` pattern for every user's index key."""
        return scan_pattern(f"{self.prefix}:user:{{")

    def user_of(self, key: str) -> str | None:
        """The user whose index ``key`` is (from a SCAN), or ``None`` for another key."""
        head = f"{self.prefix}:user:{{"
        if key.startswith(head) and key.endswith("}") and len(key) > len(head) + 1:
            return unescape(key[len(head) : -1])
        return None

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

    # Index upkeep: each a call in the index's own slot.

    @staticmethod
    def _index_add(index: str, session_id: str, life_ms: int) -> Call:
        return Call(INDEX, (index,), ("add", session_id, life_ms))

    @staticmethod
    def _index_remove(index: str, removed: Sequence[str], stale: Sequence[str] = ()) -> Call:
        """Take ``removed`` out of the index, and ``stale`` too once past the grace."""
        return Call(INDEX, (index,), ("prune", INDEX_GRACE_MS, len(removed), *removed, *stale))

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
        index = ""
        life = to_ms(self.absolute_lifetime)
        if user is not None:
            index = self.user_key(user)
            life = self._ttl_ms(index, self.absolute_lifetime)
        idle = self._idle_ms(key, idle_ttl)
        if index:
            yield self._index_add(index, session_id, life)
        now_ms = yield Call(CREATE, (key,), (idle, life, user or "", index, *pairs))
        if not now_ms:
            if index:
                # The id belongs to someone else's session: it must not stay listed as this user's.
                yield self._index_remove(index, (session_id,))
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
        found = yield from self.lookup(session_id)
        return found if isinstance(found, Session) else None

    def lookup(self, session_id: str) -> Flow[Session | Literal["rotated"] | None]:
        """:meth:`load`, telling an id rotated away (within :data:`ROTATED_GRACE_MS`) from an unknown one."""
        if not is_session_id(session_id):
            return None
        raw = yield Call(LOAD, (self.session_key(session_id),), ("all",))
        if raw == 1:
            return "rotated"
        return self._session(session_id, raw)

    def get_fields(self, session_id: str, names: Sequence[str]) -> Flow[dict[str, Any] | None]:
        fields = [_field_name(name) for name in names]
        if not fields:
            raise InvalidArgument("get_fields() needs at least one field name")
        if not is_session_id(session_id):
            return None
        raw = yield Call(LOAD, (self.session_key(session_id),), ("some", *fields))
        if raw is None or raw == 1:
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
        outcome = yield from self.write(
            session_id, values=values, remove=remove, mode=mode, user_id=user_id, idle_ttl=idle_ttl
        )
        return outcome == "written"

    def write(
        self,
        session_id: str,
        *,
        values: Mapping[str, Any] | None = None,
        remove: Iterable[str] = (),
        mode: Literal["patch", "replace"] = "patch",
        user_id: object = None,
        idle_ttl: float | None = None,
    ) -> Flow[Literal["written", "gone", "rotated"]]:
        """:meth:`update`, telling a session rotated away (nothing written) from one that ended."""
        pairs = self._pairs(values or {})
        removed = [] if mode == "replace" else [_field_name(name) for name in remove]
        if removed and values and any(_field_name(name) in removed for name in values):
            raise InvalidArgument("update(): a field cannot be both written and removed")
        if not is_session_id(session_id):
            return "gone"
        key = self.session_key(session_id)
        idle = self._idle_ms(key, idle_ttl)
        user = index = ""
        if user_id is not None:
            user = _user(user_id)
            index = self.user_key(user)
            self._ttl_ms(index, self.absolute_lifetime)
        tail = ("" if idle_ttl is None else idle, user, index)
        body = (len(pairs) // 2, *pairs, *removed)
        written, left = yield Call(WRITE, (key,), (mode, *tail, "", *body))
        if written == 2:
            # Bound to another user: into the new index first, then the session, then out of the old.
            yield self._index_add(index, session_id, to_ms(self.absolute_lifetime))
            written, left = yield Call(WRITE, (key,), (mode, *tail, "bind", *body))
            if not written:
                yield self._index_remove(index, (session_id,))
        if written == 1 and left:
            yield self._index_remove(text(left), (session_id,))
        return "written" if written == 1 else "rotated" if written == 3 else "gone"

    def rotate(self, session_id: str, *, user_id: object = None) -> Flow[str | None]:
        if not is_session_id(session_id):
            return None
        user = None if user_id is None else _user(user_id)
        life = to_ms(self.absolute_lifetime)
        index = None if user is None else self.user_key(user)
        if index is not None:
            life = self._ttl_ms(index, self.absolute_lifetime)
        old_key = self.session_key(session_id)
        self._ttl_ms(old_key, self.idle_ttl)
        grace = self._ttl_ms(old_key, ROTATED_GRACE_MS / 1000)
        login = ("", "", "") if user is None else (life, user, index)
        for _ in range(3):
            copied = yield Call(COPY, (old_key,))
            if copied is None:
                return None
            left, flat = copied
            fields = [text(item) for item in flat]
            meta = dict(zip(fields[::2], fields[1::2], strict=True))
            old_index = meta.get("m:index")
            new_index = index or old_index
            new_id = yield from self._put_copy(new_index, login, fields, life if index else int(left))
            if new_id is None:
                return None  # the absolute deadline passed meanwhile: the session is over
            retired = yield Call(RETIRE, (old_key,), (new_id, meta.get("m:ver", ""), grace))
            if retired == 1:
                if old_index is not None:
                    yield self._index_remove(old_index, (session_id,))
                return new_id
            # Ended meanwhile: the copy goes too. Written meanwhile: copy it again.
            yield from self.delete(new_id)
            if retired == 0:
                return None
        raise StorageResponseError(
            "could not rotate the session: it was written during three copies in a row"
        )

    def _put_copy(
        self, index: str | None, login: tuple[Any, ...], fields: list[str], index_life: int
    ) -> Flow[str | None]:
        """Store ``fields`` under a fresh id, listed first in ``index``; ``None`` once past the deadline."""
        for _ in range(3):
            new_id = new_session_id()
            if index is not None:
                yield self._index_add(index, new_id, index_life)
            put = yield Call(PUT, (self.session_key(new_id),), (*login, *fields))
            if put == 1:
                return new_id
            if index is not None:
                yield self._index_remove(index, (new_id,))
            if put == -1:
                return None
        raise StorageResponseError("could not rotate the session: three fresh random ids were all taken")

    def delete(self, session_id: str) -> Flow[bool]:
        if not is_session_id(session_id):
            return False
        found, index = yield Call(DELETE, (self.session_key(session_id),))
        if index:
            yield self._index_remove(text(index), (session_id,))
        return bool(found)

    def user_sessions(self, user_id: object, action: Literal["list", "delete"]) -> Flow[list[str]]:
        """The user's live sessions, listed or deleted: one call per session listed, in its slot."""
        index = self.user_key(_user(user_id))
        listed = yield Call(INDEX, (index,), ("list",))
        live: list[str] = []
        stale: list[str] = []
        pending = [text(item) for item in reversed(listed)]
        seen = set(pending)
        while pending:
            session_id = pending.pop()
            claimed = 0
            if is_session_id(session_id):
                claimed = yield Call(CLAIM, (self.session_key(session_id),), (index, action))
            if isinstance(claimed, (bytes, str)):
                # Rotated away, maybe after this listing: its new id may not be listed yet.
                moved = text(claimed)
                if moved not in seen:
                    seen.add(moved)
                    pending.append(moved)
                claimed = 0
            (live if claimed else stale).append(session_id)
        if stale or (live and action == "delete"):
            yield self._index_remove(index, live if action == "delete" else (), stale)
        return sorted(live)


class _SessionShell(ShellBase):
    """The constructor :class:`SessionStore` and :class:`AsyncSessionStore` share."""

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


def _moved(m: MemoryBackend, key: str, now: int) -> str | None:
    """The new id a rotated session's old key forwards to, if it is one."""
    h: dict[str, str] | None = m.get(key, now)
    return None if h is None else h.get("m:moved")


def _mem_load(m: MemoryBackend, now: int, keys: Sequence[str], args: Sequence[Any]) -> Any:
    found = _live_session(m, keys[0], now)
    if found is None:
        return 1 if _moved(m, keys[0], now) else None
    h, left = found
    ttl = min(int(h["m:idle"]), left)
    m.expire(keys[0], ttl, now)
    if args[0] == "all":
        return [ttl, [item for pair in h.items() for item in pair]]
    return [ttl, [h.get(name) for name in args[1:]]]


def _mem_create(m: MemoryBackend, now: int, keys: Sequence[str], args: Sequence[Any]) -> Any:
    idle, life, user, index = int(args[0]), int(args[1]), args[2], args[3]
    if m.get(keys[0], now) is not None:
        return 0
    h = {"m:created": str(now), "m:abs": str(now + life), "m:idle": str(idle)}
    if index:
        h.update({"m:user": user, "m:index": index})
    h.update(zip(args[4::2], args[5::2], strict=True))
    m.put(keys[0], h, now)
    m.expire(keys[0], min(idle, life), now)
    return now


def _mem_write(m: MemoryBackend, now: int, keys: Sequence[str], args: Sequence[Any]) -> Any:
    found = _live_session(m, keys[0], now)
    if found is None:
        return [3 if _moved(m, keys[0], now) else 0, ""]
    h, left = found
    mode, idle_arg, user, index, bind, n = args[0], args[1], args[2], args[3], args[4], int(args[5])
    left_index = ""
    if index and index != h.get("m:index"):
        if bind != "bind":
            return [2, ""]
        left_index = h.get("m:index", "")
        h["m:user"], h["m:index"] = user, index
    if mode == "replace":
        for name in [name for name in h if name.startswith(_DATA)]:
            del h[name]
    idle = int(h["m:idle"]) if idle_arg == "" else int(idle_arg)
    h["m:idle"] = str(idle)
    h["m:ver"] = str(int(h.get("m:ver", 0)) + 1)
    h.update(zip(args[6 : 6 + 2 * n : 2], args[7 : 7 + 2 * n : 2], strict=True))
    for name in args[6 + 2 * n :]:
        h.pop(name, None)
    m.expire(keys[0], min(idle, left), now)
    return [1, left_index]


def _mem_copy(m: MemoryBackend, now: int, keys: Sequence[str], args: Sequence[Any]) -> Any:
    found = _live_session(m, keys[0], now)
    if found is None:
        return None
    h, left = found
    return [left, [item for pair in h.items() for item in pair]]


def _mem_retire(m: MemoryBackend, now: int, keys: Sequence[str], args: Sequence[Any]) -> Any:
    h: dict[str, str] | None = m.get(keys[0], now)
    if h is None or "m:abs" not in h:
        return 0
    if h.get("m:ver", "") != args[1]:
        return 2
    m.delete(keys[0], now)
    if int(h["m:abs"]) <= now:
        return 0
    m.put(keys[0], {"m:moved": args[0]}, now)
    m.expire(keys[0], int(args[2]), now)
    return 1


def _mem_put(m: MemoryBackend, now: int, keys: Sequence[str], args: Sequence[Any]) -> Any:
    life, user, index = args[0], args[1], args[2]
    if m.get(keys[0], now) is not None:
        return 0
    h = dict(zip(args[3::2], args[4::2], strict=True))
    if life != "":
        h.update({"m:created": str(now), "m:abs": str(now + int(life)), "m:user": user, "m:index": index})
    left = int(h["m:abs"]) - now
    if left <= 0:
        return -1
    m.put(keys[0], h, now)
    m.expire(keys[0], min(int(h["m:idle"]), left), now)
    return 1


def _mem_claim(m: MemoryBackend, now: int, keys: Sequence[str], args: Sequence[Any]) -> Any:
    found = _live_session(m, keys[0], now)
    if found is None:
        return _moved(m, keys[0], now) or 0
    if found[0].get("m:index") != args[0]:
        return 0
    if args[1] == "delete":
        m.delete(keys[0], now)
    return 1


def _mem_delete(m: MemoryBackend, now: int, keys: Sequence[str], args: Sequence[Any]) -> Any:
    h: dict[str, str] | None = m.get(keys[0], now)
    if h is None or "m:moved" in h:
        return [0, ""]
    m.delete(keys[0], now)
    return [1, h.get("m:index", "")]


def _mem_index(m: MemoryBackend, now: int, keys: Sequence[str], args: Sequence[Any]) -> Any:
    index: dict[str, int] = m.get(keys[0], now) or {}
    if args[0] == "add":
        index[args[1]] = now
        m.put(keys[0], index, now)
        if m.pttl(keys[0], now) < int(args[2]):
            m.expire(keys[0], int(args[2]), now)
        return 1
    if args[0] == "list":
        return [name for _, name in sorted((added, name) for name, added in index.items())]
    cutoff, n = now - int(args[1]), int(args[2])
    removed = 0
    for position, session_id in enumerate(args[3:]):
        added = index.get(session_id)
        if added is not None and (position < n or added <= cutoff):
            del index[session_id]
            removed += 1
    m.drop_if_empty(keys[0], now)
    return removed


def _script(name: str) -> Script:
    """A script from ``stores/lua/``, after the shared head and the field helpers."""
    return Script("session_fields.lua", name, package=__package__)


LOAD = Op(_script("session_load.lua"), _mem_load)
CREATE = Op(_script("session_create.lua"), _mem_create)
WRITE = Op(_script("session_write.lua"), _mem_write)
COPY = Op(_script("session_copy.lua"), _mem_copy)
RETIRE = Op(_script("session_retire.lua"), _mem_retire)
PUT = Op(_script("session_put.lua"), _mem_put)
CLAIM = Op(_script("session_claim.lua"), _mem_claim)
DELETE = Op(_script("session_delete.lua"), _mem_delete)
INDEX = Op(_script("session_index.lua"), _mem_index)
