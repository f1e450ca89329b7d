"""Many processes (Redis) or threads (memory) on one key admit exactly the limit."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest
import redis
from support import period_with_room_left

from bisman_ratelimit import Limit, Limiter
from bisman_ratelimit.backends import MemoryStorage

ALGORITHMS = ["fixed_window", "sliding_window", "sliding_log", "token_bucket", "gcra"]
WORKERS = 4
HITS_PER_WORKER = 60
AMOUNT = 100


def _hammer(
    url: str,
    limit: Limit,
    algorithm: str,
    barrier: multiprocessing.synchronize.Barrier,
    results: multiprocessing.Queue[int],
) -> None:  # type: ignore[name-defined]
    limiter = Limiter.from_url(url)
    limiter.hit("warm-up", "1/second")
    barrier.wait()
    admitted = sum(limiter.hit("hot", limit, algorithm).allowed for _ in range(HITS_PER_WORKER))
    results.put(admitted)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_processes_on_redis_admit_exactly_the_limit(
    redis_url: str, redis_client: redis.Redis, algorithm: str
) -> None:
    # A fixed window ending mid-test would admit the amount twice.
    limit = Limit(AMOUNT, period_with_room_left(redis_client, near=86_400, room=60))
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(WORKERS)
    results = context.Queue()
    workers = [
        context.Process(target=_hammer, args=(redis_url, limit, algorithm, barrier, results))
        for _ in range(WORKERS)
    ]
    for worker in workers:
        worker.start()
    admitted = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    assert WORKERS * HITS_PER_WORKER > AMOUNT
    assert sum(admitted) == AMOUNT


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_threads_on_memory_admit_exactly_the_limit(algorithm: str) -> None:
    limiter = Limiter(MemoryStorage(clock=lambda: 1_699_920_000.0))
    admitted: list[int] = []
    barrier = threading.Barrier(8)

    def hammer() -> None:
        barrier.wait()
        admitted.append(sum(limiter.hit("hot", "100/day", algorithm).allowed for _ in range(50)))

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(admitted) == 100


def test_leases_under_contention_never_exceed_max_in_flight(redis_url: str) -> None:
    limiter = Limiter.from_url(redis_url)
    held = 0
    peak = 0
    lock = threading.Lock()
    barrier = threading.Barrier(6)

    def worker() -> None:
        nonlocal held, peak
        barrier.wait()
        for _ in range(30):
            lease = limiter.acquire("uploads", max_in_flight=3, ttl=10)
            if lease is None:
                continue
            with lock:
                held += 1
                peak = max(peak, held)
            time.sleep(0.001)
            with lock:
                held -= 1
            lease.release()

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 1 <= peak <= 3
