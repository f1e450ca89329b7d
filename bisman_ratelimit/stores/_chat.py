"""Chat context: the last messages of a thread, under ``chat:ctx``.

A thread's messages are numbered from 1 and sharded into windows of
``window_size`` messages, so a hot thread never grows one big key::

    chat:ctx:thread:{<id>}:w:<n>   list of JSON messages, newest first
    chat:ctx:thread:{<id>}:seq     the last message number

The braces are a Redis Cluster hash tag: a thread's keys share one slot,
so the scripts that name its windows at run time work on Cluster too.

Appending pushes, trims the thread to its last ``keep`` messages (the seed
keeps 30) and renews the TTL of every kept window, all in one round trip.
Reading the last N spans windows transparently, also in one round trip.
A thread with no new message for ``ttl`` seconds disappears.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from bisman_ratelimit.core import InvalidArgument, TTLPolicyError
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
    tagged,
    text,
    to_ms,
    valid_prefix,
)
from bisman_ratelimit.stores._namespaces import NamespaceRegistry, default_registry


class ChatCore:
    """Keys, arguments and decoding for chat context; no I/O."""

    def __init__(
        self,
        *,
        keep: int = 30,
        window_size: int | None = None,
        ttl: float = 120.0,
        max_message_bytes: int = 64 * 1024,
        prefix: str = "chat:ctx",
        registry: NamespaceRegistry = default_registry,
    ) -> None:
        self.keep = positive_int("keep", keep)
        self.window_size = keep if window_size is None else positive_int("window_size", window_size)
        self.ttl = positive_seconds("ttl", ttl)
        self.max_message_bytes = positive_int("max_message_bytes", max_message_bytes)
        self.prefix = valid_prefix("prefix", prefix)
        self.registry = registry
        self._ttl_ms(self.window_key("x", 0))

    def thread_key(self, thread_id: object) -> str:
        """The base key every key of the thread starts with."""
        return f"{self.prefix}:thread:{tagged(thread_id)}"

    def window_key(self, thread_id: object, window: int) -> str:
        return f"{self.thread_key(thread_id)}:w:{window}"

    def _ttl_ms(self, key: str) -> int:
        ttl = self.registry.ttl_for(key, self.ttl)
        if ttl is None:
            raise TTLPolicyError(
                f"write to {key!r}: chat context must expire, but the namespace gives no TTL"
            )
        return to_ms(ttl)

    def _encode(self, thread_id: object, message: Any) -> str:
        encoded = encode_json(message, f"chat message for thread {thread_id!r}")
        if len(encoded.encode()) > self.max_message_bytes:
            raise InvalidArgument(
                f"chat message for thread {thread_id!r} is {len(encoded.encode())} bytes as JSON, "
                f"more than max_message_bytes={self.max_message_bytes}"
            )
        return encoded

    def append(self, thread_id: object, messages: Iterable[Any]) -> Flow[int]:
        base = self.thread_key(thread_id)
        encoded = [self._encode(thread_id, message) for message in messages]
        if not encoded:
            raise InvalidArgument(f"no message to append to thread {thread_id!r}")
        ttl = self._ttl_ms(f"{base}:seq")
        self._ttl_ms(f"{base}:w:0")
        seq = yield Call(APPEND, (f"{base}:seq",), (base, self.keep, self.window_size, ttl, *encoded))
        return int(seq)

    def last(self, thread_id: object, n: int | None = None) -> Flow[list[Any]]:
        count = self.keep if n is None else min(positive_int("n", n), self.keep)
        base = self.thread_key(thread_id)
        raw = yield Call(READ, (f"{base}:seq",), (base, count, self.window_size))
        return [decode_json(item) for item in reversed(raw)]


class _ChatShell(ShellBase):
    """The constructor :class:`ChatContext` and :class:`AsyncChatContext` share."""

    def __init__(
        self,
        backend: object,
        *,
        keep: int = 30,
        window_size: int | None = None,
        ttl: float = 120.0,
        max_message_bytes: int = 64 * 1024,
        prefix: str = "chat:ctx",
        registry: NamespaceRegistry = default_registry,
    ) -> None:
        super().__init__(backend)
        self.core = ChatCore(
            keep=keep,
            window_size=window_size,
            ttl=ttl,
            max_message_bytes=max_message_bytes,
            prefix=prefix,
            registry=registry,
        )


class ChatContext(_ChatShell, StoreShell):
    """Recent chat messages per thread, synchronously."""

    def append(self, thread_id: object, message: Any) -> int:
        """Add a JSON-serialisable message; returns its number in the thread."""
        return self._run(self.core.append(thread_id, [message]))

    def extend(self, thread_id: object, messages: Sequence[Any]) -> int:
        """Add several messages, oldest first, in one round trip."""
        return self._run(self.core.append(thread_id, messages))

    def last(self, thread_id: object, n: int | None = None) -> list[Any]:
        """The last ``n`` messages (at most ``keep``), oldest first."""
        return self._run(self.core.last(thread_id, n))


class AsyncChatContext(_ChatShell, AsyncStoreShell):
    """:class:`ChatContext` for asyncio."""

    async def append(self, thread_id: object, message: Any) -> int:
        """Add a JSON-serialisable message; returns its number in the thread."""
        return await self._run(self.core.append(thread_id, [message]))

    async def extend(self, thread_id: object, messages: Sequence[Any]) -> int:
        """Add several messages, oldest first, in one round trip."""
        return await self._run(self.core.append(thread_id, messages))

    async def last(self, thread_id: object, n: int | None = None) -> list[Any]:
        """The last ``n`` messages (at most ``keep``), oldest first."""
        return await self._run(self.core.last(thread_id, n))


# The scripts in Python, for MemoryBackend (args start at ARGV[2]).


def _mem_append(m: MemoryBackend, now: int, keys: Sequence[str], args: Sequence[Any]) -> Any:
    base, keep, size, ttl = args[0], int(args[1]), int(args[2]), int(args[3])

    def window(n: int) -> str:
        return f"{base}:w:{(n - 1) // size}"

    before = int(m.get(keys[0], now) or 0)
    seq = before
    for message in args[4:]:
        seq += 1
        items: list[str] = m.get(window(seq), now) or []
        items.insert(0, message)
        m.put(window(seq), items, now)
    m.put(keys[0], str(seq), now)
    m.expire(keys[0], ttl, now)
    oldest = max(1, seq - keep + 1)
    first = (oldest - 1) // size
    for w in range((max(1, before - keep + 1) - 1) // size, first):
        m.delete(f"{base}:w:{w}", now)
    kept: list[str] | None = m.get(window(oldest), now)
    if kept is not None:
        del kept[min(seq, (first + 1) * size) - oldest + 1 :]
        m.drop_if_empty(window(oldest), now)
    for w in range(first, (seq - 1) // size + 1):
        m.expire(f"{base}:w:{w}", ttl, now)
    return seq


def _mem_read(m: MemoryBackend, now: int, keys: Sequence[str], args: Sequence[Any]) -> Any:
    base, size = args[0], int(args[2])
    seq = int(text(m.get(keys[0], now) or 0))
    want = min(int(args[1]), seq)
    out: list[str] = []
    w = (seq - 1) // size
    while len(out) < want and w >= 0:
        got = (m.get(f"{base}:w:{w}", now) or [])[: want - len(out)]
        if not got:
            break
        out += got
        w -= 1
    return out


APPEND = Op(store_script("chat_append.lua"), _mem_append)
READ = Op(store_script("chat_read.lua"), _mem_read)
