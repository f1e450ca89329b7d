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


def test_at_the_cap_the_least_recently_used_goes() -> None:
    bounded: BoundedMap[int] = BoundedMap(max_keys=16)
    for key in range(16):
        bounded.add(key, [None, key], now=0)
    assert bounded.entry(0, now=0) == [None, 0]  # read: now the most recently used
    bounded.add(16, [None, 16], now=0)
    assert list(bounded) == [*range(2, 16), 0, 16]


def test_expired_entries_go_before_live_ones() -> None:
    bounded: BoundedMap[int] = BoundedMap(max_keys=16)
    for key in range(16):
        bounded.add(key, [5 if key % 2 else None, key], now=0)
    # The eight least recently used are looked at: their four expired make room.
    bounded.add(16, [None, 16], now=5)
    assert list(bounded) == [0, 2, 4, 6, *range(8, 17)]


def test_denying_entries_go_only_when_nothing_else_can() -> None:
    bounded: BoundedMap[str] = BoundedMap(max_keys=8)
    bounded.add("locked", [None, "x"], now=0, denying=True)
    for i in range(100):
        bounded.add(f"k{i}", [None, i], now=0)
    assert list(bounded) == [*(f"k{i}" for i in range(93, 100)), "locked"]
    assert bounded.denying == 1
    bounded.mark("locked", denying=False)
    assert bounded.denying == 0
    for i in range(100, 107):
        bounded.add(f"k{i}", [None, i], now=0)
    assert list(bounded) == ["locked", *(f"k{i}" for i in range(100, 107))]
    bounded.add("k107", [None, 107], now=0)
    assert "locked" not in list(bounded)


def test_when_all_deny_the_least_recently_used_goes() -> None:
    bounded: BoundedMap[int] = BoundedMap(max_keys=8)
    for key in range(9):
        bounded.add(key, [None, key], now=0, denying=True)
    assert list(bounded) == [*range(1, 9)]
    assert bounded.denying == 8


def test_below_the_cap_every_eighth_addition_drops_expired_ones() -> None:
    bounded: BoundedMap[int] = BoundedMap(max_keys=1000)
    for key in range(7):
        bounded.add(key, [1, key], now=0)
    assert len(bounded) == 7
    bounded.add(7, [None, 7], now=1)
    assert list(bounded) == [7]


def test_weight_is_the_key_length_plus_a_fixed_overhead() -> None:
    bounded: BoundedMap[object] = BoundedMap(max_keys=64, max_bytes=100_000)
    bounded.add("abc", [None, 1], now=0)
    assert bounded.bytes == 3 + 512
    bounded.add(("user:42", ("fixed_window", 5, 60, 5)), [None, 2], now=0)  # string parts only
    assert bounded.bytes == 3 + 512 + 7 + 512
    bounded.add(("lease", "ab"), [10, 3], now=0)
    assert bounded.bytes == 3 + 512 + 7 + 512 + 7 + 512
    bounded.rename("abc", "abcdef")
    assert bounded.bytes == 6 + 512 + 7 + 512 + 7 + 512
    assert bounded.entry(("lease", "ab"), now=10) is None  # expired
    assert bounded.bytes == 6 + 512 + 7 + 512
    bounded.pop("abcdef")
    assert bounded.bytes == 7 + 512
    bounded.clear()
    assert bounded.bytes == 0


def test_at_max_bytes_the_least_recently_used_go_until_the_new_entry_fits() -> None:
    bounded: BoundedMap[str] = BoundedMap(max_keys=64, max_bytes=5000)
    for i in range(9):
        bounded.add(f"{i}".ljust(100, "."), [None, i], now=0)  # 612 bytes each
    assert (len(bounded), bounded.bytes) == (8, 8 * 612)
    bounded.add("big".ljust(1000, "."), [None, "big"], now=0)  # 1512 bytes: three go
    assert [key[0] for key in bounded] == ["4", "5", "6", "7", "8", "b"]
    assert bounded.bytes == 5 * 612 + 1512
    # A lone entry heavier than the bound is kept, alone.
    bounded.add("huge".ljust(5000, "."), [None, "huge"], now=0)
    assert [key[:4] for key in bounded] == ["huge"]
    assert bounded.bytes == 5512


@pytest.mark.parametrize("max_bytes", [4095, 0, -1, True, 4096.0, "4096"])
def test_max_bytes_is_validated(max_bytes: object) -> None:
    with pytest.raises(InvalidArgument, match=f"max_bytes must be a whole number >= 4096, got {max_bytes!r}"):
        BoundedMap(max_keys=8, max_bytes=max_bytes)  # type: ignore[arg-type]


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
    assert min(sizes[64:]) == 64  # one out for each one in
    # The least recently used went first: what is left are the newest keys.
    assert [i for i in range(500) if twin.kept(i)] == list(range(436, 500))


def test_both_twins_hold_their_entries_in_the_one_bounded_map() -> None:
    assert type(MemoryStorage()._map) is type(MemoryBackend()._map) is BoundedMap
