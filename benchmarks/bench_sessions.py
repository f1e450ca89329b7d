"""Session load + renewal on Redis, against the one-round-trip floor.

Loading a session must also renew it (rolling TTL, capped by the absolute
deadline), and the target is one round trip per request for both. This
script times, on one private server and one connection each:

- ``PING`` and ``EVALSHA`` of a script that returns 1: the floor, one
  round trip with nothing to do;
- ``SessionStore.load()``: our load + renewal (one ``EVALSHA``);
- the same load written by hand as a pipeline (``HGETALL`` + ``PEXPIRE``,
  one round trip but no absolute cap) and as two plain calls (two round
  trips), the peers an app would write without the store;
- the asyncio versions of the floor and of our load.

Rounds interleave the contenders in rotating order; each figure is the
median of the rounds. Round trips per operation are counted at the
client's socket. Run: ``python benchmarks/bench_sessions.py``
(``--rounds``, ``--ops``, ``--sessions``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio

from bisman_ratelimit.stores import AsyncSessionStore, SessionStore
from bisman_ratelimit.testing import RedisServer, find_server_binary

TRIVIAL = "return 1"


@dataclass
class Contender:
    name: str
    run: Callable[[str], object] | None = None
    arun: Callable[[str], Awaitable[object]] | None = None
    note: str = ""


def time_sync(run: Callable[[str], object], ids: list[str], ops: int) -> float:
    start = time.perf_counter()
    for i in range(ops):
        run(ids[i % len(ids)])
    return (time.perf_counter() - start) / ops * 1e6


async def time_async(arun: Callable[[str], Awaitable[object]], ids: list[str], ops: int) -> float:
    start = time.perf_counter()
    for i in range(ops):
        await arun(ids[i % len(ids)])
    return (time.perf_counter() - start) / ops * 1e6


def round_trips_per_op(contender: Contender, ids: list[str], loop: asyncio.AbstractEventLoop) -> float:
    """Writes to the socket per operation: a pipeline or a script call is one, a PING is one."""
    import redis.asyncio.connection
    import redis.connection

    sent = [0]
    sync_class: Any = redis.connection.AbstractConnection
    async_class: Any = redis.asyncio.connection.AbstractConnection
    sync_send, async_send = sync_class.send_packed_command, async_class.send_packed_command

    def counting_send(self: Any, *args: Any, **kwargs: Any) -> Any:
        sent[0] += 1
        return sync_send(self, *args, **kwargs)

    async def counting_async_send(self: Any, *args: Any, **kwargs: Any) -> Any:
        sent[0] += 1
        return await async_send(self, *args, **kwargs)

    ops = 200
    sync_class.send_packed_command = counting_send
    async_class.send_packed_command = counting_async_send
    try:
        if contender.run is not None:
            time_sync(contender.run, ids, ops)
        else:
            assert contender.arun is not None
            loop.run_until_complete(time_async(contender.arun, ids, ops))
    finally:
        sync_class.send_packed_command = sync_send
        async_class.send_packed_command = async_send
    return sent[0] / ops


def bench(kind: str, rounds: int, ops: int, sessions: int) -> list[tuple[str, float, float, str]]:
    binary = find_server_binary(kind)
    assert binary is not None
    with RedisServer(binary) as server:
        client = redis.Redis.from_url(server.url)
        store = SessionStore(redis.Redis.from_url(server.url))
        loop = asyncio.new_event_loop()
        aclient = redis.asyncio.Redis.from_url(server.url)
        astore = AsyncSessionStore(redis.asyncio.Redis.from_url(server.url))
        raw = redis.Redis.from_url(server.url)
        trivial_sha = raw.script_load(TRIVIAL)
        data = {"user": "u123", "cart": [1, 2, 3], "csrf": "x" * 32, "theme": "dark", "seen": 1_700_000_000}
        ids = [store.create(data, user_id=f"u{i}").id for i in range(sessions)]
        random.Random(7).shuffle(ids)
        keys = {sid: store.core.session_key(sid) for sid in ids}

        # The peers decode the fields as the store does, so only the Redis side differs.
        def decoded(found: Any) -> dict[str, object]:
            return {k[2:].decode(): json.loads(v) for k, v in found.items() if k.startswith(b"d:")}

        def pipeline_load(sid: str) -> object:
            pipe = raw.pipeline(transaction=False)
            pipe.hgetall(keys[sid])
            pipe.pexpire(keys[sid], 1_800_000)
            return decoded(pipe.execute()[0])

        def two_calls(sid: str) -> object:
            found = raw.hgetall(keys[sid])
            raw.pexpire(keys[sid], 1_800_000)
            return decoded(found)

        contenders = [
            Contender("PING", run=lambda sid: raw.ping(), note="floor"),
            Contender("EVALSHA return 1", run=lambda sid: raw.evalsha(trivial_sha, 0), note="floor"),
            Contender("SessionStore.load", run=store.load, note="ours"),
            Contender("HGETALL+PEXPIRE pipeline", run=pipeline_load, note="peer, no absolute cap"),
            Contender("HGETALL, then PEXPIRE", run=two_calls, note="peer, 2 round trips"),
            Contender("async PING", arun=lambda sid: aclient.ping(), note="floor"),
            Contender("AsyncSessionStore.load", arun=astore.load, note="ours"),
        ]
        # Warm up connections, script caches and code paths.
        for contender in contenders:
            if contender.run is not None:
                time_sync(contender.run, ids, 200)
            else:
                assert contender.arun is not None
                loop.run_until_complete(time_async(contender.arun, ids, 200))
        timings: dict[str, list[float]] = {c.name: [] for c in contenders}
        for round_index in range(rounds):
            order = contenders[round_index % len(contenders) :] + contenders[: round_index % len(contenders)]
            for contender in order:
                if contender.run is not None:
                    timings[contender.name].append(time_sync(contender.run, ids, ops))
                else:
                    assert contender.arun is not None
                    timings[contender.name].append(
                        loop.run_until_complete(time_async(contender.arun, ids, ops))
                    )
            print(f"  {kind}: round {round_index + 1}/{rounds} done", file=sys.stderr)
        # Every timed load must have found its session.
        assert all(store.load(sid) is not None for sid in ids[:50])
        rows = []
        for contender in contenders:
            median = statistics.median(timings[contender.name])
            commands = round_trips_per_op(contender, ids, loop)
            rows.append((contender.name, median, commands, contender.note))
        loop.run_until_complete(aclient.aclose())
        loop.run_until_complete(astore.aclose())
        loop.run_until_complete(astore.backend.aclose())  # type: ignore[union-attr]
        loop.close()
        version = client.info("server").get("redis_version", "?")
        for closing in (client, raw, store.backend):
            closing.close()
    print(f"\n### {kind} {version}: session read + renew, one connection each")
    print(f"Median of {rounds} rounds of {ops} operations; the ratio is to PING through the same API.\n")
    floor = {False: rows[0][1], True: rows[5][1]}
    print("| contender | µs / op | ratio to PING | round trips / op | note |")
    print("|---|---:|---:|---:|---|")
    for name, median, commands, note in rows:
        is_async = name.startswith("async") or name.startswith("Async")
        print(f"| {name} | {median:.1f} | {median / floor[is_async]:.2f} | {commands:.2f} | {note} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--ops", type=int, default=1500)
    parser.add_argument("--sessions", type=int, default=1000)
    args = parser.parse_args()
    print(
        f"Python {platform.python_version()}, redis-py {redis.__version__}, "
        f"{platform.machine()}, {platform.system()} {platform.release()}"
    )
    for kind in ("redis", "valkey"):
        if find_server_binary(kind):
            bench(kind, args.rounds, args.ops, args.sessions)


if __name__ == "__main__":
    main()
