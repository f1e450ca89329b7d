"""Sync checks from many threads: one write each, combined, and the pipelined upper bound.

    python benchmarks/bench_threads.py [--quick] [--server any|redis|valkey] [--pin split|same|none]

Prints one markdown table: checks per second and latency at 1, 8 and 32
threads, each row measured in this one process against one private server,
the contenders interleaved round by round (figures are medians of the
rounds):

- ``coalesce=off``: ``Limiter.hit`` from every thread, each check written
  and read alone on a connection of its own (today's default);
- ``coalesce=on``: the same, the checks that arrive while another is in
  flight written together on one connection (``backends/_combine.py``);
- the pipelined upper bound: one thread sending the same EVALSHA our
  fixed-window check sends, as many per write as there are threads (a
  redis-py pipeline, with none of the limiter's own work; its latency is
  the whole pipeline's round trip).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable, Sequence

import redis
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

from bisman_ratelimit import Limiter
from bisman_ratelimit.backends import RedisStorage
from bisman_ratelimit.backends._base import Spec
from bisman_ratelimit.backends._redis import SINGLE
from bisman_ratelimit.core import Limit

LIMIT = "1000000000/hour"
KEYS = [f"user:{n}" for n in range(1000)]
THREADS = (1, 8, 32)


def _run_threads(threads: int, seconds: float, step: Callable[[int], int]) -> Round:
    """``threads`` threads calling ``step`` for ``seconds``; ``step`` returns how many checks it made."""
    clock = time.perf_counter
    shared: dict[str, float] = {}
    barrier = threading.Barrier(threads, action=lambda: shared.update(start=clock()))
    latencies: list[list[float]] = [[] for _ in range(threads)]
    done = [0] * threads

    def worker(n: int) -> None:
        mine = latencies[n]
        at = n
        made = 0
        barrier.wait()
        stop = shared["start"] + seconds
        while clock() < stop:
            began = clock()
            made += step(at)
            mine.append(clock() - began)
            at += threads
        done[n] = made

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    elapsed = clock() - shared["start"]
    every = [value for mine in latencies for value in mine]
    return Round(rate=sum(done) / elapsed, p50=percentile(every, 0.5), p99=percentile(every, 0.99))


def _through(limiter: Limiter) -> Callable[[int], int]:
    def step(at: int) -> int:
        limiter.hit(KEYS[at % len(KEYS)], LIMIT)
        return 1

    return step


def lone_latency(off: Limiter, on: Limiter, calls: int) -> tuple[float, float]:
    """p50 seconds of a lone check with coalescing off and on, taken turn about (no drift between them)."""
    clock = time.perf_counter
    times: dict[str, list[float]] = {"off": [], "on": []}
    for n in range(calls):
        order = (("off", off), ("on", on)) if n % 2 else (("on", on), ("off", off))
        for name, limiter in order:
            began = clock()
            limiter.hit(KEYS[n % len(KEYS)], LIMIT)
            times[name].append(clock() - began)
    return percentile(times["off"], 0.5), percentile(times["on"], 0.5)


def throughput_rows(
    url: str, rounds: int, seconds: float, lone_calls: int
) -> tuple[list[list[str]], tuple[float, float]]:
    client = redis.Redis.from_url(url)
    limit = Limit.parse(LIMIT)
    naming = RedisStorage(redis.Redis.from_url(url))
    spec = Spec("fixed_window", limit.amount, limit.period_us, limit.amount)
    script = SINGLE["fixed_window"]
    client.script_load(script.source)
    argv = {key: (naming.key_for(key, spec), *naming._one_args(spec, 1, True)) for key in KEYS}
    off = Limiter.from_url(url + "?coalesce=off&blocked_cache=off&timeout=1s")
    on = Limiter.from_url(url + "?coalesce=on&blocked_cache=off&timeout=1s")
    rows = []
    try:
        for limiter in (off, on):
            limiter.warm()
        progress("a lone check, turn about")
        lone = lone_latency(off, on, lone_calls)
        for threads in THREADS:
            progress(f"{threads} threads")

            def pipelined(at: int, threads: int = threads) -> int:
                pipe = client.pipeline(transaction=False)
                for n in range(threads):
                    key, *args = argv[KEYS[(at * threads + n) % len(KEYS)]]
                    pipe.evalsha(script.sha, 1, key, *args)
                pipe.execute()
                return threads

            contenders: list[tuple[str, int, Callable[[int], int]]] = [
                ("pipelined", 1, pipelined),
                ("off", threads, _through(off)),
                ("on", threads, _through(on)),
            ]
            results: dict[str, list[Round]] = {name: [] for name, _, _ in contenders}
            for round_no in range(rounds):
                shift = round_no % len(contenders)
                for name, workers, step in [*contenders[shift:], *contenders[:shift]]:
                    results[name].append(_run_threads(workers, seconds, step))
            floor, today, ours = (median_round(results[name]) for name in ("pipelined", "off", "on"))
            rows.append(
                [
                    str(threads),
                    f"{today.rate:,.0f}",
                    f"{ours.rate:,.0f}",
                    f"{floor.rate:,.0f}",
                    f"{ours.rate / today.rate:.2f}",
                    f"{ours.rate / floor.rate:.2f}",
                    f"{today.p50 * 1e6:.0f} / {today.p99 * 1e6:.0f}",
                    f"{ours.p50 * 1e6:.0f} / {ours.p99 * 1e6:.0f}",
                    f"{ours.p50 / today.p50:.2f}",
                ]
            )
    finally:
        off.close()
        on.close()
        client.close()
        naming.close()
    return rows, lone


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer and shorter rounds")
    parser.add_argument("--server", choices=("any", "redis", "valkey"), default="any", help="server binary")
    parser.add_argument("--pin", choices=("split", "same", "none"), default="split", help="see _common.pin")
    args = parser.parse_args(argv)
    rounds, seconds, lone_calls = (3, 0.4, 2_000) if args.quick else (9, 1.0, 20_000)
    started = time.perf_counter()
    before = machine_summary()
    with private_server(args.server) as server:
        placement = pin(args.pin, server)
        with redis.Redis.from_url(server.url) as client:
            version = server_version(client.info("server"))
        rows, (lone_off, lone_on) = throughput_rows(server.url, rounds, seconds, lone_calls)
    elapsed = time.perf_counter() - started
    print("# Sync checks from threads: one write each, combined, and the pipelined upper bound\n")
    print(f"- code: {source_revision()}")
    print(f"- before: {before}")
    print(f"- after: {machine_summary()}")
    print(
        f"- server: private {version} on 127.0.0.1 ({placement}); fixed window, {len(KEYS)} keys cycled, "
        f"every check allowed; a 1 s budget, as the machine is shared; "
        f"medians of {rounds} interleaved rounds of {seconds:g} s; {elapsed:.0f} s in all"
    )
    print(
        f"- a lone check, {lone_calls:,} of each taken turn about on one thread: p50 {lone_off * 1e6:.1f} µs "
        f"with coalesce=off, {lone_on * 1e6:.1f} µs with coalesce=on ({lone_on / lone_off:.3f})"
    )
    print("\n## Checks per second, and latency (µs, p50 / p99)\n")
    print(
        markdown_table(
            [
                "threads",
                "coalesce=off",
                "coalesce=on",
                "pipelined upper bound",
                "on ÷ off",
                "on ÷ upper bound",
                "off p50 / p99",
                "on p50 / p99",
                "p50 on ÷ off",
            ],
            rows,
        )
    )
    print("\nThe upper bound's latency is not comparable (one thread sends a whole row per write): left out.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
