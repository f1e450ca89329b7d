"""Each way of declaring the load test's limits, served over HTTP, against the limits file.

    python benchmarks/loadtest/paths.py                     # 5 rounds of 3 s per contender
    python benchmarks/loadtest/paths.py --rounds 10 --storage memory --only fastapi

The load test's apps under one worker each (uvicorn; gunicorn for Django),
wrk over loopback with 1,000 clients (every request under its limit, so
every one is decided and answered 200), one private Redis. The same limits
(``limits.toml``: 50 a second per ``X-Client``, fixed window) declared:

- in the limits file, the reference of each framework and server;
- in code: ``@limit`` on Starlette and FastAPI endpoints,
  ``Depends(RateLimit(...))`` on FastAPI routes, ``@ratelimit`` on Django
  views (the middleware on the app in every case, as the docs advise);
- on FastAPI, the limits file plus a dependency that does nothing: what
  FastAPI spends on solving any dependency, which a dependency pays first.

Per contender: requests a second, and the CPU time the server's processes
spent per request (``/proc``: user + system of every process serving the
port). The app server runs on a CPU of its own (the last), wrk and Redis on
the first, so that the scheduler does not move the figures from one run to
the next (``--no-pin`` leaves it to the scheduler). Rounds interleave
the contenders; a figure is the median of its rounds, a ratio the median of
the per-round ratios to the limits-file path of the same framework and
server (goal: the code paths within 5% of it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _common import machine_summary, markdown_table, source_revision  # noqa: E402
from run import Contender, Load, RedisServer, Server, finish, serving, wrk  # noqa: E402

Declared = Literal["file", "decorator", "dependency", "file+noop"]
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Entry:
    label: str
    contender: Contender
    declared: Declared

    @property
    def reference(self) -> str:
        """The label of the limits-file entry this one is compared with."""
        return f"{self.contender.name}: limits file"


@dataclass(frozen=True)
class Sample:
    requests: int
    seconds: float
    cpu_us: float
    other_statuses: int

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_per_request(self) -> float:
        return self.cpu_us / self.requests


WAYS: dict[str, dict[Declared, str]] = {
    "starlette": {"file": "limits file", "decorator": "@limit"},
    "fastapi": {
        "file": "limits file",
        "file+noop": "limits file + a no-op dependency",
        "dependency": "Depends(RateLimit)",
        "decorator": "@limit",
    },
    "django": {"file": "limits file", "decorator": "@ratelimit"},
}


def entries(storage: Literal["memory", "redis"]) -> list[Entry]:
    rows = []
    servers: tuple[tuple[Literal["starlette", "fastapi", "django"], Server, str], ...] = (
        ("starlette", "uvicorn", "starlette"),
        ("fastapi", "uvicorn", "fastapi"),
        ("django", "gunicorn-uvicorn", "django-asgi"),
        ("django", "gunicorn-gthread", "django-wsgi"),
    )
    for framework, server, name in servers:
        contender = Contender(name=name, framework=framework, server=server, lib="ours", storage=storage)
        for declared, way in WAYS[framework].items():
            rows.append(Entry(f"{name}: {way}", contender, declared))
    return rows


def serving_processes(port: int) -> list[Path]:
    """The ``/proc`` entries of the processes serving ``port``: those with an argument that is
    the port (uvicorn's ``--port``) or ends with ``:<port>`` (gunicorn's ``-b``), and no URL."""
    number = str(port).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        if any(
            argument == number or (argument.endswith(b":" + number) and b"/" not in argument)
            for argument in arguments
        ):
            found.append(entry)
    return found


def cpu_seconds(port: int) -> float:
    """User + system CPU of the processes serving ``port``."""
    total = 0
    for entry in serving_processes(port):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # utime and stime: fields 14 and 15 of stat, counted from 1 with the name as field 2
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def port_of(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


def pin_server(port: int, cpu: int) -> None:
    """Every thread of the processes serving ``port`` on ``cpu``."""
    for entry in serving_processes(port):
        for thread in (entry / "task").iterdir():
            try:
                os.sched_setaffinity(int(thread.name), {cpu})
            except OSError:  # gone meanwhile
                continue


def measure(base: str, connections: int, seconds: int) -> Sample:
    load = Load(
        role="clients", path="/api/calls", prefix="c", clients=1_000, connections=connections, threads=2
    )
    port = port_of(base)
    before = cpu_seconds(port)
    tick = finish(wrk(base, load, seconds), load, time.time())
    used = cpu_seconds(port) - before
    ok = tick.statuses.get("200", 0)
    return Sample(
        requests=ok, seconds=tick.duration_us / 1e6, cpu_us=used * 1e6, other_statuses=tick.requests - ok
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=3, help="wrk's run per contender and round")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--storage", choices=("redis", "memory"), default="redis")
    parser.add_argument(
        "--only", choices=("starlette", "fastapi", "django-asgi", "django-wsgi"), help="one server's paths"
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="leave CPUs to the scheduler (default: the app server on the last CPU, the rest on the first)",
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        parser.error("wrk is not on PATH (Debian: apt-get install wrk)")
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    server_cpu = cpus[-1] if len(cpus) >= 2 and not args.no_pin else None
    if server_cpu is not None:
        # wrk and Redis, started from here, share the first CPU; the server measured has its own.
        os.sched_setaffinity(0, {cpus[0]})
    placement = (
        f"app server on CPU {server_cpu}, wrk and Redis on CPU {cpus[0]}"
        if server_cpu is not None
        else "not pinned"
    )

    rows = [row for row in entries(args.storage) if args.only in (None, row.contender.name)]
    samples: dict[str, list[Sample]] = {row.label: [] for row in rows}
    folder = Path(tempfile.mkdtemp(prefix="loadtest-paths-"))
    with RedisServer() as server:
        for round_no in range(args.rounds):
            for row in rows:
                print(f"[round {round_no + 1}/{args.rounds}] {row.label}", file=sys.stderr, flush=True)
                extra = {"LOADTEST_DECLARE": row.declared}
                with serving(row.contender, server.url, 1, folder / "server.log", extra) as base:
                    if server_cpu is not None:
                        pin_server(port_of(base), server_cpu)
                    warm = Load(
                        role="clients", path="/api/calls", prefix="w", clients=1_000, connections=8, threads=1
                    )
                    finish(wrk(base, warm, 1), warm, time.time())
                    samples[row.label].append(measure(base, args.connections, args.seconds))

    print(f"# Each way of declaring a limit, over HTTP\n\n{machine_summary()}; {source_revision()}.")
    print(
        f"Storage: {args.storage}. wrk, {args.connections} connections, 1,000 clients, one worker; "
        f"{placement}; {args.rounds} rounds of {args.seconds} s per contender, interleaved; medians, "
        "and medians of the per-round ratios to the limits file of the same framework and server.\n"
    )
    table = []
    for row in rows:
        runs, reference = samples[row.label], samples[row.reference]
        rate = [s.per_second / r.per_second for s, r in zip(runs, reference, strict=True)]
        cpu = [s.cpu_per_request / r.cpu_per_request for s, r in zip(runs, reference, strict=True)]
        judged = row.declared in ("decorator", "dependency")
        table.append(
            [
                row.label,
                f"{statistics.median(s.per_second for s in runs):,.0f}",
                f"{statistics.median(rate):.3f}" if row.declared != "file" else "",
                f"{statistics.median(s.cpu_per_request for s in runs):.0f}",
                f"{statistics.median(cpu):.3f}" if row.declared != "file" else "",
                (
                    (
                        "met"
                        if statistics.median(cpu) <= 1.05 and statistics.median(rate) >= 0.95
                        else "missed"
                    )
                    if judged
                    else ""
                ),
                str(sum(s.other_statuses for s in runs)),
            ]
        )
    print(
        markdown_table(
            [
                "path",
                "requests/s",
                "x limits file",
                "server CPU µs/request",
                "x limits file",
                "within 5%",
                "other statuses",
            ],
            table,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
