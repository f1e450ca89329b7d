"""The admin panel's page load time with 100,000 keys in Redis, and how soon a flag change made
in the panel shows in a second process.

    python benchmarks/bench_admin.py                      # on a private server it starts
    python benchmarks/bench_admin.py --url redis://host:port/15

A database given with ``--url`` is flushed first: give one that holds nothing of value.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import textwrap
import time

import httpx
import redis
from starlette.applications import Starlette
from starlette.routing import Mount

from bisman_ratelimit import AsyncLimiter, Limiter
from bisman_ratelimit.ops import PAGES, PanelEngine
from bisman_ratelimit.stores import SessionStore
from bisman_ratelimit.testing import RedisServer
from bisman_ratelimit_starlette.admin import AdminPanel

KEYS = 100_000


def fill(url: str) -> int:
    client = redis.Redis.from_url(url)
    client.flushdb()
    # A loaded machine: the fill is not what is measured, give it time.
    limiter = Limiter.from_url(url + "?timeout=2s")
    sessions = SessionStore(url + "?timeout=2s")
    for i in range(2_000):
        sessions.create({"n": i}, user_id=f"user{i % 500}")
    for i in range(40_000):
        limiter.hit(f"client{i}", "10/minute", cost=10 if i % 50 == 0 else 1)
    pipe = client.pipeline(transaction=False)
    for i in range(KEYS - int(client.dbsize())):
        pipe.set(f"chat:ctx:thread:{i}:seq", i, ex=120)
        if i % 5_000 == 0:
            pipe.execute()
    pipe.execute()
    size = int(client.dbsize())
    limiter.close()
    sessions.close()
    client.close()
    return size


async def page_times(url: str) -> dict[str, float]:
    limiter = AsyncLimiter.from_url(url)
    engine = PanelEngine.from_url(url, limiter=limiter, config="example_apps/ratelimits.toml")
    panel = AdminPanel(engine=engine, authorize=lambda request: "bench", rate="10000/minute")
    app = Starlette(routes=[Mount("/admin", panel)])
    times: dict[str, float] = {}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://bench") as client:
        for page in PAGES:
            samples = []
            for _ in range(7):
                started = time.perf_counter()
                answer = await client.get(f"/admin/{page}")
                samples.append(time.perf_counter() - started)
                assert answer.status_code == 200, answer.text
            times[page] = statistics.median(samples) * 1000
    await limiter.aclose()
    engine.close()
    return times


READER = textwrap.dedent(
    """
    import sys, time
    from bisman_ratelimit.stores import Flags
    flags = Flags(sys.argv[1])
    flags.get("benchFlag")
    print("ready", flush=True)
    target = sys.stdin.readline().strip() == "true"
    while flags.get("benchFlag") is not target:
        pass
    print(time.time(), flush=True)
    """
)


def propagation(url: str, rounds: int = 10) -> list[float]:
    from bisman_ratelimit.stores import FlagAdmin

    admin = FlagAdmin(url)
    engine = PanelEngine(flags=admin)
    delays = []
    for index in range(rounds):
        value = index % 2 == 0
        reader = subprocess.Popen(
            [sys.executable, "-c", READER, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert reader.stdout is not None and reader.stdin is not None
        assert reader.stdout.readline().strip() == "ready"
        reader.stdin.write(f"{str(value).lower()}\n")
        reader.stdin.flush()
        time.sleep(0.2)  # the reader is polling before the change is made
        started = time.time()
        engine.set_flag("bench", "benchFlag", str(value).lower(), "bool")
        seen = float(reader.stdout.readline())
        reader.wait()
        delays.append((seen - started) * 1000)
    admin.close()
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="a Redis database to flush and fill (default: a private server)")
    args = parser.parse_args()
    if args.url is not None:
        measure(args.url)
        return
    with RedisServer() as server:
        measure(server.url)


def measure(url: str) -> None:
    print(f"keys in Redis: {fill(url)}")
    for page, ms in asyncio.run(page_times(url)).items():
        print(f"{page:<11} median {ms:7.1f} ms")
    delays = propagation(url)
    print(
        f"flag change seen by a second process: median {statistics.median(delays):.2f} ms, "
        f"max {max(delays):.2f} ms over {len(delays)} changes"
    )


if __name__ == "__main__":
    main()
