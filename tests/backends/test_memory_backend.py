"""The memory backend: bounded, lazily expired, no thread."""

from __future__ import annotations

import threading

import pytest
from support import ManualClock

from bisman_ratelimit import InvalidArgument, Limiter
from bisman_ratelimit.backends import MemoryStorage


def test_starts_no_thread(clock: ManualClock) -> None:
    before = threading.active_count()
    limiter = Limiter(MemoryStorage(clock=clock))
    for algorithm in ("fixed_window", "sliding_window", "sliding_log", "token_bucket", "gcra"):
        limiter.hit("k", "1/second", algorithm)
    assert threading.active_count() == before


def test_entries_vanish_once_replenished(clock: ManualClock) -> None:
    storage = MemoryStorage(clock=clock)
    limiter = Limiter(storage)
    limiter.hit("k", "10/minute", "token_bucket")
    assert len(storage) == 1
    clock.advance(6)  # one token back: full again
    for i in range(2000):
        limiter.hit(f"other:{i}", "10/minute", "token_bucket")
    assert ("k",) not in {key[:1] for key in storage._map}


def test_never_holds_more_than_max_keys(clock: ManualClock) -> None:
    storage = MemoryStorage(clock=clock, max_keys=100)
    limiter = Limiter(storage)
    sizes = []
    for i in range(1000):
        limiter.hit(f"user:{i}", "5/hour")
        sizes.append(len(storage))
    assert max(sizes) == 100
    # At the cap the least recently used keys go first and start afresh.
    assert limiter.peek("user:999", "5/hour").remaining == 4
    assert limiter.peek("user:0", "5/hour").remaining == 5


def test_expired_entries_are_swept_before_live_ones_are_dropped(clock: ManualClock) -> None:
    storage = MemoryStorage(clock=clock, max_keys=100)
    limiter = Limiter(storage)
    limiter.hit("keeper", "5/day", "fixed_window")
    for i in range(99):
        limiter.hit(f"brief:{i}", "5/second", "fixed_window")
    clock.advance(1)
    # A new key at the cap looks at the eight least recently used: the
    # keeper stays, seven expired ones go.
    limiter.hit("new", "5/day", "fixed_window")
    assert len(storage) == 94
    # The 98 expired go before any of the live keys that come after them.
    for i in range(98):
        limiter.hit(f"more:{i}", "5/day", "fixed_window")
    assert len(storage) == 100
    assert {key[0].split(":")[0] for key in storage._map} == {"keeper", "new", "more"}
    assert limiter.peek("keeper", "5/day", "fixed_window").remaining == 4


def test_max_keys_is_validated() -> None:
    with pytest.raises(InvalidArgument, match="max_keys must be a whole number >= 8, got 0"):
        MemoryStorage(max_keys=0)


def test_from_url_takes_max_keys() -> None:
    limiter = Limiter.from_url("memory://?max_keys=50")
    assert isinstance(limiter.storage, MemoryStorage) and limiter.storage.max_keys == 50
