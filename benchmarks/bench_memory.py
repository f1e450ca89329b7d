"""The memory backend under a flood of new keys: pause per call, who survives, weight.

    python benchmarks/bench_memory.py [--sizes 10000,100000] [--rounds 2] [--gc]

For each cap (``max_keys``) it fills a ``MemoryStorage`` with one hit on
each of ``cap`` distinct keys, then makes ``rounds * cap`` more hits on new
keys, so that every call past the fill meets a full map. Each call is
timed alone with ``time.perf_counter_ns`` (a monotonic clock); the table
gives the median, the 99th percentile and the worst single call, for the
fill and for the calls at the cap, and the worst call on this thread's CPU
clock (``time.thread_time_ns``), which leaves out the time the scheduler
gave to other processes. The garbage collector waits until the end (its
pauses belong to the interpreter, whatever the map does); ``--gc`` leaves
it on.

Two more lines: whether a key exhausted before a flood of 100,000 new keys
(``max_keys=2000``) is still denied after it, and the approximate weight
held with 2 KB keys under ``max_bytes``.

It uses the public API only, so the figures of an older revision come from
the same script: ``PYTHONPATH=<old checkout> python benchmarks/bench_memory.py``.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time

from bisman_ratelimit import Limiter
from bisman_ratelimit.backends import MemoryStorage


class Clock:
    """Time that moves only when told, so no window rolls over mid-run."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def pauses(limiter: Limiter, prefix: str, count: int) -> tuple[list[int], list[int]]:
    """Nanoseconds of each of ``count`` hits on new keys: wall clock, and this thread's CPU."""
    wall, cpu = [], []
    wall_clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    hit = limiter.hit
    for i in range(count):
        start, start_cpu = wall_clock(), cpu_clock()
        hit(f"{prefix}{i}", "5/hour")
        cpu.append(cpu_clock() - start_cpu)
        wall.append(wall_clock() - start)
    return wall, cpu


def row(cap: int, phase: str, samples: tuple[list[int], list[int]]) -> list[str]:
    wall, cpu = sorted(samples[0]), sorted(samples[1])
    return [
        f"{cap:,}",
        phase,
        f"{len(wall):,}",
        f"{statistics.median(wall) / 1000:.1f}",
        f"{wall[int(len(wall) * 0.99)] / 1000:.1f}",
        f"{wall[-1] / 1e6:.2f}",
        f"{cpu[-1] / 1e6:.2f}",
    ]


def flood_survivor() -> str:
    limiter = Limiter(MemoryStorage(clock=Clock(), max_keys=2000))
    for _ in range(6):
        limiter.hit("login:attacker", "5/minute")
    for i in range(100_000):
        limiter.hit(f"api:{i}", "100/minute")
    decision = limiter.hit("login:attacker", "5/minute")
    return "still denied" if not decision.allowed else f"allowed again ({decision.remaining} left)"


def weight_under_max_bytes() -> str:
    try:
        storage = MemoryStorage(clock=Clock(), max_bytes=64 * 1024 * 1024)
    except TypeError:
        return "no max_bytes in this revision"
    limiter = Limiter(storage)
    for i in range(100_000):
        limiter.hit(f"{i:08d}" + "k" * 2040, "5/hour")
    return f"{len(storage):,} entries, {storage._map.bytes / 2**20:.1f} MiB accounted"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--gc", action="store_true", help="leave the garbage collector on")
    args = parser.parse_args(argv)
    if not args.gc:
        gc.disable()
    rows = []
    for cap in (int(size) for size in args.sizes.split(",")):
        limiter = Limiter(MemoryStorage(clock=Clock(), max_keys=cap))
        rows.append(row(cap, "fill", pauses(limiter, "fill:", cap)))
        rows.append(row(cap, "at the cap", pauses(limiter, "flood:", args.rounds * cap)))
    header = ["max_keys", "phase", "calls", "p50 µs", "p99 µs", "max ms", "max CPU ms"]
    print(f"| {' | '.join(header)} |")
    print(f"| {' | '.join('---' for _ in header)} |")
    for cells in rows:
        print(f"| {' | '.join(cells)} |")
    gc.enable()
    print()
    print(f"exhausted key after 100,000 new keys (max_keys=2000): {flood_survivor()}")
    print(f"100,000 hits on 2 KB keys, max_bytes=64 MiB: {weight_under_max_bytes()}")


if __name__ == "__main__":
    main(sys.argv[1:])
