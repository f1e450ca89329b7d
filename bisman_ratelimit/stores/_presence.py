"""Call presence: who is in a call room, under ``call:room``.

A room is one sorted set, participant -> last seen (ms, server time)::

    call:room:<room>:participants

Joining, heartbeating and leaving each renew the room's TTL, so a room
with no activity for ``room_ttl`` seconds disappears. A participant who
sends no heartbeat for ``heartbeat_timeout`` seconds stops being listed
and is dropped at the next write, while the others stay.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bisman_ratelimit.core import InvalidArgument, TTLPolicyError, make_key
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
from bisman_ratelimit.stores._common import positive_seconds, text, to_ms, utf8_text, valid_prefix
from bisman_ratelimit.stores._namespaces import NamespaceRegistry, default_registry


@dataclass(frozen=True)
class Participant:
    """Someone in a room, and when they were last seen (server time, seconds)."""

    id: str
    last_seen: float


@dataclass(frozen=True)
class RoomState:
    """The outcome of a join, heartbeat or leave."""

    present: bool
    """Whether the participant is in the room after the call."""
    participants: int


def _participant(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"a participant id must be a non-empty str, got {value!r}")
    return utf8_text(value, "a participant id")


class PresenceCore:
    """Keys, arguments and decoding for presence; no I/O."""

    def __init__(
        self,
        *,
        room_ttl: float = 60.0,
        heartbeat_timeout: float = 30.0,
        prefix: str = "call:room",
        registry: NamespaceRegistry = default_registry,
    ) -> None:
        self.room_ttl = positive_seconds("room_ttl", room_ttl)
        self.heartbeat_timeout = positive_seconds("heartbeat_timeout", heartbeat_timeout)
        self.prefix = valid_prefix("prefix", prefix)
        self.registry = registry
        self._room_ttl_ms(self.room_key("x"))

    def room_key(self, room: object) -> str:
        return f"{self.prefix}:{make_key(room, 'participants')}"

    def _room_ttl_ms(self, key: str) -> int:
        ttl = self.registry.ttl_for(key, self.room_ttl)
        if ttl is None:
            raise TTLPolicyError(f"write to {key!r}: call rooms must expire, but the namespace gives no TTL")
        return to_ms(ttl)

    def touch(self, room: object, participant: str, op: Literal["join", "beat", "leave"]) -> Flow[RoomState]:
        key = self.room_key(room)
        args = (op, _participant(participant), self._room_ttl_ms(key), to_ms(self.heartbeat_timeout))
        present, count = yield Call(TOUCH, (key,), args)
        return RoomState(present=bool(present), participants=int(count))

    def participants(self, room: object) -> Flow[list[Participant]]:
        raw = yield Call(READ, (self.room_key(room),), ("list", to_ms(self.heartbeat_timeout)))
        return [Participant(text(raw[i]), float(raw[i + 1]) / 1000) for i in range(0, len(raw), 2)]

    def count(self, room: object) -> Flow[int]:
        raw = yield Call(READ, (self.room_key(room),), ("count", to_ms(self.heartbeat_timeout)))
        return int(raw)


class _PresenceShell(ShellBase):
    """The constructor :class:`Presence` and :class:`AsyncPresence` share."""

    def __init__(
        self,
        backend: object,
        *,
        room_ttl: float = 60.0,
        heartbeat_timeout: float = 30.0,
        prefix: str = "call:room",
        registry: NamespaceRegistry = default_registry,
    ) -> None:
        super().__init__(backend)
        self.core = PresenceCore(
            room_ttl=room_ttl, heartbeat_timeout=heartbeat_timeout, prefix=prefix, registry=registry
        )


class Presence(_PresenceShell, StoreShell):
    """Call rooms and their participants, synchronously."""

    def join(self, room: object, participant: str) -> RoomState:
        """Enter the room (or come back); counts as a heartbeat."""
        return self._run(self.core.touch(room, participant, "join"))

    def heartbeat(self, room: object, participant: str) -> RoomState:
        """Say "still here". ``present`` is ``False`` if the participant was dropped: join again."""
        return self._run(self.core.touch(room, participant, "beat"))

    def leave(self, room: object, participant: str) -> RoomState:
        """Leave the room."""
        return self._run(self.core.touch(room, participant, "leave"))

    def participants(self, room: object) -> list[Participant]:
        """Who is in the room, longest silent first."""
        return self._run(self.core.participants(room))

    def count(self, room: object) -> int:
        """How many are in the room."""
        return self._run(self.core.count(room))


class AsyncPresence(_PresenceShell, AsyncStoreShell):
    """:class:`Presence` for asyncio."""

    async def join(self, room: object, participant: str) -> RoomState:
        """Enter the room (or come back); counts as a heartbeat."""
        return await self._run(self.core.touch(room, participant, "join"))

    async def heartbeat(self, room: object, participant: str) -> RoomState:
        """Say "still here". ``present`` is ``False`` if the participant was dropped: join again."""
        return await self._run(self.core.touch(room, participant, "beat"))

    async def leave(self, room: object, participant: str) -> RoomState:
        """Leave the room."""
        return await self._run(self.core.touch(room, participant, "leave"))

    async def participants(self, room: object) -> list[Participant]:
        """Who is in the room, longest silent first."""
        return await self._run(self.core.participants(room))

    async def count(self, room: object) -> int:
        """How many are in the room."""
        return await self._run(self.core.count(room))


# The scripts in Python, for MemoryBackend (args start at ARGV[2]).


def _mem_touch(m: MemoryBackend, now: int, keys: Sequence[str], args: Sequence[Any]) -> Any:
    key = keys[0]
    op, who, ttl, timeout = args[0], args[1], int(args[2]), int(args[3])
    room: dict[str, int] = m.get(key, now) or {}
    for gone in [name for name, seen in room.items() if seen <= now - timeout]:
        del room[gone]
    present = 0
    if op == "join" or (op == "beat" and who in room):
        room[who] = now
        present = 1
    elif op == "leave":
        room.pop(who, None)
    if room:
        m.put(key, room, now)
        m.expire(key, ttl, now)
    else:
        m.delete(key, now)
    return [present, len(room)]


def _mem_read(m: MemoryBackend, now: int, keys: Sequence[str], args: Sequence[Any]) -> Any:
    since = now - int(args[1])
    room: dict[str, int] = m.get(keys[0], now) or {}
    alive = sorted(((seen, name) for name, seen in room.items() if seen > since))
    if args[0] == "count":
        return len(alive)
    return [item for seen, name in alive for item in (name, str(seen))]


TOUCH = Op(store_script("presence_touch.lua"), _mem_touch)
READ = Op(store_script("presence_read.lua"), _mem_read)
