"""Outage soak: steady traffic through the example Starlette app while Redis dies and comes back.

    python benchmarks/soak_outage.py [--duration 30] [--rate 100] [--no-baseline] [--server any|redis|valkey]

The example app (``example_apps/starlette_app.py``, its limits in
``ratelimits.toml``) runs under uvicorn in its own process on a private
Redis. This process sends ``--rate`` requests a second to ``GET /`` from 500
client addresses (``X-Forwarded-For``, one trusted proxy hop), each well
within its limit of 100 a minute, plus 20 a second from one abusive address,
which its limit mostly refuses. Requests leave on a fixed schedule (open
loop), so a slow answer does not slow the traffic down. Redis is killed
(SIGKILL) at one third of the run and started again, empty, on the same
port at two thirds.

Two configurations of the app's storage URL, in the same run:

- **fallback**: ``?fallback=memory&timeout=50ms&breaker_open=1s``: during
  the outage the circuit breaker sends decisions to local counters;
- **bare** (baseline): the plain URL with its 50 ms budget: each request
  asks the dead Redis, and the middleware fails open (lets it through,
  unlimited; the log says when Redis failed and counts such requests every
  10 s).

For each, by phase (before, during, after the outage): requests, answers by
status (5xx target: 0), transport errors, p50/p99/max latency; then the
time from the restart until the app's decisions reach Redis again (the
first key written), how many log lines the storage failures caused, and
how many of the abuser's requests got through during the outage: it is over
its limit when Redis dies, so with the fallback the target is 0 (what its
limit refills during the outage aside, as Redis would allow it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import redis
from _common import machine_summary, markdown_table, private_server, server_version, source_revision

from bisman_ratelimit.testing import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = [f"198.51.100.{i}" for i in range(1, 251)] + [f"203.0.113.{i}" for i in range(1, 251)]
ABUSER = "192.0.2.66"
ABUSER_RATE = 20.0
FALLBACK_QUERY = "?fallback=memory&timeout=50ms&breaker_open=1s"


@dataclass(frozen=True)
class Sample:
    sent: float  # seconds since the start of the run
    latency: float
    status: int  # 0: no HTTP answer (transport error)
    abuser: bool


@dataclass
class Run:
    name: str
    samples: list[Sample]
    kill_at: float
    restart_at: float
    back_on_redis_after: float | None
    log_lines: int


class App:
    """The example app under uvicorn, in a process of its own."""

    def __init__(self, storage_url: str, log: IO[bytes]) -> None:
        self.port = free_port()
        self.log = log
        env = {
            **os.environ,
            "BISMAN_RATELIMIT_STORAGE_URL": storage_url,
            "BISMAN_RATELIMIT_TRUSTED_PROXIES": "1",
        }
        command = [
            sys.executable, "-m", "uvicorn", "--app-dir", str(ROOT / "example_apps"), "starlette_app:app",
            "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise SystemExit("the example app did not start; is the starlette extra installed?")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_lines(self, *needles: str) -> int:
        self.log.seek(0)
        lines = self.log.read().decode(errors="replace").splitlines()
        return sum(any(needle in line for needle in needles) for line in lines)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


async def traffic(url: str, duration: float, rate: float) -> list[Sample]:
    """Open-loop load: every request leaves at its scheduled time, answered or not."""
    samples: list[Sample] = []
    schedule = sorted(
        [(i / rate, CLIENTS[i % len(CLIENTS)], False) for i in range(int(duration * rate))]
        + [(i / ABUSER_RATE, ABUSER, True) for i in range(int(duration * ABUSER_RATE))]
    )
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10) as client:
        start = time.perf_counter()

        async def one(at: float, address: str, abuser: bool) -> None:
            sent = time.perf_counter()
            try:
                response = await client.get("/", headers={"x-forwarded-for": address})
                status = response.status_code
            except httpx.HTTPError:
                status = 0
            samples.append(Sample(sent - start, time.perf_counter() - sent, status, abuser))

        tasks = []
        for at, address, abuser in schedule:
            delay = start + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(at, address, abuser)))
        await asyncio.gather(*tasks)
    return samples


def wait_for_keys(server: RedisServer, since: float, found: list[float], stop: threading.Event) -> None:
    """Record when the restarted server holds its first key: decisions are on Redis again."""
    with redis.Redis(port=server.port, socket_timeout=1) as client:
        while not stop.is_set():
            try:
                if client.dbsize() > 0:
                    found.append(time.perf_counter() - since)
                    return
            except redis.RedisError:
                pass
            time.sleep(0.005)


def soak(name: str, server: RedisServer, storage_url: str, duration: float, rate: float) -> Run:
    with redis.Redis(port=server.port) as client:
        client.flushall()
    kill_at, restart_at = duration / 3, 2 * duration / 3
    back: list[float] = []
    stop = threading.Event()

    def outage() -> None:
        time.sleep(kill_at)
        server.kill()
        time.sleep(restart_at - kill_at)
        server.start()
        watcher = threading.Thread(target=wait_for_keys, args=(server, time.perf_counter(), back, stop))
        watcher.start()
        watcher.join(timeout=duration)

    with tempfile.TemporaryFile() as log:
        app = App(storage_url, log)
        chaos = threading.Thread(target=outage)
        try:
            chaos.start()
            samples = asyncio.run(traffic(app.url, duration, rate))
        finally:
            stop.set()
            chaos.join()
            app.stop()
        log_lines = app.log_lines("rate-limit storage", "answered by the outage policy")
    return Run(name, samples, kill_at, restart_at, back[0] if back else None, log_lines)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def percentile(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=1000, method="inclusive")[int(q * 10) - 1]
        if len(values) > 1
        else values[0]
    )


def abuser_through(run: Run) -> tuple[int, int]:
    """The abuser's requests sent during the outage, and how many of them were let through."""
    during = [s for s in run.samples if s.abuser and run.kill_at <= s.sent < run.restart_at]
    return len(during), sum(200 <= s.status < 300 for s in during)


def phase_rows(run: Run) -> list[list[str]]:
    phases = [
        ("before", 0.0, run.kill_at),
        ("during", run.kill_at, run.restart_at),
        ("after", run.restart_at, 1e9),
    ]
    rows = []
    for phase, start, end in phases:
        chosen = [s for s in run.samples if start <= s.sent < end]
        latencies = [s.latency for s in chosen if s.status]
        statuses = [s.status for s in chosen]
        abuser = [s for s in chosen if s.abuser]
        rows.append(
            [
                run.name,
                phase,
                str(len(chosen)),
                str(sum(200 <= st < 300 for st in statuses)),
                f"{sum(s.status == 429 for s in abuser)}/{len(abuser)}",
                str(sum(st == 429 for st, s in zip(statuses, chosen, strict=True) if not s.abuser)),
                str(sum(st >= 500 for st in statuses)),
                str(statuses.count(0)),
                ms(percentile(latencies, 50)) if latencies else "-",
                ms(percentile(latencies, 99)) if latencies else "-",
                ms(max(latencies)) if latencies else "-",
            ]
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of traffic (default 30)")
    parser.add_argument("--rate", type=float, default=100.0, help="requests a second from the 500 clients")
    parser.add_argument("--server", default="any", choices=["any", "redis", "valkey"])
    parser.add_argument("--no-baseline", action="store_true", help="skip the run without the fallback")
    args = parser.parse_args()

    with private_server(args.server) as server:
        with redis.Redis(port=server.port) as client:
            version = server_version(client.info("server"))
        runs = [soak("fallback", server, server.url + FALLBACK_QUERY, args.duration, args.rate)]
        if not args.no_baseline:
            runs.append(soak("bare", server, server.url, args.duration, args.rate))

    print(
        f"# Outage soak: {args.duration:g} s at {args.rate:g} req/s + {ABUSER_RATE:g} req/s from one abuser\n"
    )
    print(f"{machine_summary()}; {version}; {source_revision()}\n")
    print(f"Redis killed at {runs[0].kill_at:g} s, started again (empty) at {runs[0].restart_at:g} s.\n")
    headers = [
        "storage", "phase", "requests", "2xx", "abuser 429", "other 429", "5xx", "no answer",
        "p50 ms", "p99 ms", "max ms",
    ]  # fmt: skip
    print(markdown_table(headers, [row for run in runs for row in phase_rows(run)]))
    print()
    rows = []
    for run in runs:
        back = f"{run.back_on_redis_after:.2f} s" if run.back_on_redis_after is not None else "never"
        sent, through = abuser_through(run)
        rows.append([run.name, back, str(run.log_lines), f"{through}/{sent}"])
    headers = [
        "storage", "decisions on Redis again after the restart", "storage log lines",
        "abuser let through during the outage",
    ]  # fmt: skip
    print(markdown_table(headers, rows))
    fives = sum(st.status >= 500 for st in runs[0].samples)
    print(f"\n5xx with the fallback: {fives} (target 0): {'met' if fives == 0 else 'missed'}")
    sent, through = abuser_through(runs[0])
    print(f"abuser let through during the outage with the fallback: {through} of {sent} (target 0)")


if __name__ == "__main__":
    main()
