"""What Redis spends per decision, for each O(1) algorithm, against the floor app.

    python benchmarks/loadtest/cpu.py                       # 3 rounds of 3 s per contender and mix
    python benchmarks/loadtest/cpu.py --rounds 5 --seconds 5 --connections 16

Measured as a user pays it: wrk over loopback against the load test's
Starlette app under one uvicorn worker, one private Redis. Contenders:

- ``floor``: the app doing one raw ``EVALSHA`` of ``INCR`` (and ``PEXPIRE``
  on a new key) per request, the least a Redis-backed limit can cost;
- ``ours <algorithm>``: ``RateLimitMiddleware`` with ``limits.toml`` on
  Redis, its algorithm replaced by each O(1) one in turn;
- ``ours fixed_window, coalesce=off``: one check per round trip, as the
  floor app sends them, to show what sharing writes gives.

Two client mixes: 20,000 clients (about 0.25 hits per client a second:
nearly every hit finds its state expired and writes a new one, with an
expiry) and 1,000 clients (about 5 a second: most hits update a live state).

Per contender and mix: Redis CPU (``used_cpu_sys`` + ``used_cpu_user``)
per decision, over every request wrk made (each one decision), and the
script's own time, ``EVALSHA``'s ``usec`` per call in ``INFO commandstats``
(the server's work inside the script, without reading and writing the
connection). Rounds interleave the contenders; a figure is the median of
its rounds, a ratio the median of the per-round ratios to the floor.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _common import machine_summary, markdown_table, source_revision  # noqa: E402
from run import APPS, Contender, Load, RedisServer, finish, redis_info, serving, wrk  # noqa: E402

ALGORITHMS = ("fixed_window", "sliding_window", "token_bucket", "gcra")
MIXES = {"20,000 clients": 20_000, "1,000 clients": 1_000}


@dataclass(frozen=True)
class Entry:
    label: str
    contender: Contender
    algorithm: str | None = None


@dataclass(frozen=True)
class Sample:
    decisions: int
    cpu_us: float
    script_us: float
    other_statuses: int

    @property
    def cpu_per_decision(self) -> float:
        return self.cpu_us / self.decisions


def entries() -> list[Entry]:
    def ours(options: str = "") -> Contender:
        return Contender(
            name="starlette-ours-redis",
            framework="starlette",
            server="uvicorn",
            lib="ours",
            storage="redis",
            options=options,
        )

    floor = Contender(
        name="starlette-floor", framework="starlette", server="uvicorn", lib="floor", storage="redis"
    )
    rows = [Entry("floor", floor)]
    rows += [Entry(f"ours {algorithm}", ours(), algorithm) for algorithm in ALGORITHMS]
    rows.append(Entry("ours fixed_window, coalesce=off", ours("&coalesce=off"), "fixed_window"))
    return rows


def limits_file(folder: Path, algorithm: str) -> Path:
    """``limits.toml`` with every route's algorithm replaced by ``algorithm``."""
    text = (APPS / "limits.toml").read_text()
    path = folder / f"limits-{algorithm}.toml"
    path.write_text(text.replace('algorithm = "fixed_window"', f'algorithm = "{algorithm}"'))
    return path


def cpu_seconds(info: dict[str, Any]) -> float:
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def evalsha(info: dict[str, Any]) -> tuple[int, int]:
    stats = info["commandstats"].get("evalsha", {"calls": 0, "usec": 0})
    return stats["calls"], stats["usec"]


def measure(base: str, client: redis.Redis, clients: int, connections: int, seconds: int) -> Sample:
    load = Load(
        role="clients", path="/api/calls", prefix="c", clients=clients, connections=connections, threads=2
    )
    client.flushall()
    before = redis_info(client)
    tick = finish(wrk(base, load, seconds), load, time.time())
    after = redis_info(client)
    if before is None or after is None:
        raise RuntimeError("Redis did not answer INFO")
    calls = evalsha(after)[0] - evalsha(before)[0]
    usec = evalsha(after)[1] - evalsha(before)[1]
    decided = sum(count for status, count in tick.statuses.items() if status in ("200", "429"))
    return Sample(
        decisions=decided,
        cpu_us=(cpu_seconds(after) - cpu_seconds(before)) * 1e6,
        script_us=usec / calls if calls else 0.0,
        other_statuses=tick.requests - decided,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=3, help="wrk's run per contender, mix and round")
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        parser.error("wrk is not on PATH (Debian: apt-get install wrk)")

    rows = entries()
    samples: dict[tuple[str, str], list[Sample]] = {(row.label, mix): [] for row in rows for mix in MIXES}
    folder = Path(tempfile.mkdtemp(prefix="loadtest-cpu-"))
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        version = client.info("server")["redis_version"]
        for round_no in range(args.rounds):
            for row in rows:
                print(f"[round {round_no + 1}/{args.rounds}] {row.label}", file=sys.stderr, flush=True)
                extra = {"LOADTEST_LIMITS": str(limits_file(folder, row.algorithm))} if row.algorithm else {}
                with serving(row.contender, server.url, 1, folder / "server.log", extra) as base:
                    warm = Load(
                        role="clients", path="/api/calls", prefix="w", clients=1000, connections=8, threads=1
                    )
                    finish(wrk(base, warm, 1), warm, time.time())
                    for mix, clients in MIXES.items():
                        samples[(row.label, mix)].append(
                            measure(base, client, clients, args.connections, args.seconds)
                        )

    print(f"# Redis CPU per decision\n\n{machine_summary()}; Redis {version}; {source_revision()}.")
    print(
        f"wrk, {args.connections} connections, one uvicorn worker; {args.rounds} rounds of {args.seconds} s "
        "per contender and mix, interleaved; medians.\n"
    )
    for mix in MIXES:
        floor = samples[("floor", mix)]
        table = []
        for row in rows:
            runs = samples[(row.label, mix)]
            ratios = [s.cpu_per_decision / f.cpu_per_decision for s, f in zip(runs, floor, strict=True)]
            script_ratios = [s.script_us / f.script_us for s, f in zip(runs, floor, strict=True)]
            table.append(
                [
                    row.label,
                    f"{statistics.median(s.decisions for s in runs) / args.seconds:,.0f}",
                    f"{statistics.median(s.cpu_per_decision for s in runs):.1f}",
                    f"{statistics.median(ratios):.2f}",
                    f"{statistics.median(s.script_us for s in runs):.1f}",
                    f"{statistics.median(script_ratios):.2f}",
                    str(sum(s.other_statuses for s in runs)),
                ]
            )
        print(f"## {mix}\n")
        print(
            markdown_table(
                [
                    "contender",
                    "decisions/s",
                    "Redis CPU µs/decision",
                    "x floor",
                    "EVALSHA µs/call",
                    "x floor",
                    "other statuses",
                ],
                table,
            )
        )
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
