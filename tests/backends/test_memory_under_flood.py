"""The memory backends under a flood of new keys: no long pause, the right keys kept, a bound in bytes."""

from __future__ import annotations

import gc
import re
import threading
import time

import pytest
from support import ManualClock

from bisman_ratelimit import InvalidArgument, Limiter
from bisman_ratelimit.backends import MemoryStorage
from bisman_ratelimit.stores import MemoryBackend, SessionStore, backend_from_url


def test_no_call_stalls_for_a_sweep_at_100000_entries(clock: ManualClock) -> None:
    storage = MemoryStorage(clock=clock, max_keys=100_000)
    limiter = Limiter(storage)
    worst = 0
    # Each call is timed on this thread's CPU clock (monotonic): on a
    # shared machine the wall clock also counts time given to other
    # processes. The collector's pauses belong to the interpreter, so it
    # waits until the end.
    gc.disable()
    try:
        for i in range(250_000):
            start = time.thread_time_ns()
            limiter.hit(f"user:{i}", "5/hour")
            worst = max(worst, time.thread_time_ns() - start)
    finally:
        gc.enable()
    assert len(storage) == 100_000
    # A sweep of the whole map took 60 to 125 ms here.
    assert worst < 5_000_000, f"worst call took {worst / 1e6:.1f} ms"


def test_a_locked_out_client_outlives_a_flood_of_new_keys(clock: ManualClock) -> None:
    storage = MemoryStorage(clock=clock, max_keys=2000)
    limiter = Limiter(storage)
    for _ in range(5):
        assert limiter.hit("login:attacker", "5/minute").allowed
    assert limiter.hit("login:attacker", "5/minute").allowed is False

    def flood(thread: int) -> None:
        for i in range(25_000):
            limiter.hit(f"api-key:{thread}:{i}", "100/minute")

    threads = [threading.Thread(target=flood, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(storage) == 2000
    decision = limiter.hit("login:attacker", "5/minute")
    assert (decision.allowed, decision.remaining, decision.retry_after) == (False, 0, 72.0)


def test_the_last_allowed_hit_already_protects_the_counter(clock: ManualClock) -> None:
    limiter = Limiter(MemoryStorage(clock=clock, max_keys=2000))
    for _ in range(5):
        assert limiter.hit("login:attacker", "5/minute").allowed
    for i in range(10_000):
        limiter.hit(f"api-key:{i}", "100/minute")
    assert limiter.hit("login:attacker", "5/minute").allowed is False


def test_a_recently_counted_client_outlives_idle_ones(clock: ManualClock) -> None:
    storage = MemoryStorage(clock=clock, max_keys=2000)
    limiter = Limiter(storage)
    for i in range(100_000):
        if i % 1000 == 0:
            limiter.hit("user:regular", "1000/hour")
        limiter.hit(f"api-key:{i}", "100/minute")
    assert limiter.peek("user:regular", "1000/hour").remaining == 900


def test_a_session_in_use_outlives_a_flood_of_new_ones(clock: ManualClock) -> None:
    backend = MemoryBackend(clock=clock, max_keys=64)
    sessions = SessionStore(backend)
    kept = sessions.create({"user": "ann"})
    for i in range(1000):
        sessions.create({"user": f"bot{i}"})
        if i % 10 == 0:
            assert sessions.load(kept.id) is not None
    assert len(backend.live_keys()) == 64
    loaded = sessions.load(kept.id)
    assert loaded is not None and loaded.data == {"user": "ann"}


def test_max_bytes_from_the_url_bounds_the_weight(clock: ManualClock) -> None:
    limiter = Limiter.from_url("memory://?max_keys=2000&max_bytes=1048576")
    storage = limiter.storage
    assert isinstance(storage, MemoryStorage) and storage.max_bytes == 1_048_576
    storage.clock = clock
    keys = [f"{i:08d}".ljust(2048, "k") for i in range(1000)]
    for key in keys:
        limiter.hit(key, "5/hour")
    # 2 KB keys: 2048 + 512 bytes each, 409 of them fit in 1 MiB.
    assert len(storage) == 409
    assert storage._map.bytes == 409 * 2560
    assert [i for i, key in enumerate(keys) if limiter.peek(key, "5/hour").remaining == 4] == list(
        range(591, 1000)
    )


def test_a_store_url_takes_max_bytes_too() -> None:
    backend = backend_from_url("memory://?max_keys=64&max_bytes=65536", use_async=False)
    assert isinstance(backend, MemoryBackend)
    assert (backend.max_keys, backend.max_bytes) == (64, 65_536)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "memory://?max_bytes=lots",
            "bad storage URL 'memory://?max_bytes=lots': max_bytes must be a whole number",
        ),
        ("memory://?max_bytes=100", "max_bytes must be a whole number >= 4096, got 100"),
    ],
)
def test_max_bytes_in_a_url_is_validated(url: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        Limiter.from_url(url)
