"""Coalesced asyncio checks against one-at-a-time and the pipelined floor, and Redis CPU per decision.

    python benchmarks/bench_coalesce.py [--quick] [--server any|redis|valkey] [--pin split|same|none]

Prints two markdown tables.

Throughput and latency at 1, 8, 64 and 256 concurrent tasks, each row
measured in this one process against one private server, the contenders
interleaved round by round (figures are medians of the rounds):

- the pipelined floor: the same EVALSHA our fixed-window check sends, on
  one connection, as many per write as there are tasks (a redis-py
  pipeline; its latency is the whole pipeline's round trip);
- today's path: ``AsyncLimiter`` with ``coalesce=off``, each check written
  and read alone on a connection of its own;
- coalesced: ``AsyncLimiter`` as it comes, the checks of one turn of the
  event loop in one write.

On a private three-primary Redis Cluster: checks per second at 64 tasks,
coalesced (one batch per node) against ``coalesce=off``, interleaved the
same way.

Redis CPU per decision, per O(1) algorithm: ``INFO commandstats`` (every
command's ``usec`` and ``calls``) over a run of single-limit hits, against
the floor of one EVALSHA doing ``INCR`` and ``PEXPIRE``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import redis
import redis.asyncio
from _common import (
    Round,
    machine_summary,
    markdown_table,
    median_round,
    percentile,
    pin,
    private_server,
    progress,
    server_version,
    source_revision,
)

from bisman_ratelimit import AsyncLimiter, Limiter
from bisman_ratelimit.backends import RedisStorage
from bisman_ratelimit.backends._base import Spec
from bisman_ratelimit.backends._redis import SINGLE
from bisman_ratelimit.core import Limit
from bisman_ratelimit.testing import RedisServer, find_server_binary, free_port

LIMIT = "1000000000/hour"
KEYS = [f"user:{n}" for n in range(1000)]
TASKS = (1, 8, 64, 256)
ALGORITHMS = ("fixed_window", "sliding_window", "token_bucket", "gcra")
# One EVALSHA doing what the least rate limit does: count, and expire.
FLOOR_SCRIPT = "local n = redis.call('INCR', KEYS[1]) redis.call('PEXPIRE', KEYS[1], 60000) return n"


async def _run_tasks(tasks: int, seconds: float, step: Callable[[int], Awaitable[int]]) -> Round:
    """``tasks`` tasks calling ``step`` for ``seconds``; ``step`` returns how many checks it made."""
    latencies: list[float] = []
    done = 0
    clock = time.perf_counter
    stop = clock() + seconds

    async def worker(n: int) -> None:
        nonlocal done
        at = n
        while clock() < stop:
            began = clock()
            made = await step(at)
            latencies.append(clock() - began)
            done += made
            at += tasks

    began = clock()
    await asyncio.gather(*(worker(n) for n in range(tasks)))
    elapsed = clock() - began
    return Round(rate=done / elapsed, p50=percentile(latencies, 0.5), p99=percentile(latencies, 0.99))


def _through(limiter: AsyncLimiter) -> Callable[[int], Awaitable[int]]:
    async def step(at: int) -> int:
        await limiter.hit(KEYS[at % len(KEYS)], LIMIT)
        return 1

    return step


async def _throughput_rows(url: str, rounds: int, seconds: float) -> list[list[str]]:
    client = redis.asyncio.Redis.from_url(url)
    limit = Limit.parse(LIMIT)
    naming = RedisStorage(redis.Redis.from_url(url))
    spec = Spec("fixed_window", limit.amount, limit.period_us, limit.amount)
    script = SINGLE["fixed_window"]
    await client.script_load(script.source)
    argv = {key: (naming.key_for(key, spec), *naming._one_args(spec, 1, True)) for key in KEYS}
    today = AsyncLimiter.from_url(url + "?coalesce=off&blocked_cache=off&timeout=1s")
    coalesced = AsyncLimiter.from_url(url + "?blocked_cache=off&timeout=1s")
    rows = []
    try:
        for limiter in (today, coalesced):
            await limiter.warm()
        for tasks in TASKS:
            progress(f"{tasks} tasks")

            async def floor(at: int, tasks: int = tasks) -> int:
                # The floor sends a whole row of checks per write, from one task.
                pipe = client.pipeline(transaction=False)
                for n in range(tasks):
                    key, *args = argv[KEYS[(at * tasks + n) % len(KEYS)]]
                    pipe.evalsha(script.sha, 1, key, *args)
                await pipe.execute()
                return tasks

            contenders: list[tuple[str, int, Callable[[int], Awaitable[int]]]] = [
                ("floor", 1, floor),
                ("today", tasks, _through(today)),
                ("coalesced", tasks, _through(coalesced)),
            ]
            results: dict[str, list[Round]] = {name: [] for name, _, _ in contenders}
            for round_no in range(rounds):
                shift = round_no % len(contenders)
                for name, workers, step in [*contenders[shift:], *contenders[:shift]]:
                    results[name].append(await _run_tasks(workers, seconds, step))
            floor_m, today_m, ours_m = (
                median_round(results[name]) for name in ("floor", "today", "coalesced")
            )
            rows.append(
                [
                    str(tasks),
                    f"{floor_m.rate:,.0f}",
                    f"{today_m.rate:,.0f}",
                    f"{ours_m.rate:,.0f}",
                    f"{today_m.rate / floor_m.rate:.2f}",
                    f"{ours_m.rate / floor_m.rate:.2f}",
                    f"{today_m.p50 * 1e6:.0f} / {today_m.p99 * 1e6:.0f}",
                    f"{ours_m.p50 * 1e6:.0f} / {ours_m.p99 * 1e6:.0f}",
                ]
            )
    finally:
        await today.aclose()
        await coalesced.aclose()
        await client.aclose()
        naming.close()
    return rows


CLUSTER_SLOTS = 16384
CLUSTER_TASKS = 64


@contextlib.contextmanager
def private_cluster(kind: str, primaries: int = 3) -> Iterator[str]:
    """A throwaway Redis Cluster of ``primaries`` servers, slots split evenly; yields its URL."""
    binary = find_server_binary(kind)
    if binary is None:
        raise SystemExit(f"no {kind} server binary found")
    buses = [free_port() for _ in range(primaries)]
    servers = [
        RedisServer(binary, args=("--cluster-enabled", "yes", "--cluster-port", str(bus))) for bus in buses
    ]
    with contextlib.ExitStack() as stack:
        for server in servers:
            stack.enter_context(server)
        clients = [stack.enter_context(redis.Redis(port=server.port)) for server in servers]
        share = CLUSTER_SLOTS // primaries
        for index, client in enumerate(clients):
            last = CLUSTER_SLOTS - 1 if index == primaries - 1 else (index + 1) * share - 1
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", index * share, last)
        for server, bus in zip(servers[1:], buses[1:], strict=True):
            clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", server.port, bus)
        deadline = time.monotonic() + 30
        while not all(_cluster_ok(client, primaries) for client in clients):
            if time.monotonic() > deadline:
                raise SystemExit("the benchmark's cluster did not form")
            time.sleep(0.05)
        yield "redis+cluster://" + ",".join(f"127.0.0.1:{server.port}" for server in servers)


def _cluster_ok(client: redis.Redis, primaries: int) -> bool:
    text = client.execute_command("CLUSTER", "INFO")
    text = text.decode() if isinstance(text, bytes) else str(text)
    fields = dict(line.split(":", 1) for line in text.split() if ":" in line)
    return fields.get("cluster_state") == "ok" and fields.get("cluster_known_nodes") == str(primaries)


async def _cluster_row(url: str, rounds: int, seconds: float) -> list[str]:
    today = AsyncLimiter.from_url(url + "?coalesce=off&blocked_cache=off&timeout=1s")
    coalesced = AsyncLimiter.from_url(url + "?blocked_cache=off&timeout=1s")
    try:
        contenders = [("today", _through(today)), ("coalesced", _through(coalesced))]
        for _, step in contenders:  # the slot map, the script on every primary
            await _run_tasks(CLUSTER_TASKS, seconds / 2, step)
        results: dict[str, list[Round]] = {name: [] for name, _ in contenders}
        for round_no in range(rounds):
            shift = round_no % len(contenders)
            for name, step in [*contenders[shift:], *contenders[:shift]]:
                results[name].append(await _run_tasks(CLUSTER_TASKS, seconds, step))
        today_m, ours_m = median_round(results["today"]), median_round(results["coalesced"])
        return [
            str(CLUSTER_TASKS),
            f"{today_m.rate:,.0f}",
            f"{ours_m.rate:,.0f}",
            f"{ours_m.rate / today_m.rate:.2f}",
            f"{today_m.p50 * 1e6:.0f} / {today_m.p99 * 1e6:.0f}",
            f"{ours_m.p50 * 1e6:.0f} / {ours_m.p99 * 1e6:.0f}",
        ]
    finally:
        await today.aclose()
        await coalesced.aclose()


def _cpu_per_decision(client: redis.Redis, check: Callable[[str], Any], calls: int) -> tuple[float, float]:
    """Server µs and commands per decision, from ``INFO commandstats``."""
    client.config_resetstat()
    for n in range(calls):
        check(KEYS[n % len(KEYS)])
    stats = client.info("commandstats")
    usec = commands = 0
    for name, entry in stats.items():
        if name.startswith(("cmdstat_config", "cmdstat_info")):
            continue
        commands += int(entry["calls"])
        # A script's usec holds those of the commands it ran: count it once.
        if name in ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_script", "cmdstat_increx"):
            usec += int(entry["usec"])
    return usec / calls, commands / calls


def cpu_rows(url: str, rounds: int, calls: int) -> list[list[str]]:
    client = redis.Redis.from_url(url)
    floor_sha = client.script_load(FLOOR_SCRIPT)
    limiter = Limiter(RedisStorage(client))
    rows = []
    try:
        for algorithm in ALGORITHMS:
            progress(f"Redis CPU: {algorithm}")
            samples: dict[str, list[tuple[float, float]]] = {"floor": [], "ours": []}
            for _ in range(rounds):
                client.flushdb()
                samples["floor"].append(
                    _cpu_per_decision(client, lambda key: client.evalsha(floor_sha, 1, key), calls)
                )
                samples["ours"].append(
                    _cpu_per_decision(client, lambda key, a=algorithm: limiter.hit(key, LIMIT, a), calls)
                )
            floor_us = statistics.median(s[0] for s in samples["floor"])
            ours_us = statistics.median(s[0] for s in samples["ours"])
            rows.append(
                [
                    algorithm,
                    f"{floor_us:.2f}",
                    f"{ours_us:.2f}",
                    f"{ours_us / floor_us:.2f}",
                    f"{statistics.median(s[1] for s in samples['floor']):.1f}",
                    f"{statistics.median(s[1] for s in samples['ours']):.1f}",
                ]
            )
    finally:
        limiter.close()
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer and shorter rounds")
    parser.add_argument("--server", choices=("any", "redis", "valkey"), default="any", help="server binary")
    parser.add_argument("--pin", choices=("split", "same", "none"), default="split", help="see _common.pin")
    args = parser.parse_args(argv)
    rounds, seconds, calls = (3, 0.3, 2_000) if args.quick else (5, 1.0, 5_000)
    started = time.perf_counter()
    before = machine_summary()
    with private_server(args.server) as server:
        placement = pin(args.pin, server)
        with redis.Redis.from_url(server.url) as client:
            version = server_version(client.info("server"))
        throughput = asyncio.run(_throughput_rows(server.url, rounds, seconds))
        cpu = cpu_rows(server.url, rounds, calls)
    progress(f"Cluster: {CLUSTER_TASKS} tasks")
    with private_cluster(args.server) as cluster_url:
        cluster = asyncio.run(_cluster_row(cluster_url, rounds, seconds))
    elapsed = time.perf_counter() - started
    print("# Coalesced checks and Redis CPU per decision\n")
    print(f"- code: {source_revision()}")
    print(f"- before: {before}")
    print(f"- after: {machine_summary()}")
    print(
        f"- server: private {version} on 127.0.0.1 ({placement}); fixed window, {len(KEYS)} keys cycled, "
        f"every check allowed; a 1 s budget, as the machine is shared; "
        f"medians of {rounds} interleaved rounds of {seconds:g} s; "
        f"{elapsed:.0f} s in all"
    )
    print("\n## Async checks per second, and latency (µs, p50 / p99)\n")
    print(
        markdown_table(
            [
                "tasks",
                "pipelined floor",
                "today (coalesce=off)",
                "coalesced",
                "today ÷ floor",
                "coalesced ÷ floor",
                "today p50 / p99",
                "coalesced p50 / p99",
            ],
            throughput,
        )
    )
    print(
        "\nThe floor's latency is not comparable (one task sends a whole row per write), so it is left out."
    )
    print(f"\n## Redis Cluster, 3 primaries: async checks per second at {CLUSTER_TASKS} tasks\n")
    print(
        markdown_table(
            [
                "tasks",
                "today (coalesce=off)",
                "coalesced (a batch per node)",
                "coalesced ÷ today",
                "today p50 / p99",
                "coalesced p50 / p99",
            ],
            [cluster],
        )
    )
    print(
        f"\n## Redis CPU per decision (µs of EVALSHA, `INFO commandstats`, medians of {rounds} x {calls})\n"
    )
    print(
        markdown_table(
            [
                "algorithm",
                "floor: INCR + PEXPIRE",
                "ours",
                "ours ÷ floor",
                "commands per decision, floor",
                "commands per decision, ours",
            ],
            cpu,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
