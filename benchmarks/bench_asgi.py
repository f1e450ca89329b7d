"""Per-request cost of RateLimitMiddleware on a minimal Starlette app, against the bare app and slowapi.

    python benchmarks/bench_asgi.py [--quick] [--server any|redis|valkey] [--pin split|same|none] [--profile]

The app is driven in-process: each request is a call of the ASGI app with a
prebuilt scope (copied, as Starlette writes into it) and no-op ``receive``
and ``send``, so the figures hold the router, the endpoint and the limiter
and nothing of a server or a socket. Every request passes a limit of
1,000,000 per minute keyed by client address (the warm-up checks that every
contender answers 200); 256 client addresses take turns.

Tables:

1. **Memory**, µs per request, one request at a time: the bare app, ours
   (``AsyncLimiter()``), slowapi (``storage_uri="memory://"``, its pure ASGI
   middleware), the same slowapi app on ``bisman_ratelimit_starlette.slowapi``
   (only the imports changed), and our core alone (``AsyncLimiter.hit``, no app).
   Target: ours at most 5 µs over the bare app.
2. **Redis**, µs per request, one request at a time: the same against a
   private server, and the EVALSHA floor (a one-key ``return 1`` script run
   with ``redis.asyncio``: the least one round trip costs). Target: ours at
   most the floor + 15 µs over the bare app.
3. **Event loop lag under load**: 64 concurrent requests at a time while a
   ticker task asks to wake every millisecond; how late it wakes (median,
   99th percentile, worst) and the requests per second. slowapi on Redis
   uses a synchronous client, which stops the loop for every round trip.

Needs the ``bench`` extra (slowapi) and the ``starlette`` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio
from _common import (
    AsyncContender,
    InProcess,
    Measure,
    Plan,
    machine_summary,
    markdown_table,
    measure_async,
    pin,
    private_server,
    progress,
    server_version,
    source_revision,
    us,
    verdict,
)
from slowapi import Limiter as SlowLimiter
from slowapi.middleware import SlowAPIASGIMiddleware
from slowapi.util import get_remote_address
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bisman_ratelimit import AsyncLimiter, Limit
from bisman_ratelimit_starlette import RateLimitMiddleware
from bisman_ratelimit_starlette.slowapi import Limiter as CompatLimiter
from bisman_ratelimit_starlette.slowapi import SlowAPIASGIMiddleware as CompatMiddleware
from bisman_ratelimit_starlette.slowapi import get_remote_address as compat_remote_address

LIMIT = "1000000/minute"
CLIENTS = [f"198.51.{n // 250}.{n % 250 + 1}" for n in range(256)]
MEMORY_TARGET_US = 5.0
REDIS_MARGIN_US = 15.0


async def item(request: Request) -> Response:
    return PlainTextResponse("ok")


def starlette_app(middleware: Sequence[Middleware] = ()) -> Starlette:
    return Starlette(routes=[Route("/items/{item_id}", item)], middleware=list(middleware))


def ours(limiter: AsyncLimiter) -> Starlette:
    return starlette_app([Middleware(RateLimitMiddleware, limiter=limiter, default_limits=LIMIT)])


def slowapi(storage_uri: str) -> Starlette:
    app = starlette_app([Middleware(SlowAPIASGIMiddleware)])
    app.state.limiter = SlowLimiter(
        key_func=get_remote_address, default_limits=[LIMIT], storage_uri=storage_uri
    )
    return app


def slowapi_compat(limiter: AsyncLimiter) -> Starlette:
    """slowapi's spelling on our engine: the same app as slowapi's, only the imports changed."""
    app = starlette_app([Middleware(CompatMiddleware)])
    app.state.limiter = CompatLimiter(key_func=compat_remote_address, default_limits=[LIMIT], limiter=limiter)
    return app


# -- driving an ASGI app in-process

_REQUESTS = InProcess(CLIENTS)


request_to = _REQUESTS.request_to


def http(name: str, app: Any) -> AsyncContender:
    return AsyncContender(name, request_to(app), _REQUESTS.answered_200)


def core_alone(limiter: AsyncLimiter) -> AsyncContender:
    limit = Limit.parse(LIMIT)

    def check(ip: str) -> Awaitable[Any]:
        return limiter.hit(f"rl:ip:{{{ip}}}:api:default", limit)

    return AsyncContender("our core alone (AsyncLimiter.hit)", check, lambda d: bool(d))


def floor(client: Any, sha: str) -> AsyncContender:
    def check(ip: str) -> Awaitable[Any]:
        return client.evalsha(sha, 1, ip)  # type: ignore[no-any-return]

    return AsyncContender("EVALSHA floor (redis.asyncio, return 1)", check, lambda r: r == 1)


# -- tables


def over_bare(results: dict[str, Measure], name: str, bare: str) -> float:
    return results[name].seconds - results[bare].seconds


def per_request_table(
    results: dict[str, Measure], bare: str, rows: Sequence[tuple[str, str]], target: Callable[[str], str]
) -> str:
    table = []
    for name, label in rows:
        extra = "" if name == bare else us(over_bare(results, name, bare))
        table.append([label, us(results[name].seconds), extra, f"{results[name].spread:.0%}", target(name)])
    return markdown_table(["contender", "µs per request", "µs over the bare app", "spread", "target"], table)


async def memory_section(plan: Plan, notes: list[str]) -> str:
    limiter = AsyncLimiter()
    contenders = [
        http("bare app", starlette_app()),
        http("ours", ours(limiter)),
        http("slowapi", slowapi("memory://")),
        http("slowapi compat", slowapi_compat(AsyncLimiter())),
        core_alone(AsyncLimiter()),
    ]
    results = await measure_async(contenders, CLIENTS, plan, concurrency=1)
    extra = _paired(results, "ours", "bare app") * 1e6
    notes.append(
        f"memory: ours adds {extra:.2f} µs to the bare app (target ≤ {MEMORY_TARGET_US:g} µs): "
        + verdict(extra / MEMORY_TARGET_US, 1.0)
    )

    def target(name: str) -> str:
        if name != "ours":
            return ""
        return f"≤ {MEMORY_TARGET_US:g} µs over bare: {extra:.2f} µs, " + verdict(
            extra / MEMORY_TARGET_US, 1.0
        )

    return per_request_table(
        results,
        "bare app",
        [
            ("bare app", "bare Starlette app"),
            ("ours", "ours, memory"),
            ("slowapi", "slowapi, memory"),
            ("slowapi compat", "ours with slowapi's spelling (bisman_ratelimit_starlette.slowapi), memory"),
            ("our core alone (AsyncLimiter.hit)", "our core alone: AsyncLimiter.hit, no app"),
        ],
        target,
    )


def _signed(seconds: float) -> str:
    """``+ 9.1 µs`` or ``- 3.0 µs``."""
    return f"{'-' if seconds < 0 else '+'} {abs(seconds) * 1e6:.1f} µs"


async def redis_section(url: str, plan: Plan, notes: list[str]) -> str:
    client = redis.asyncio.Redis.from_url(url)
    limiter = AsyncLimiter(redis.asyncio.Redis.from_url(url))
    compat = AsyncLimiter(redis.asyncio.Redis.from_url(url))
    core = AsyncLimiter(redis.asyncio.Redis.from_url(url))
    try:
        sha = await client.script_load("return 1")
        contenders = [
            http("bare app", starlette_app()),
            http("ours", ours(limiter)),
            http("slowapi", slowapi(url)),
            http("slowapi compat", slowapi_compat(compat)),
            core_alone(core),
            floor(client, sha),
        ]
        results = await measure_async(contenders, CLIENTS, plan, concurrency=1)
    finally:
        for made in (limiter, compat, core):
            await made.aclose()
        await client.aclose()
    floor_name = "EVALSHA floor (redis.asyncio, return 1)"
    # Rounds interleave the contenders, so round i of each ran under much the same load: the
    # median of per-round differences cancels most of what others do to the machine meanwhile.
    extra = _paired(results, "ours", "bare app", floor_name)
    extra_cpu = _paired(results, "ours", "bare app", floor_name, cpu=True)
    core_extra = _paired(results, "our core alone (AsyncLimiter.hit)", floor_name)
    own = _paired(results, "ours", "bare app", "our core alone (AsyncLimiter.hit)")
    own_cpu = _paired(results, "ours", "bare app", "our core alone (AsyncLimiter.hit)", cpu=True)
    notes.append(
        f"Redis: the middleware's own share (ours - bare app - core alone) is {own * 1e6:.1f} µs wall, "
        f"{own_cpu * 1e6:.1f} µs CPU; the rest is the core's AsyncLimiter.hit"
    )
    notes.append(
        f"Redis: ours adds the EVALSHA floor {_signed(extra)} to the bare app, wall time "
        f"(target ≤ floor + {REDIS_MARGIN_US:g} µs): {verdict(extra * 1e6 / REDIS_MARGIN_US, 1.0)}; "
        f"client CPU: floor {_signed(extra_cpu)}; "
        f"our core alone is the floor {_signed(core_extra)}"
    )

    def target(name: str) -> str:
        if name != "ours":
            return ""
        return f"over bare ≤ floor + {REDIS_MARGIN_US:g} µs: floor {_signed(extra)}, " + verdict(
            extra * 1e6 / REDIS_MARGIN_US, 1.0
        )

    table = per_request_table(
        results,
        "bare app",
        [
            ("bare app", "bare Starlette app"),
            ("ours", "ours, Redis (redis.asyncio)"),
            ("slowapi", "slowapi, Redis (sync client in async code)"),
            ("slowapi compat", "ours with slowapi's spelling, Redis (redis.asyncio)"),
            ("our core alone (AsyncLimiter.hit)", "our core alone: AsyncLimiter.hit, no app"),
            (floor_name, "EVALSHA floor: redis.asyncio evalsha of `return 1`, no app"),
        ],
        target,
    )
    cpu_rows = [
        [label, us(results[name].cpu)]
        for name, label in [
            ("bare app", "bare Starlette app"),
            ("ours", "ours, Redis"),
            ("slowapi", "slowapi, Redis"),
            ("slowapi compat", "ours with slowapi's spelling, Redis"),
            ("our core alone (AsyncLimiter.hit)", "our core alone"),
            (floor_name, "EVALSHA floor"),
        ]
    ]
    table += "\n\nClient CPU per request (this process; the server's share is not in it):\n\n"
    table += markdown_table(["contender", "CPU µs per request"], cpu_rows)
    return table


def _paired(results: dict[str, Measure], name: str, *minus: str, cpu: bool = False) -> float:
    """Median over rounds of ``name`` minus the others, each round paired with the same round."""
    series = [results[n].cpu_rounds if cpu else results[n].rounds for n in (name, *minus)]
    return float(statistics.median(first - sum(rest) for first, *rest in zip(*series, strict=True)))


async def _lag_under_load(app: Any, requests: int, concurrency: int) -> tuple[list[float], float]:
    call = request_to(app)
    lags: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            start = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - start - 0.001)

    async def worker(offset: int) -> None:
        for n in range(offset, requests, concurrency):
            await call(CLIENTS[n % len(CLIENTS)])

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - start
    done.set()
    await tick
    return lags, requests / elapsed


async def lag_section(url: str, requests: int, rounds: int) -> str:
    limiter = AsyncLimiter(redis.asyncio.Redis.from_url(url, max_connections=128))
    compat = AsyncLimiter(redis.asyncio.Redis.from_url(url, max_connections=128))
    # No bare app here: in-process it never waits, so it would hold the loop for a whole batch.
    apps = [
        ("ours, Redis", ours(limiter)),
        ("slowapi, Redis", slowapi(url)),
        ("ours with slowapi's spelling, Redis", slowapi_compat(compat)),
    ]
    samples: dict[str, list[tuple[list[float], float]]] = {name: [] for name, _ in apps}
    try:
        for _, app in apps:
            await _lag_under_load(app, 256, 64)  # warm-up: connections, scripts
        for round_no in range(rounds):
            shift = round_no % len(apps)
            for name, app in [*apps[shift:], *apps[:shift]]:
                samples[name].append(await _lag_under_load(app, requests, 64))
    finally:
        await limiter.aclose()
        await compat.aclose()
    rows = []
    for name, runs in samples.items():
        lags = sorted(lag for run, _ in runs for lag in run)
        rate = statistics.median(rate for _, rate in runs)
        p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
        seconds = sum(requests / rate for _, rate in runs)
        rows.append(
            [
                name,
                f"{statistics.median(lags) * 1e3:.2f}",
                f"{p99 * 1e3:.2f}",
                f"{lags[-1] * 1e3:.2f}",
                f"{len(lags) / seconds:,.0f}",
                f"{rate:,.0f}",
            ]
        )
    return markdown_table(
        [
            "app",
            "loop lag median (ms)",
            "lag p99 (ms)",
            "lag max (ms)",
            "ticks/s (ideal ≈ 1000)",
            "requests/s (64 concurrent)",
        ],
        rows,
    )


def profile_memory(calls: int) -> str:
    app = ours(AsyncLimiter())
    call = request_to(app)

    async def run() -> None:
        for n in range(calls):
            await call(CLIENTS[n % len(CLIENTS)])

    asyncio.run(run())
    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(run())
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(18)
    return out.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and requests")
    parser.add_argument("--server", choices=("any", "redis", "valkey"), default="any", help="server binary")
    parser.add_argument(
        "--pin", choices=("split", "same", "none"), default="split", help="CPU placement (see _common.pin)"
    )
    parser.add_argument("--profile", action="store_true", help="also profile ours on memory")
    args = parser.parse_args(argv)
    memory_plan = Plan(rounds=5, calls=5_000) if args.quick else Plan(rounds=9, calls=20_000)
    redis_plan = Plan(rounds=5, calls=500) if args.quick else Plan(rounds=25, calls=1_000)
    lag_requests, lag_rounds = (2_000, 2) if args.quick else (8_000, 5)
    notes: list[str] = []
    with private_server(args.server) as server:
        placement = pin(args.pin, server)
        info = redis.Redis.from_url(server.url).info("server")
        print(f"# ASGI middleware benchmark\n\n{machine_summary()}; {source_revision()}")
        print(f"Server: {server_version(info)} on a private port; {placement}.\n")
        progress("memory ...")
        memory = asyncio.run(memory_section(memory_plan, notes))
        progress("Redis ...")
        on_redis = asyncio.run(redis_section(server.url, redis_plan, notes))
        progress("loop lag ...")
        lag = asyncio.run(lag_section(server.url, lag_requests, lag_rounds))
    print("## Memory, one request at a time (median of rounds)\n")
    print(memory + "\n")
    print("## Redis, one request at a time (median of rounds)\n")
    print(on_redis + "\n")
    print("## Event loop lag while 64 requests run at once, Redis\n")
    print(lag + "\n")
    print("## Verdicts\n")
    for note in notes:
        print(f"- {note}")
    if args.profile:
        print("\n## Profile: ours on memory, by own time\n\n```")
        print(profile_memory(20_000))
        print("```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
