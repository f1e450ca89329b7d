"""The bounded map behind the in-memory backends (limits and stores).

It starts no thread and never stops a caller for a sweep: each operation
does a small, fixed amount of work. An entry expires lazily when next
read. An addition at the cap, and every eighth addition below it, looks
at the eight least recently used entries and drops the expired among
them. At ``max_keys`` entries (or ``max_bytes``, if set) an addition then
evicts the least recently used entry that is not denying; an entry its
owner marked as denying goes only when no other is left. A flood of new
keys therefore pushes out idle clients before a recently counted one,
and before a client that is locked out (who would otherwise start
afresh).

Above 2048 keys the map is split into shards of at most 2048, chosen by
the key's hash, and "least recently used" is per shard: growing a dict
copies it whole, and small shards keep that copy, the one pause no upkeep
can split, well under a millisecond.

The weight of an entry is approximate: the length of its key (the sum of
the string parts of a tuple key) plus :data:`ENTRY_OVERHEAD` bytes for the
entry itself, its value and the map's slots.

Entries are ``[expires_at, value]`` lists, changed in place by the owner;
``expires_at`` is ``None`` for an entry that never expires, else a time in
the owner's unit (microseconds for limits, milliseconds for stores). The
map takes no lock: each owner holds its own around every operation.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator
from itertools import islice
from typing import Any, Generic, TypeVar

from bisman_ratelimit.core import InvalidArgument

K = TypeVar("K", bound=Hashable)

# What one small entry costs in CPython beyond its key's characters: the
# map's slot and node, the [expires_at, value] list, the key's objects and
# a counter's state (tracemalloc: 380 to 430 bytes with an 8-character key).
ENTRY_OVERHEAD = 512

# Least recently used entries looked at for expired ones, and additions
# between two looks below the cap: cheap enough for every new key.
_SWEEP = 8

# Keys per shard of the map, at most.
_SHARD_KEYS = 2048


def key_weight(key: object) -> int:
    """The length of ``key``: a string's, or the sum of a tuple's string parts."""
    if isinstance(key, str | bytes):
        return len(key)
    if isinstance(key, tuple):
        return sum(len(part) for part in key if isinstance(part, str | bytes))
    return 0


def _whole(name: str, value: object, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise InvalidArgument(f"{name} must be a whole number >= {least}, got {value!r}")


class _Shard(Generic[K]):
    """Part of the map, in two orders of use: least recently used first."""

    __slots__ = ("denying", "free")

    def __init__(self) -> None:
        self.free: OrderedDict[K, list[Any]] = OrderedDict()
        # Apart, so that eviction reaches them only once the others are gone.
        self.denying: OrderedDict[K, list[Any]] = OrderedDict()


class BoundedMap(Generic[K]):
    """Keys to ``[expires_at, value]`` entries, within ``max_keys`` and ``max_bytes``."""

    def __init__(self, *, max_keys: int, max_bytes: int | None = None) -> None:
        _whole("max_keys", max_keys, 8)
        if max_bytes is not None:
            _whole("max_bytes", max_bytes, 8 * ENTRY_OVERHEAD)
        self.max_keys = max_keys
        self.max_bytes = max_bytes
        #: The approximate weight held; counted only under ``max_bytes``.
        self.bytes = 0
        #: How many entries are marked as denying.
        self.denying = 0
        self._len = 0
        self._adds = 0
        self._shards: list[_Shard[K]] = [_Shard() for _ in range(-(-max_keys // _SHARD_KEYS))]
        self._only = self._shards[0] if len(self._shards) == 1 else None

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[K]:
        """The keys: per shard, least recently used first and the denying ones last."""
        return iter([key for shard in self._shards for order in (shard.free, shard.denying) for key in order])

    def _shard(self, key: K) -> _Shard[K]:
        if self._only is not None:
            return self._only
        return self._shards[hash(key) % len(self._shards)]

    def entry(self, key: K, now: float) -> list[Any] | None:
        """The live entry of ``key`` (now the most recently used), or ``None``; an expired one is dropped."""
        shard = self._only
        if shard is None:
            shard = self._shards[hash(key) % len(self._shards)]
        order = shard.free
        entry = order.get(key)
        if entry is None:
            order = shard.denying
            entry = order.get(key)
            if entry is None:
                return None
        if entry[0] is not None and entry[0] <= now:
            del order[key]
            self._gone(key, order is shard.denying)
            return None
        order.move_to_end(key)
        return entry

    def add(self, key: K, entry: list[Any], now: float, *, denying: bool = False) -> None:
        """Store a new entry for ``key`` (which holds no live one), making room first."""
        shard = self._only or self._shard(key)
        self._take(shard, key)
        max_bytes = self.max_bytes
        weight = 0 if max_bytes is None else key_weight(key) + ENTRY_OVERHEAD
        full = self._len >= self.max_keys or (max_bytes is not None and self.bytes + weight > max_bytes)
        self._adds += 1
        # Below the caps expired entries only take room the caps allow:
        # a look every eighth addition does, at an eighth of the cost.
        if full or not self._adds % _SWEEP:
            self._sweep(shard, now)
            full = self._len >= self.max_keys or (max_bytes is not None and self.bytes + weight > max_bytes)
        while full and self._evict(shard):
            full = self._len >= self.max_keys or (max_bytes is not None and self.bytes + weight > max_bytes)
        # (A lone entry heavier than max_bytes is still kept.)
        if denying:
            shard.denying[key] = entry
            self.denying += 1
        else:
            shard.free[key] = entry
        self._len += 1
        self.bytes += weight

    def mark(self, key: K, *, denying: bool) -> None:
        """Say whether the entry of ``key`` now denies its client (kept longer) or not."""
        shard = self._only or self._shard(key)
        source, target = (shard.free, shard.denying) if denying else (shard.denying, shard.free)
        entry = source.pop(key, None)
        if entry is not None:
            target[key] = entry
            self.denying += 1 if denying else -1

    def pop(self, key: K) -> list[Any] | None:
        return self._take(self._only or self._shard(key), key)

    def rename(self, old: K, new: K) -> None:
        """Move the entry of ``old`` to ``new``, replacing what ``new`` held."""
        entry = self.pop(old)
        if entry is None:
            raise KeyError(old)
        self.pop(new)
        self._shard(new).free[new] = entry
        self._len += 1
        if self.max_bytes is not None:
            self.bytes += key_weight(new) + ENTRY_OVERHEAD

    def clear(self) -> None:
        for shard in self._shards:
            shard.free.clear()
            shard.denying.clear()
        self._len = self.bytes = self.denying = 0

    def _gone(self, key: K, denying: bool) -> None:
        self._len -= 1
        if denying:
            self.denying -= 1
        if self.max_bytes is not None:
            self.bytes -= key_weight(key) + ENTRY_OVERHEAD

    def _take(self, shard: _Shard[K], key: K) -> list[Any] | None:
        entry = shard.free.pop(key, None)
        if entry is not None:
            self._gone(key, False)
            return entry
        entry = shard.denying.pop(key, None)
        if entry is not None:
            self._gone(key, True)
        return entry

    def _evict(self, shard: _Shard[K]) -> bool:
        """Drop the least recently used entry that is not denying, else a denying one.

        The shard of the new key first, the others only when it has none of
        the kind: that walk over the shards is the only step that is not
        constant time.
        """
        for denying in (False, True):
            order = shard.denying if denying else shard.free
            if not order:
                for other in self._shards:
                    if other.denying if denying else other.free:
                        order = other.denying if denying else other.free
                        break
                else:
                    continue
            old, _ = order.popitem(last=False)
            self._gone(old, denying)
            return True
        return False

    def _sweep(self, shard: _Shard[K], now: float) -> None:
        """Drop the expired among the few least recently used entries of the shard."""
        for denying in (False, True):
            order = shard.denying if denying else shard.free
            if not order:
                continue
            expired = [
                key
                for key, entry in islice(order.items(), _SWEEP)
                if entry[0] is not None and entry[0] <= now
            ]
            for key in expired:
                del order[key]
                self._gone(key, denying)
