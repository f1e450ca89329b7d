"""The one bounded map behind both in-memory twins: limits' MemoryStorage and the stores' MemoryBackend."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import pytest
from support import ManualClock

from bisman_ratelimit import InvalidArgument, Limiter
from bisman_ratelimit.backends import BoundedMap, MemoryStorage
from bisman_ratelimit.stores import MemoryBackend, Presence


def test_an_entry_expires_when_next_read() -> None:
    bounded: BoundedMap[str] = BoundedMap(max_keys=8)
    bounded.add("brief", [10, "a"], now=0)
    bounded.add("forever", [None, "b"], now=0)
    assert bounded.entry("brief", now=9) == [10, "a"]
    assert bounded.entry("brief", now=10) is None
    assert list(bounded) == ["forever"]
    assert bounded.entry("forever", now=10**12) == [None, "b"]


def test_at_the_cap_the_oldest_go_down_to_seven_eighths() -> None:
    bounded: BoundedMap[int] = BoundedMap(max_keys=16)
    for key in range(16):
        bounded.add(key, [None, key], now=0)
    assert len(bounded) == 16
    bounded.add(16, [None, 16], now=0)
    # 14 (seven eighths of 16) were kept, then the new key came in.
    assert list(bounded) == [*range(2, 17)]


def test_expired_entries_go_before_live_ones() -> None:
    bounded: BoundedMap[int] = BoundedMap(max_keys=16)
    for key in range(16):
        bounded.add(key, [5 if key % 2 else None, key], now=0)
    bounded.add(16, [None, 16], now=5)
    assert list(bounded) == [0, 2, 4, 6, 8, 10, 12, 14, 16]


def test_a_sweep_comes_once_the_additions_outnumber_half_the_entries() -> None:
    bounded: BoundedMap[int] = BoundedMap(max_keys=100_000)
    for key in range(1023):
        bounded.add(key, [1, key], now=0)
    # Additions stay cheap: the expired entries wait for the sweep that
    # comes after more than 1024 additions (or half the entries, if more).
    bounded.add(1023, [None, 1023], now=1)
    assert len(bounded) == 1024
    bounded.add(1024, [None, 1024], now=1)
    assert list(bounded) == [1023, 1024]


@pytest.mark.parametrize("max_keys", [7, 0, -1, True, 8.0, "8"])
def test_max_keys_is_validated(max_keys: object) -> None:
    with pytest.raises(InvalidArgument, match=f"max_keys must be a whole number >= 8, got {max_keys!r}"):
        BoundedMap(max_keys=max_keys)  # type: ignore[arg-type]


class Twin(NamedTuple):
    write: Callable[[int], object]  # make key number i
    size: Callable[[], int]
    kept: Callable[[int], bool]  # key number i still holds what was written


def _limits(clock: ManualClock) -> Twin:
    storage = MemoryStorage(clock=clock, max_keys=64)
    limiter = Limiter(storage)
    return Twin(
        write=lambda i: limiter.hit(f"user:{i}", "5/hour"),
        size=lambda: len(storage),
        kept=lambda i: limiter.peek(f"user:{i}", "5/hour").remaining == 4,
    )


def _stores(clock: ManualClock) -> Twin:
    backend = MemoryBackend(clock=clock, max_keys=64)
    presence = Presence(backend)
    return Twin(
        write=lambda i: presence.join(f"room{i}", "ann"),
        size=lambda: len(backend.live_keys()),
        kept=lambda i: presence.count(f"room{i}") == 1,
    )


@pytest.mark.parametrize("make", [_limits, _stores], ids=["MemoryStorage", "MemoryBackend"])
def test_both_twins_are_capped_alike(make: Callable[[ManualClock], Twin], clock: ManualClock) -> None:
    twin = make(clock)
    sizes = []
    for i in range(500):
        twin.write(i)
        sizes.append(twin.size())
    assert max(sizes) == 64
    assert min(sizes[64:]) == 57  # seven eighths of the cap, then the new key
    # The oldest went first: what is left are the newest keys.
    assert [i for i in range(500) if twin.kept(i)] == list(range(500 - sizes[-1], 500))


def test_both_twins_hold_their_entries_in_the_one_bounded_map() -> None:
    assert type(MemoryStorage()._map) is type(MemoryBackend()._map) is BoundedMap
