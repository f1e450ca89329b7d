"""Per-check cost of bisman-ratelimit against ``limits`` and ``throttled-py``.

    python benchmarks/bench_core.py [--quick] [--server any|redis|valkey] [--pin split|same|none] [--profile]

Prints markdown tables: the memory backend per algorithm, Redis from sync
code per algorithm, three limits per request on Redis, and Redis from async
code with 64 concurrent tasks. Every figure of a row is measured in this
one process against the same private server (started here, on a free
port), interleaved round by round; see ``_common.py`` for the method.

On Redis two baselines sit beside the libraries: the floor, a trivial
one-key script (``return 1``) run with ``EVALSHA`` through redis-py, which
is the least one round trip can cost; and our own rate-limit script run
with ``EVALSHA`` directly, so that the gap between it and the library is
the library's Python overhead.

Needs the ``bench`` extra: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import limits
import limits.aio.storage
import limits.aio.strategies
import limits.storage
import limits.strategies
import redis
import redis.asyncio
import throttled
import throttled.asyncio
from _common import (
    AsyncContender,
    Contender,
    Measure,
    Plan,
    cycle_keys,
    machine_summary,
    markdown_table,
    measure,
    measure_async,
    pin,
    private_server,
    progress,
    server_times,
    server_version,
    source_revision,
    us,
    verdict,
)

from bisman_ratelimit import AsyncLimiter, Limit, Limiter
from bisman_ratelimit.backends import RATELIMIT, RedisStorage, Spec

ALGORITHMS = ("fixed_window", "sliding_window", "sliding_log", "token_bucket", "gcra")
# Our algorithm name -> the limits strategy doing the same.
LIMITS_STRATEGIES = {
    "fixed_window": "FixedWindowRateLimiter",
    "sliding_window": "SlidingWindowCounterRateLimiter",
    "sliding_log": "MovingWindowRateLimiter",
}
THROTTLED_ALGORITHMS = ("fixed_window", "sliding_window", "token_bucket", "gcra")

# High enough that every timed check is allowed.
AMOUNT = 1_000_000
LIMIT = f"{AMOUNT}/minute"
THREE_LIMITS = ("100000/second", "1000000/minute", "100000000/day")
KEYS = [f"user:{i}" for i in range(1000)]
CONCURRENCY = 64
FLOOR_SCRIPT = "return 1"

MEMORY_TARGET = 1 / 3
REDIS_TARGET = 1.1

# Many short rounds rather than a few long ones: the median then shrugs off
# the bursts other users' work puts on the machine.
PLANS = {
    # name: (memory, redis sync, hit_many, redis async)
    "full": (
        Plan(rounds=15, calls=8_000),
        Plan(rounds=15, calls=400),
        Plan(rounds=15, calls=300),
        Plan(rounds=7, calls=3_000),
    ),
    "quick": (
        Plan(rounds=5, calls=3_000),
        Plan(rounds=5, calls=150),
        Plan(rounds=5, calls=100),
        Plan(rounds=4, calls=1_000),
    ),
}
# Checks per sample of the server-side time of each contender.
SERVER_TIME_CALLS = 300

PEERS = ("limits", "throttled")


# --- contenders -------------------------------------------------------------------------------
# Each binds its method once, so every contender's check is one closure call plus the library call.


def ours(limiter: Limiter, algorithm: str) -> Contender:
    hit = limiter.hit

    def check(key: str) -> Any:
        return hit(key, LIMIT, algorithm)

    return Contender("ours", check)


def ours_async(limiter: AsyncLimiter, algorithm: str) -> AsyncContender:
    hit = limiter.hit

    def check(key: str) -> Any:
        return hit(key, LIMIT, algorithm)

    return AsyncContender("ours", check)


def limits_sync(storage: Any, algorithm: str) -> Contender:
    strategy = getattr(limits.strategies, LIMITS_STRATEGIES[algorithm])(storage)
    item = limits.parse(LIMIT)
    hit = strategy.hit

    def check(key: str) -> Any:
        return hit(item, key)

    return Contender("limits", check)


def limits_async(storage: Any, algorithm: str) -> AsyncContender:
    strategy = getattr(limits.aio.strategies, LIMITS_STRATEGIES[algorithm])(storage)
    item = limits.parse(LIMIT)
    hit = strategy.hit

    def check(key: str) -> Any:
        return hit(item, key)

    return AsyncContender("limits", check)


def _throttled_allowed(result: Any) -> bool:
    return not result.limited


def throttled_sync(store: Any, algorithm: str) -> Contender:
    quota = throttled.rate_limiter.per_min(AMOUNT)
    limit = throttled.Throttled(using=algorithm, quota=quota, store=store).limit

    def check(key: str) -> Any:
        return limit(key)

    return Contender("throttled", check, _throttled_allowed)


def throttled_async(store: Any, algorithm: str) -> AsyncContender:
    quota = throttled.rate_limiter.per_min(AMOUNT)
    limit = throttled.asyncio.Throttled(using=algorithm, quota=quota, store=store).limit

    def check(key: str) -> Any:
        return limit(key)

    return AsyncContender("throttled", check, _throttled_allowed)


def _spec(limit_text: str, algorithm: str) -> Spec:
    limit = Limit.parse(limit_text)
    capacity = limit.capacity if algorithm in ("token_bucket", "gcra") else limit.amount
    return Spec(algorithm, limit.amount, limit.period_us, capacity)


def _script_argv(naming: RedisStorage, key: str, specs: Sequence[Spec]) -> tuple[Any, ...]:
    """The EVALSHA arguments the library sends for a committing hit of ``specs``."""
    # The library's own builder, so that the raw call follows the script's
    # argument layout wherever it goes.
    keys, args = naming._check_args([(key, spec, 1) for spec in specs], "1")
    return (RATELIMIT.sha, len(keys), *keys, *args)


def _script_allowed(result: Any) -> bool:
    return bool(result[0] == 1)


def _floor_allowed(result: Any) -> bool:
    return bool(result == 1)


def raw_script(evalsha: Callable[..., Any], specs: Sequence[Spec]) -> tuple[Callable[[str], Any], Any]:
    """Our script's EVALSHA with every argument built ahead of time."""
    naming = RedisStorage(redis.Redis())  # for key names and arguments only: never connects
    argv = {key: _script_argv(naming, key, specs) for key in KEYS}

    def check(key: str) -> Any:
        return evalsha(*argv[key])

    return check, _script_allowed


def floor(evalsha: Callable[..., Any], sha: str) -> Callable[[str], Any]:
    def check(key: str) -> Any:
        return evalsha(sha, 1, key)

    return check


# --- sections ---------------------------------------------------------------------------------


def _breakdown(
    label: str,
    client: redis.Redis,
    contenders: Sequence[Contender],
    results: dict[str, Measure],
    ours_name: str = "ours",
) -> list[str]:
    """A row of where a Redis check's time goes: client CPU, and server time per contender."""
    server = server_times(client, contenders, KEYS[:SERVER_TIME_CALLS])
    cpu = {name: m.cpu for name, m in results.items()}
    return [
        label,
        us(cpu[ours_name]),
        us(cpu["script"]),
        us(cpu["floor"]),
        us(results[ours_name].cpu_over(results["script"])),
        us(server[ours_name]),
        us(server["limits"]) if "limits" in server else "-",
        us(server["throttled"]) if "throttled" in server else "-",
        us(server["floor"]),
    ]


BREAKDOWN_HEADERS = [
    "check",
    "client CPU: ours",
    "client CPU: our script, raw",
    "client CPU: floor",
    "our Python overhead (ours - raw)",
    "server: ours",
    "server: limits",
    "server: throttled",
    "server: floor",
]


def _spread(results: dict[str, Measure]) -> str:
    return f"{max(m.spread for m in results.values()):.0%}"


def _cell(results: dict[str, Measure], name: str) -> str:
    return us(results[name].seconds) if name in results else "-"


def memory_section(plan: Plan) -> str:
    rows = []
    for algorithm in ALGORITHMS:
        progress(f"memory: {algorithm}")
        contenders = [ours(Limiter(), algorithm)]
        if algorithm in LIMITS_STRATEGIES:
            contenders.append(limits_sync(limits.storage.MemoryStorage(), algorithm))
        if algorithm in THROTTLED_ALGORITHMS:
            contenders.append(throttled_sync(throttled.store.MemoryStore(), algorithm))
        results = measure(contenders, KEYS, plan, settle=0.02)
        fastest = min(results[p].seconds for p in PEERS if p in results)
        ratio = results["ours"].seconds / fastest
        rows.append(
            [
                algorithm,
                _cell(results, "ours"),
                _cell(results, "limits"),
                _cell(results, "throttled"),
                f"{ratio:.2f}",
                verdict(ratio, MEMORY_TARGET),
                _spread(results),
            ]
        )
    headers = ["algorithm", "ours", "limits", "throttled", "ours / fastest peer", "target ≤ 0.33", "spread"]
    return "## Memory backend: µs per check (lower is better)\n\n" + markdown_table(headers, rows)


def redis_sync_section(url: str, client: redis.Redis, plan: Plan) -> tuple[str, list[list[str]]]:
    sha = client.script_load(FLOOR_SCRIPT)
    client.script_load(RATELIMIT.source)
    # The first second of traffic runs slow (a server fresh from start, cold
    # CPU caches); spend it before the first row.
    deadline = time.perf_counter() + 1.0
    while time.perf_counter() < deadline:
        client.evalsha(sha, 1, KEYS[0])
    rows, breakdown = [], []
    for algorithm in ALGORITHMS:
        progress(f"redis sync: {algorithm}")
        client.flushdb()
        script_check, script_ok = raw_script(client.evalsha, [_spec(LIMIT, algorithm)])
        contenders = [ours(Limiter(client), algorithm)]
        if algorithm in LIMITS_STRATEGIES:
            contenders.append(limits_sync(limits.storage.RedisStorage(url), algorithm))
        if algorithm in THROTTLED_ALGORITHMS:
            contenders.append(throttled_sync(throttled.store.RedisStore(server=url), algorithm))
        contenders += [
            Contender("script", script_check, script_ok),
            Contender("floor", floor(client.evalsha, sha), _floor_allowed),
        ]
        results = measure(contenders, KEYS, plan)
        ratio = results["ours"].seconds / results["floor"].seconds
        rows.append(
            [
                algorithm,
                _cell(results, "ours"),
                _cell(results, "limits"),
                _cell(results, "throttled"),
                _cell(results, "script"),
                _cell(results, "floor"),
                f"{ratio:.2f}",
                verdict(ratio, REDIS_TARGET),
                _spread(results),
            ]
        )
        breakdown.append(_breakdown(algorithm, client, contenders, results))
    headers = [
        "algorithm",
        "ours",
        "limits",
        "throttled",
        "our script, raw EVALSHA",
        "floor EVALSHA",
        "ours / floor",
        "target ≤ 1.1",
        "spread",
    ]
    return "## Redis, sync: µs per check (lower is better)\n\n" + markdown_table(headers, rows), breakdown


def hit_many_section(url: str, client: redis.Redis, plan: Plan) -> tuple[str, list[str]]:
    progress("redis sync: three limits per request")
    client.flushdb()
    sha = client.script_load(FLOOR_SCRIPT)
    first, second, third = THREE_LIMITS

    limiter = Limiter(client)
    hit_many, hit = limiter.hit_many, limiter.hit

    def ours_many(key: str) -> Any:
        return hit_many([(key, first), (key, second), (key, third)])

    def ours_three(key: str) -> Any:
        return hit(key, first) and hit(key, second) and hit(key, third)

    strategy = limits.strategies.SlidingWindowCounterRateLimiter(limits.storage.RedisStorage(url))
    items = [limits.parse(text) for text in THREE_LIMITS]
    limits_hit = strategy.hit

    def limits_three(key: str) -> Any:
        return limits_hit(items[0], key) and limits_hit(items[1], key) and limits_hit(items[2], key)

    store = throttled.store.RedisStore(server=url)
    quotas = [
        throttled.rate_limiter.per_sec(100_000),
        throttled.rate_limiter.per_min(1_000_000),
        throttled.rate_limiter.per_day(100_000_000),
    ]
    t1, t2, t3 = (throttled.Throttled(using="sliding_window", quota=q, store=store).limit for q in quotas)

    def throttled_three(key: str) -> Any:
        return not t1(key).limited and not t2(key).limited and not t3(key).limited

    script_check, script_ok = raw_script(
        client.evalsha, [_spec(text, "sliding_window") for text in THREE_LIMITS]
    )
    contenders = [
        Contender("hit_many", ours_many),
        Contender("ours 3 x hit", ours_three),
        Contender("limits", limits_three),
        Contender("throttled", throttled_three),
        Contender("script", script_check, script_ok),
        Contender("floor", floor(client.evalsha, sha), _floor_allowed),
    ]
    results = measure(contenders, KEYS, plan)
    ratio = results["hit_many"].seconds / results["floor"].seconds
    row = [
        _cell(results, "hit_many"),
        _cell(results, "ours 3 x hit"),
        _cell(results, "limits"),
        _cell(results, "throttled"),
        _cell(results, "script"),
        _cell(results, "floor"),
        f"{ratio:.2f}",
        verdict(ratio, REDIS_TARGET),
        _spread(results),
    ]
    headers = [
        "ours `hit_many` (1 round trip)",
        "ours 3 x `hit` (3)",
        "limits 3 x `hit` (3)",
        "throttled 3 x `limit` (3)",
        "our script, raw EVALSHA (1)",
        "floor EVALSHA (1)",
        "hit_many / floor",
        "target ≤ 1.1",
        "spread",
    ]
    title = "## Redis, sync: three sliding-window limits per request, µs per request (lower is better)"
    breakdown = _breakdown("three limits: `hit_many`", client, contenders, results, ours_name="hit_many")
    return f"{title}\n\n{markdown_table(headers, [row])}", breakdown


def _rate(results: dict[str, Measure], name: str) -> str:
    if name not in results:
        return "-"
    return f"{results[name].per_second / 1000:.1f} k"


async def _redis_async_rows(url: str, plan: Plan, notes: list[str]) -> list[list[str]]:
    client = redis.asyncio.Redis.from_url(url)
    sha = await client.script_load(FLOOR_SCRIPT)
    await client.script_load(RATELIMIT.source)
    limiter = AsyncLimiter(client)
    limits_storage: Any = None
    try:
        limits_storage = limits.aio.storage.RedisStorage(f"async+{url}", implementation="redispy")
    except Exception as exc:  # a peer that cannot run here is reported, not fatal
        notes.append(f"limits' async Redis storage on redis.asyncio failed to start: {exc!r}")
    throttled_store = throttled.asyncio.RedisStore(server=url)
    rows = []
    try:
        for algorithm in ALGORITHMS:
            progress(f"redis async: {algorithm}")
            await client.flushdb()
            script_check, script_ok = raw_script(client.evalsha, [_spec(LIMIT, algorithm)])
            contenders = [ours_async(limiter, algorithm)]
            if limits_storage is not None and algorithm in LIMITS_STRATEGIES:
                contenders.append(limits_async(limits_storage, algorithm))
            if algorithm in THROTTLED_ALGORITHMS:
                contenders.append(throttled_async(throttled_store, algorithm))
            contenders += [
                AsyncContender("script", script_check, script_ok),
                AsyncContender("floor", floor(client.evalsha, sha), _floor_allowed),
            ]
            results = await measure_async(contenders, KEYS, plan, concurrency=CONCURRENCY)
            ratio = results["ours"].seconds / results["floor"].seconds
            rows.append(
                [
                    algorithm,
                    _rate(results, "ours"),
                    _rate(results, "limits"),
                    _rate(results, "throttled"),
                    _rate(results, "script"),
                    _rate(results, "floor"),
                    f"{ratio:.2f}",
                    _spread(results),
                ]
            )
    finally:
        await limiter.aclose()
    return rows


def redis_async_section(url: str, plan: Plan) -> str:
    notes: list[str] = []
    rows = asyncio.run(_redis_async_rows(url, plan, notes))
    headers = [
        "algorithm",
        "ours",
        "limits",
        "throttled",
        "our script, raw EVALSHA",
        "floor EVALSHA",
        "floor checks/s ÷ ours",
        "spread",
    ]
    text = (
        f"## Redis, async, {CONCURRENCY} concurrent tasks: checks per second (higher is better)\n\n"
        + markdown_table(headers, rows)
    )
    return text + "".join(f"\n\n{note}" for note in notes)


def profile(limiter: Limiter, where: str, calls: int, algorithm: str = "sliding_window") -> str:
    """Where the time of our ``hit`` goes, by function, sorted by own time."""
    hit = limiter.hit
    keys = cycle_keys(KEYS, calls)
    for key in KEYS:
        hit(key, LIMIT, algorithm)
    profiler = cProfile.Profile()
    profiler.enable()
    for key in keys:
        hit(key, LIMIT, algorithm)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
    text = out.getvalue().strip()
    return f"## Profile: {where}, {algorithm}, {calls} checks\n\n```\n{text}\n```"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and checks (under 30 s)")
    parser.add_argument("--server", choices=("any", "redis", "valkey"), default="any", help="server binary")
    parser.add_argument(
        "--pin",
        choices=("split", "same", "none"),
        default="split",
        help="CPUs of client and server: split (default), same, or none (see _common.pin)",
    )
    parser.add_argument("--profile", action="store_true", help="also profile our memory path")
    args = parser.parse_args(argv)
    memory_plan, sync_plan, many_plan, async_plan = PLANS["quick" if args.quick else "full"]

    started = time.perf_counter()
    before = machine_summary()
    with private_server(args.server) as server:
        placement = pin(args.pin, server)
        sections = [memory_section(memory_plan)]
        client = redis.Redis.from_url(server.url)
        version = server_version(client.info("server"))
        sync_table, breakdown = redis_sync_section(server.url, client, sync_plan)
        many_table, many_breakdown = hit_many_section(server.url, client, many_plan)
        sections += [sync_table, many_table]
        client.close()
        sections.append(redis_async_section(server.url, async_plan))
        profiles = []
        if args.profile:
            progress("profiles")
            profiles.append(profile(Limiter(), "memory backend", 50_000))
            with redis.Redis.from_url(server.url) as profiled:
                profiles.append(profile(Limiter(profiled), "Redis, sync", 3_000))
        sections.append(
            "## Redis, sync: where a check's time goes, µs per check\n\n"
            "Client CPU is this process's CPU time per check (medians of the rounds above; the overhead is "
            "the median of the per-round differences); server time is from `INFO commandstats`, median of "
            f"3 samples of {SERVER_TIME_CALLS} checks of each contender.\n\n"
            + markdown_table(BREAKDOWN_HEADERS, [*breakdown, many_breakdown])
        )
    elapsed = time.perf_counter() - started

    print("# bisman-ratelimit core benchmark\n")
    print(f"- code: {source_revision()}")
    print(f"- before: {before}")
    print(f"- after: {machine_summary()}")
    print(
        f"- server: private {version} on 127.0.0.1 ({placement}); {len(KEYS)} distinct keys cycled; limits "
        f"high enough that every check is allowed; {'quick' if args.quick else 'full'} run, {elapsed:.0f} s"
    )
    print(
        f"- figures are medians of interleaved rounds (memory {memory_plan.rounds} x {memory_plan.calls} "
        f"checks, Redis {sync_plan.rounds} x {sync_plan.calls}, three limits {many_plan.rounds} x "
        f"{many_plan.calls}, async {async_plan.rounds} x {async_plan.calls}); spread is the widest "
        "(slowest - fastest round) / median in the row: the machine's noise"
    )
    for section in sections:
        print(f"\n{section}")
    for text in profiles:
        print(f"\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
