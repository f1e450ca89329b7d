"""Redis memory per rate-limited client: bisman-ratelimit against ``limits`` and ``throttled-py``.

    python benchmarks/bench_key_memory.py [--keys 100000] [--server any|redis|valkey] [--no-peers]

For each O(1) algorithm, counts ``--keys`` clients (100/minute on the route
``/calls``, the client being the user ``u<n>``), each spending its whole
allowance in one hit of cost 100 (so that a bucket's key lives a minute
too, not the 0.6 s one hit takes to refill), on a private
server started here on a free port, and prints a markdown table: the key
of one client, its ``MEMORY USAGE``, and the growth of ``used_memory`` per
client over all of them. Our keys are the ones the web plugins count under
(``rl:user:{u<n>}:api:/calls:<tag>``). The peers, when installed (the
``bench`` extra), count the same clients under ``rl:user:u<n>:api:/calls``
with their own key layout; a peer that writes several keys per client is
summed over them.

It uses the public API and the web plan only, so the figures of an older
revision come from the same script: ``PYTHONPATH=<old checkout> python
benchmarks/bench_key_memory.py``. (``bench_memory.py`` is the memory
backend's benchmark.)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import redis
from _common import machine_summary, markdown_table, private_server, server_version, source_revision

from bisman_ratelimit import Limiter
from bisman_ratelimit.web import Evaluation, parse_config
from bisman_ratelimit.web._plan import Planner

ALGORITHMS = ("fixed_window", "sliding_window", "token_bucket", "gcra")
AMOUNT = 100
LIMIT = f"{AMOUNT}/minute"
ROUTE = "/calls"
BATCH = 1000

# Our algorithm name -> the strategy of `limits` doing the same.
LIMITS_STRATEGIES = {
    "fixed_window": "FixedWindowRateLimiter",
    "sliding_window": "SlidingWindowCounterRateLimiter",
}


def plan_keys(algorithm: str, count: int) -> list[str]:
    """The keys the web plan counts ``count`` users under, for ``ROUTE``."""
    config = {"routes": [{"path": ROUTE, "limits": LIMIT, "algorithm": algorithm, "key": "user"}]}
    plan = Planner(config=parse_config(config)).plan(ROUTE, "GET")
    return [Evaluation.start(plan, ip=None, ip_key=None, user=f"u{n}").keys[0] for n in range(count)]


def ours(url: str, algorithm: str, count: int) -> None:
    keys = plan_keys(algorithm, count)
    # A call of 1,000 checks takes longer than the default 50 ms budget.
    with Limiter.from_url(url + "?timeout=5s") as limiter:
        for first in range(0, count, BATCH):
            batch = keys[first : first + BATCH]
            assert limiter.hit_many([(key, LIMIT, algorithm, AMOUNT) for key in batch]).allowed


def peer_limits(url: str, algorithm: str, count: int) -> None:
    import limits
    import limits.storage
    import limits.strategies

    strategy = getattr(limits.strategies, LIMITS_STRATEGIES[algorithm])(limits.storage.RedisStorage(url))
    item = limits.parse(LIMIT)
    for n in range(count):
        assert strategy.hit(item, f"rl:user:u{n}:api:{ROUTE}", cost=AMOUNT)


def peer_throttled(url: str, algorithm: str, count: int) -> None:
    import throttled

    store = throttled.store.RedisStore(server=url)
    quota = throttled.rate_limiter.per_min(AMOUNT)
    limit = throttled.Throttled(using=algorithm, quota=quota, store=store).limit
    for n in range(count):
        assert not limit(f"rl:user:u{n}:api:{ROUTE}", cost=AMOUNT).limited


def _installed(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def measure(
    client: redis.Redis, url: str, write: Callable[[str, str, int], None], algorithm: str, count: int
) -> list[str]:
    # SYNC: a lazy flush (Valkey's default) would free the last run's keys during this one.
    client.execute_command("FLUSHALL", "SYNC")
    before = int(client.info("memory")["used_memory"])
    write(url, algorithm, count)
    after = int(client.info("memory")["used_memory"])
    # One client's keys: those of user u0 (the peers may add a prefix or a suffix).
    mine = sorted(key for key in client.scan_iter(match="*u0[:}]*", count=10_000) if b"u0" in key)
    usage = sum(client.memory_usage(key) or 0 for key in mine)
    shown = ", ".join(f"`{key.decode()}`" for key in mine)
    return [shown, str(len(mine)), f"{usage} B", f"{(after - before) / count:.1f} B"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=100_000, help="clients counted per algorithm")
    parser.add_argument("--server", choices=("any", "redis", "valkey"), default="any")
    parser.add_argument("--no-peers", action="store_true", help="measure bisman-ratelimit only")
    args = parser.parse_args(argv)
    contenders: list[tuple[str, Callable[[str, str, int], None], tuple[str, ...]]] = [
        ("ours", ours, ALGORITHMS)
    ]
    if not args.no_peers:
        if _installed("limits"):
            contenders.append(("limits", peer_limits, tuple(LIMITS_STRATEGIES)))
        if _installed("throttled"):
            contenders.append(("throttled", peer_throttled, ALGORITHMS))
    rows: list[list[str]] = []
    with private_server(args.server) as server, redis.Redis(port=server.port) as client:
        version = server_version(client.info("server"))
        for algorithm in ALGORITHMS:
            for name, write, supported in contenders:
                if algorithm in supported:
                    print(f"{name} {algorithm} ...", file=sys.stderr)
                    rows.append([algorithm, name, *measure(client, server.url, write, algorithm, args.keys)])
    print(f"# Redis memory per client ({args.keys:,} clients, {LIMIT} on {ROUTE}, {version})\n")
    print(f"{source_revision()}; {machine_summary()}\n")
    headers = ["algorithm", "library", "keys of one client", "keys", "MEMORY USAGE", "used_memory per client"]
    print(markdown_table(headers, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
