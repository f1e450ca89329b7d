"""Asyncio checks coalesced into one write per connection (``AsyncLender.call`` in ``backends/_wire.py``).

Each check is compared with what the same check, sent alone, decides: a
second storage under another prefix with ``coalesce=False``, on the same
server and the same injected clock.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import astuple
from typing import TYPE_CHECKING, Any

import pytest
import redis
import redis.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import ManualClock

from bisman_ratelimit import AsyncLimiter, StorageResponseError, StorageUnavailable
from bisman_ratelimit.backends import AsyncRedisStorage, _wire
from bisman_ratelimit.backends._wire import MAX_BATCH, AsyncLender, NodeBatches, node_batches_for
from bisman_ratelimit.core import Decision
from bisman_ratelimit.testing import RedisServer

if TYPE_CHECKING:
    from cluster_fixtures import RedisClusterServers

# The redis_cluster fixture.
pytest_plugins = ["cluster_fixtures"]

ALGORITHMS = ("fixed_window", "sliding_window", "sliding_log", "token_bucket", "gcra")
# Per hour: a key's expiry in server time outlasts the test, whatever the injected clock says.
LIMIT = "100/hour"


def lender_of(limiter: AsyncLimiter) -> AsyncLender:
    storage = limiter.storage
    assert isinstance(storage, AsyncRedisStorage) and isinstance(storage._wire.lender, AsyncLender)
    return storage._wire.lender


def pair(url: str, clock: ManualClock, **options: Any) -> tuple[AsyncLimiter, AsyncLimiter]:
    """A coalescing limiter and one that sends each check alone, on the same server and clock."""
    coalesced = AsyncRedisStorage(
        redis.asyncio.Redis.from_url(url, **options), prefix="co", clock=clock, budget=1.0, coalesce=True
    )
    alone = AsyncRedisStorage(
        redis.asyncio.Redis.from_url(url, **options), prefix="one", clock=clock, budget=1.0, coalesce=False
    )
    return AsyncLimiter(coalesced), AsyncLimiter(alone)


@pytest.fixture
async def limiters(redis_url: str, clock: ManualClock) -> AsyncIterator[tuple[AsyncLimiter, AsyncLimiter]]:
    coalesced, alone = pair(redis_url, clock)
    yield coalesced, alone
    await coalesced.aclose()
    await alone.aclose()


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as started:
        yield started


Check = tuple[str, str, int, bool]  # key, algorithm, cost, hit (else peek)


async def run(limiter: AsyncLimiter, check: Check) -> Decision:
    key, algorithm, cost, hit = check
    act = limiter.hit if hit else limiter.peek
    return await act(key, LIMIT, algorithm, cost)  # type: ignore[arg-type]


def figures(decision: Decision) -> tuple[Any, ...]:
    return astuple(decision)


async def test_a_lone_check_goes_out_at_once_and_a_crowd_shares_one_connection(
    limiters: tuple[AsyncLimiter, AsyncLimiter],
) -> None:
    coalesced, alone = limiters
    lender = lender_of(coalesced)
    assert (await coalesced.hit("k", LIMIT)).remaining == 99
    assert (lender.busy, lender.pending, lender.lent) == (0, [], 1)
    before = await connected(coalesced)
    # 100 checks in one turn: the first goes out alone (nothing was under
    # way), the other 99 in one batch on a second connection.
    decisions = await asyncio.gather(*(coalesced.hit(f"k{n}", LIMIT, cost=1 + n % 7) for n in range(100)))
    assert [d.remaining for d in decisions] == [99 - n % 7 for n in range(100)]
    assert (lender.lent, await connected(coalesced) - before) == (2, 1)
    # Sent alone, the same crowd takes many connections (one per check on
    # redis-py 6 and later; redis-py 5's pool hands fewer out at once).
    before = await connected(coalesced)
    await asyncio.gather(*(alone.hit(f"k{n}", LIMIT) for n in range(100)))
    assert await connected(coalesced) - before >= 10


async def connected(limiter: AsyncLimiter) -> int:
    info = await limiter.storage.client.info("clients")  # type: ignore[attr-defined]
    return int(info["connected_clients"])


async def test_a_crowd_larger_than_a_batch_goes_out_in_several(
    limiters: tuple[AsyncLimiter, AsyncLimiter],
) -> None:
    coalesced, _ = limiters
    crowd = 3 * MAX_BATCH + 2
    decisions = await asyncio.gather(*(coalesced.hit(f"k{n % 50}", LIMIT) for n in range(crowd)))
    # 50 keys, hit 7 or 8 times each: every count exact.
    remaining = sorted((d.key, d.remaining) for d in decisions)
    expected = sorted((f"k{n % 50}", 100 - (n // 50 + 1)) for n in range(crowd))
    assert remaining == expected
    # One alone, then batches of at most MAX_BATCH, each on a connection.
    assert lender_of(coalesced).lent == 5


async def test_ten_thousand_concurrent_mixed_checks_each_get_their_own_reply(
    limiters: tuple[AsyncLimiter, AsyncLimiter], clock: ManualClock
) -> None:
    coalesced, alone = limiters
    shuffle = random.Random(16)
    keys = [f"user:{n}" for n in range(10_000)]
    # Each key starts from a history of its own, so that replies differ
    # from one key to the next and a reply handed to the wrong caller shows.
    setup = [(key, ALGORITHMS[n % 5], n % 4 * (1 + n % 13), True) for n, key in enumerate(keys) if n % 4]
    checks = [
        (key, ALGORITHMS[n % 5], shuffle.randint(1, 40), shuffle.random() < 0.7) for n, key in enumerate(keys)
    ]
    await asyncio.gather(*(run(coalesced, check) for check in setup))
    for first in range(0, len(setup), 50):  # a connection each: a crowd at a time
        await asyncio.gather(*(run(alone, check) for check in setup[first : first + 50]))
    clock.advance(1.5)
    expected = [figures(await run(alone, check)) for check in checks]
    got = await asyncio.gather(*(run(coalesced, check) for check in checks))
    assert [figures(d) for d in got] == expected
    assert sum(d.allowed for d in got) == sum(e[0] for e in expected) > 5000
    # What each check left behind is the same too.
    clock.advance(0.5)
    after = [figures(await run(alone, (key, algo, 1, False))) for key, algo, _, _ in checks]
    seen = await asyncio.gather(*(run(coalesced, (key, algo, 1, False)) for key, algo, _, _ in checks))
    assert [figures(d) for d in seen] == after
    assert lender_of(coalesced).lent <= 64


async def test_cancelled_callers_never_get_or_take_another_callers_reply(
    limiters: tuple[AsyncLimiter, AsyncLimiter],
) -> None:
    coalesced, _ = limiters
    chance = random.Random(7)
    cancelled = 0
    for round_no in range(40):
        # A cost of its own per caller: the reply says whose it is.
        costs = [1 + n for n in range(90)]
        keys = [f"r{round_no}:{n}" for n in range(90)]
        tasks = [
            asyncio.ensure_future(coalesced.hit(key, LIMIT, cost=cost))
            for key, cost in zip(keys, costs, strict=True)
        ]
        doomed = set(chance.sample(range(90), 60))
        # Cancel some before their batch is written, some while it is read.
        for turn in range(3):
            await asyncio.sleep(0)
            for n in sorted(doomed):
                if n % 3 == turn:
                    tasks[n].cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        for n, outcome in enumerate(outcomes):
            if isinstance(outcome, asyncio.CancelledError):
                cancelled += 1
                assert n in doomed
                continue
            assert isinstance(outcome, Decision), outcome
            assert (outcome.key, outcome.remaining) == (keys[n], 100 - costs[n])
        # Every survivor's hit counted once: the coalesced storage agrees with itself.
        peeks = await asyncio.gather(*(coalesced.peek(key, LIMIT) for key in keys))
        for n, (outcome, seen) in enumerate(zip(outcomes, peeks, strict=True)):
            if isinstance(outcome, Decision):
                assert seen.remaining == outcome.remaining
            else:  # a cancelled hit was sent whole, or not at all
                assert seen.remaining in (100, 100 - costs[n])
    assert cancelled >= 2000
    lender = lender_of(coalesced)
    assert (lender.busy, lender.pending) == (0, [])


async def test_a_script_error_fails_its_own_caller_only(
    limiters: tuple[AsyncLimiter, AsyncLimiter],
) -> None:
    coalesced, _ = limiters
    client = coalesced.storage.client  # type: ignore[attr-defined]
    # A string where sliding_log keeps a sorted set: the script fails on it.
    bad_key = coalesced.storage.key_for("bad", _spec_of(coalesced, "sliding_log"))  # type: ignore[attr-defined]
    await client.set(bad_key, "x")
    checks = [coalesced.hit(f"k{n}", LIMIT, "sliding_log", cost=n + 1) for n in range(30)]
    checks.insert(15, coalesced.hit("bad", LIMIT, "sliding_log"))
    outcomes = await asyncio.gather(*checks, return_exceptions=True)
    failed = outcomes.pop(15)
    assert isinstance(failed, StorageResponseError)
    assert "WRONGTYPE" in str(failed)
    assert [(d.key, d.remaining) for d in outcomes] == [(f"k{n}", 99 - n) for n in range(30)]  # type: ignore[union-attr]


def _spec_of(limiter: AsyncLimiter, algorithm: str) -> Any:
    return limiter._prepare("k", LIMIT, algorithm, 1)[0]


@pytest.mark.redis
async def test_a_connection_killed_mid_batch_is_tried_again_and_counts_stay_exact(
    server: RedisServer, clock: ManualClock
) -> None:
    coalesced, _ = pair(server.url, clock)
    admin = redis.asyncio.Redis.from_url(server.url)
    try:
        await coalesced.hit("warm", LIMIT)
        # Writes wait while the server is paused: the batch is sent and unanswered when killed.
        await admin.execute_command("CLIENT", "PAUSE", "300", "WRITE")
        tasks = [asyncio.ensure_future(coalesced.hit(f"k{n}", LIMIT, cost=n + 1)) for n in range(50)]
        for _ in range(20):
            await asyncio.sleep(0.005)
            listed = await admin.client_list()
            if sum(entry["cmd"] == "evalsha" for entry in listed) >= 2:
                break
        killed = await admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        assert killed >= 2
        await admin.execute_command("CLIENT", "UNPAUSE")
        decisions = await asyncio.gather(*tasks)
        assert [(d.key, d.remaining) for d in decisions] == [(f"k{n}", 99 - n) for n in range(50)]
        peeks = await asyncio.gather(*(coalesced.peek(f"k{n}", LIMIT) for n in range(50)))
        assert [d.remaining for d in peeks] == [99 - n for n in range(50)]
    finally:
        await coalesced.aclose()
        await admin.aclose()


@pytest.mark.redis
async def test_a_stopped_server_fails_a_batch_within_the_socket_timeout(server: RedisServer) -> None:
    limiter = AsyncLimiter.from_url(server.url + "?timeout=100ms&blocked_cache=off&coalesce=on")
    assert server.process is not None
    try:
        await limiter.warm()
        first = asyncio.ensure_future(limiter.hit("lone", LIMIT))
        await asyncio.sleep(0)
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            outcomes = await asyncio.gather(
                first, *(limiter.hit(f"k{n}", LIMIT) for n in range(60)), return_exceptions=True
            )
            waited = time.monotonic() - started
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        assert [str(o).split(" from ")[0] for o in outcomes] == ["Redis is unavailable: Timeout reading"] * 61
        assert all(isinstance(o, StorageUnavailable) for o in outcomes)
        # Each caller has an exception of its own, not one shared (and its traceback with it).
        assert len({id(o) for o in outcomes}) == 61
        # The batch as a whole had one socket timeout, not one per reply.
        assert waited < 1.0
        assert (await limiter.hit("after", LIMIT)).remaining == 99
    finally:
        await limiter.aclose()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(
        st.tuples(
            st.lists(
                st.tuples(st.integers(0, 11), st.sampled_from(ALGORITHMS), st.integers(1, 30), st.booleans()),
                min_size=1,
                max_size=12,
                unique_by=lambda check: check[0],
            ),
            st.floats(0, 400),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_coalesced_and_single_calls_decide_alike(
    redis_url: str, steps: list[tuple[list[tuple[int, str, int, bool]], float]]
) -> None:
    asyncio.run(_decide_alike(redis_url, steps))


async def _decide_alike(url: str, steps: list[tuple[list[tuple[int, str, int, bool]], float]]) -> None:
    clock = ManualClock()
    coalesced, alone = pair(url, clock)
    try:
        await coalesced.storage.client.flushdb()  # type: ignore[attr-defined]
        for checks, pause in steps:
            batch = [(f"k{n}", algo, cost, hit) for n, algo, cost, hit in checks]
            expected = [figures(await run(alone, check)) for check in batch]
            got = await asyncio.gather(*(run(coalesced, check) for check in batch))
            assert [figures(d) for d in got] == expected
            clock.advance(pause)
    finally:
        await coalesced.aclose()
        await alone.aclose()


def batches_of(limiter: AsyncLimiter) -> NodeBatches:
    storage = limiter.storage
    assert isinstance(storage, AsyncRedisStorage) and storage._wire.lender is None
    batches = node_batches_for(storage.client)
    assert batches is not None and storage._wire.call == batches.call
    return batches


def node_of(limiter: AsyncLimiter, key: str, algorithm: str) -> str:
    """The name of the Cluster node that holds ``key``'s counter for ``algorithm``."""
    storage = limiter.storage
    assert isinstance(storage, AsyncRedisStorage)
    return str(storage.client.get_node_from_key(storage.key_for(key, _spec_of(limiter, algorithm))).name)


class Written:
    """Counts the writes of script calls per Cluster node (each batch is one)."""

    def __init__(self, batches: NodeBatches, monkeypatch: pytest.MonkeyPatch) -> None:
        self.per_node: dict[str, int] = {}
        self.commands: dict[str, int] = {}
        self.alone = 0
        send = _wire._send

        async def counting(conn: Any, packed: list[bytes]) -> None:
            name = f"{conn.host}:{conn.port}"
            self.per_node[name] = self.per_node.get(name, 0) + 1
            self.commands[name] = self.commands.get(name, 0) + len(packed)
            await send(conn, packed)

        execute = batches.client.execute_command

        async def alone(*args: Any, **kwargs: Any) -> Any:
            self.alone += 1
            return await execute(*args, **kwargs)

        monkeypatch.setattr(_wire, "_send", counting)
        monkeypatch.setattr(batches.client, "execute_command", alone)


async def test_on_cluster_ten_thousand_concurrent_mixed_checks_go_out_per_node_and_each_get_their_own_reply(
    redis_cluster: RedisClusterServers, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    coalesced = AsyncLimiter(AsyncRedisStorage(redis_cluster.async_client(), clock=clock, budget=1.0))
    alone = AsyncLimiter(
        AsyncRedisStorage(redis_cluster.async_client(), prefix="one", clock=clock, budget=1.0, coalesce=False)
    )
    try:
        batches = batches_of(coalesced)
        shuffle = random.Random(17)
        keys = [f"{{u{n}}}:api" for n in range(10_000)]
        setup = [(key, ALGORITHMS[n % 5], n % 4 * (1 + n % 13), True) for n, key in enumerate(keys) if n % 4]
        checks = [
            (key, ALGORITHMS[n % 5], shuffle.randint(1, 40), shuffle.random() < 0.7)
            for n, key in enumerate(keys)
        ]
        # The first checks read the slot map (until then, each check goes to its
        # node alone) and load the scripts (a crowd would each load them).
        for algorithm in ALGORITHMS:
            await coalesced.peek("first", LIMIT, algorithm)  # type: ignore[arg-type]
        await asyncio.gather(*(run(coalesced, check) for check in setup))
        for first in range(0, len(setup), 50):  # a connection each: a crowd at a time
            await asyncio.gather(*(run(alone, check) for check in setup[first : first + 50]))
        clock.advance(1.5)
        expected = [figures(await run(alone, check)) for check in checks]
        written = Written(batches, monkeypatch)
        got = await asyncio.gather(*(run(coalesced, check) for check in checks))
        assert [figures(d) for d in got] == expected
        assert sum(d.allowed for d in got) == sum(e[0] for e in expected) > 5000
        # The first went out at once, alone on its node's connection; the rest in
        # batches of MAX_BATCH per node (a node's last one smaller), each holding
        # the checks of its node's keys. None went through the client.
        first = node_of(coalesced, checks[0][0], checks[0][1])
        owners = [node_of(coalesced, key, algorithm) for key, algorithm, _, _ in checks[1:]]
        per_node = {name: owners.count(name) for name in set(owners)}
        assert len(per_node) == 3
        assert written.alone == 0
        assert written.commands == {name: count + (name == first) for name, count in per_node.items()}
        assert written.per_node == {
            name: -(-count // MAX_BATCH) + (name == first) for name, count in per_node.items()
        }
        assert (batches.busy, batches.pending, batches.suspect) == (0, {}, set())
    finally:
        await coalesced.aclose()
        await alone.aclose()


async def test_on_cluster_cancelled_callers_never_get_or_take_another_callers_reply(
    redis_cluster: RedisClusterServers,
) -> None:
    coalesced = AsyncLimiter(AsyncRedisStorage(redis_cluster.async_client(), budget=1.0))
    try:
        batches = batches_of(coalesced)
        chance = random.Random(8)
        await coalesced.peek("first", LIMIT)  # the slot map
        cancelled = 0
        for round_no in range(20):
            costs = [1 + n for n in range(90)]
            keys = [f"{{r{round_no}:{n}}}" for n in range(90)]
            tasks = [
                asyncio.ensure_future(coalesced.hit(key, LIMIT, cost=cost))
                for key, cost in zip(keys, costs, strict=True)
            ]
            doomed = set(chance.sample(range(90), 60))
            for turn in range(3):  # before their batch is written, and while it is read
                await asyncio.sleep(0)
                for n in sorted(doomed):
                    if n % 3 == turn:
                        tasks[n].cancel()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            peeks = await asyncio.gather(*(coalesced.peek(key, LIMIT) for key in keys))
            for n, (outcome, seen) in enumerate(zip(outcomes, peeks, strict=True)):
                if isinstance(outcome, asyncio.CancelledError):
                    cancelled += 1
                    assert n in doomed
                    assert seen.remaining in (100, 100 - costs[n])  # sent whole, or not at all
                else:
                    assert isinstance(outcome, Decision), outcome
                    assert (outcome.key, outcome.remaining, seen.remaining) == (
                        keys[n],
                        100 - costs[n],
                        100 - costs[n],
                    )
        assert cancelled >= 1000
        assert (batches.busy, batches.pending) == (0, {})
    finally:
        await coalesced.aclose()


async def test_on_cluster_a_connection_killed_mid_batch_fails_only_the_callers_on_its_node(
    redis_cluster: RedisClusterServers,
) -> None:
    # No time for retries: a caller whose call fails gets the error.
    coalesced = AsyncLimiter(AsyncRedisStorage(redis_cluster.async_client(), budget=1e-9))
    admins = {f"127.0.0.1:{port}": redis.asyncio.Redis(port=port) for _, port in redis_cluster.nodes}
    try:
        batches = batches_of(coalesced)
        await coalesced.hit("{warm}", LIMIT)
        keys = [f"{{k{n}}}" for n in range(90)]
        owners = [node_of(coalesced, key, "fixed_window") for key in keys]
        victim = owners[5]
        admin = admins[victim]
        # Writes wait while the node is paused: its batch is sent and unanswered when killed.
        await admin.execute_command("CLIENT", "PAUSE", "2000", "WRITE")
        tasks = [asyncio.ensure_future(coalesced.hit(key, LIMIT, cost=n + 1)) for n, key in enumerate(keys)]
        for _ in range(200):
            await asyncio.sleep(0.005)
            listed = await admin.client_list()
            if sum(entry["cmd"] == "evalsha" for entry in listed) >= 1 and all(
                task.done() for task, owner in zip(tasks, owners, strict=True) if owner != victim
            ):
                break
        killed = await admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        assert killed >= 1
        await admin.execute_command("CLIENT", "UNPAUSE")
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        for n, (outcome, owner) in enumerate(zip(outcomes, owners, strict=True)):
            if owner == victim:
                assert isinstance(outcome, StorageUnavailable), outcome
                assert str(outcome).startswith("Redis is unavailable: "), outcome
            else:
                assert isinstance(outcome, Decision) and outcome.remaining == 99 - n, outcome
        assert batches.suspect == {victim}
        # The node's next checks go through the client alone until one succeeds.
        again = [k for k, owner in zip(keys, owners, strict=True) if owner == victim]
        assert (await coalesced.hit(again[0], LIMIT)).remaining == 99
        assert batches.suspect == set()
        decisions = await asyncio.gather(*(coalesced.hit(key, LIMIT) for key in again[1:]))
        assert [d.remaining for d in decisions] == [99] * (len(again) - 1)
    finally:
        await coalesced.aclose()
        for admin in admins.values():
            await admin.execute_command("CLIENT", "UNPAUSE")
            await admin.aclose()


@pytest.mark.parametrize(
    ("query", "coalesced"), [("", True), ("?coalesce=on", True), ("?coalesce=off", False)]
)
async def test_checks_are_coalesced_unless_the_url_says_off(
    redis_url: str, query: str, coalesced: bool
) -> None:
    async with AsyncLimiter.from_url(redis_url + query) as limiter:
        storage = limiter.storage
        assert isinstance(storage, AsyncRedisStorage)
        lender = lender_of(limiter)
        assert storage._wire.call == (lender.call if coalesced else lender.call_one)
        default = AsyncRedisStorage(redis.asyncio.Redis.from_url(redis_url))
        assert default._wire.call == default._wire.lender.call  # type: ignore[union-attr]
        await default.aclose()
