"""Checks on a Redis Cluster while a slot moves to another primary.

A slot is resharded as ``redis-cli --cluster reshard`` does it (IMPORTING,
MIGRATING, ``MIGRATE`` a key at a time, then ``SETSLOT NODE``), from a
thread of its own, while a crowd checks keys in that slot: single checks
and checks of five limits at once. Checks sent to the old owner meet
``ASK`` (the key has moved), ``TRYAGAIN`` (a check's keys are split
between the two nodes) and, once the slot has moved, ``MOVED``. Each must
be sent again and counted once: exactly the limit is allowed per key,
whichever node held the key when each check came.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from cluster_fixtures import RedisClusterServers
from redis.crc import key_slot
from support import ManualClock

from bisman_ratelimit import AsyncLimiter, Limiter
from bisman_ratelimit.backends import AsyncRedisStorage, RedisStorage, _wire
from bisman_ratelimit.backends._wire import NodeBatches
from bisman_ratelimit.core import Decision, MultiDecision
from bisman_ratelimit.stores import AsyncChatContext, ChatContext

pytestmark = pytest.mark.redis

ALGORITHMS = ("fixed_window", "sliding_window", "sliding_log", "token_bucket", "gcra")
LIMIT = "50/hour"
# A slot of the first node's half, which the tests move to the second.
SLOT = 1000
# Checks done before the move starts, between one key's move and the next,
# and after the move.
BEFORE, PER_KEY, AFTER = 500, 20, 500

Outcome = Decision | MultiDecision | Exception


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterServers]:
    # A cluster of its own: the tests here move a slot between its nodes.
    servers = RedisClusterServers(masters=2).start()
    yield servers
    servers.stop()


class Admin:
    """The operator: connections to the two primaries, which move ``SLOT`` from the first to the second."""

    def __init__(self, cluster: RedisClusterServers) -> None:
        (_, first), (_, second) = cluster.nodes
        self.source = redis.Redis(port=first)
        self.target = redis.Redis(port=second)
        self.target_port = second
        self.source_id = self.source.execute_command("CLUSTER", "MYID").decode()
        self.target_id = self.target.execute_command("CLUSTER", "MYID").decode()

    def move(self, progress: Callable[[], int] | None = None) -> int:
        """Move ``SLOT`` a key per ``MIGRATE``; the number of keys moved.

        After each key it waits for ``progress()`` (the checks done) to grow
        by ``PER_KEY``: checks meet every state of the slot half moved,
        however fast this machine runs either side. Without ``progress``,
        it waits 2 ms, as an operator's tool goes on whatever the app does.
        """
        self.target.execute_command("CLUSTER", "SETSLOT", SLOT, "IMPORTING", self.source_id)
        self.source.execute_command("CLUSTER", "SETSLOT", SLOT, "MIGRATING", self.target_id)
        moved = 0
        while keys := self.source.execute_command("CLUSTER", "GETKEYSINSLOT", SLOT, 1):
            self.source.execute_command("MIGRATE", "127.0.0.1", self.target_port, "", 0, 5000, "KEYS", *keys)
            moved += len(keys)
            if progress is None:
                time.sleep(0.002)
                continue
            wanted = progress() + PER_KEY
            while progress() < wanted:
                time.sleep(0.0005)
        for node in (self.target, self.source):
            node.execute_command("CLUSTER", "SETSLOT", SLOT, "NODE", self.target_id)
        return moved

    def keys_in_slot(self) -> tuple[int, int]:
        """How many keys of ``SLOT`` each node holds."""
        return tuple(  # type: ignore[return-value]
            node.execute_command("CLUSTER", "COUNTKEYSINSLOT", SLOT) for node in (self.source, self.target)
        )

    def errors(self) -> Counter[str]:
        """The error replies of the first node since the last reset, by their first word."""
        stats = self.source.info("errorstats")
        return Counter({name.removeprefix("errorstat_"): fields["count"] for name, fields in stats.items()})

    def reset(self) -> None:
        """Empty both nodes, give ``SLOT`` back to the first, and clear its statistics."""
        for node in (self.source, self.target):
            node.flushall()
            node.execute_command("CLUSTER", "SETSLOT", SLOT, "STABLE")
        for node in (self.target, self.source):
            node.execute_command("CLUSTER", "SETSLOT", SLOT, "NODE", self.source_id)
        self.source.config_resetstat()

    def close(self) -> None:
        self.source.close()
        self.target.close()


@pytest.fixture
def admin(cluster: RedisClusterServers) -> Iterator[Admin]:
    operator = Admin(cluster)
    operator.reset()
    yield operator
    operator.reset()
    operator.close()


def identities_in(storage: RedisStorage | AsyncRedisStorage | None, limiter: Any, count: int) -> list[str]:
    """``count`` identities in a hash tag whose keys, for every algorithm, are in ``SLOT``."""
    names = [f"{{u{n}}}" for n in range(1_000_000) if key_slot(f"u{n}".encode()) == SLOT][:count]
    for name in names if storage is not None else ():
        for algorithm in ALGORITHMS:
            key = storage.key_for(name, limiter._prepare(name, LIMIT, algorithm, 1)[0])
            assert key_slot(key.encode()) == SLOT, key
    assert len(names) == count
    return names


def workload(names: list[str]) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """Endless rounds of calls: single hits on the five limits of half the identities, all five at once
    on the others (an ``itertools.cycle``, which threads can share).
    """
    half = len(names) // 2
    work = [("hit", (name, LIMIT, algorithm)) for name in names[:half] for algorithm in ALGORITHMS]
    work += [("hit_many", ([(name, LIMIT, algorithm) for algorithm in ALGORITHMS],)) for name in names[half:]]
    rounds = [call for _ in range(20) for call in random.Random(len(names)).sample(work, len(work))]
    return itertools.cycle(rounds)


def check_counts(outcomes: list[tuple[Any, Outcome]]) -> None:
    """Every call decided, and each limit allowed exactly its amount, neither lost nor counted twice."""
    assert [outcome for _, outcome in outcomes if isinstance(outcome, Exception)] == []
    calls = Counter(repr(call) for call, _ in outcomes)
    allowed = Counter(repr(call) for call, decision in outcomes if decision.allowed)  # type: ignore[union-attr]
    assert min(calls.values()) > 50
    assert allowed == {call: 50 for call in calls}


class Sizes:
    """The number of commands in each write on a node's connection, per port."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.per_port: dict[int, list[int]] = {}
        send = _wire._send

        async def counting(conn: Any, packed: list[bytes]) -> None:
            self.per_port.setdefault(conn.port, []).append(len(packed))
            await send(conn, packed)

        monkeypatch.setattr(_wire, "_send", counting)


async def crowd(
    limiter: AsyncLimiter, names: list[str], admin: Admin
) -> tuple[list[tuple[Any, Outcome]], int]:
    """Check on 64 tasks while ``admin.move`` runs in a thread, from the ``BEFORE``-th check to ``AFTER``
    checks before the end. Returns each call and its outcome, and the number of keys moved.
    """
    work = workload(names)
    outcomes: list[tuple[Any, Outcome]] = []
    moving: asyncio.Future[int] | None = None
    end: int | None = None

    async def worker() -> None:
        nonlocal moving, end
        while end is None or len(outcomes) < end:
            if moving is None and len(outcomes) >= BEFORE:
                moving = asyncio.ensure_future(asyncio.to_thread(admin.move, outcomes.__len__))
            elif moving is not None and moving.done() and end is None:
                end = len(outcomes) + AFTER
            call = next(work)
            try:
                outcomes.append((call, await getattr(limiter, call[0])(*call[1])))
            except Exception as exc:  # each failure is reported by check_counts
                outcomes.append((call, exc))

    await asyncio.gather(*(worker() for _ in range(64)))
    assert moving is not None
    return outcomes, await moving


@pytest.mark.parametrize("coalesce", [True, False], ids=["coalesced", "one-at-a-time"])
async def test_async_checks_while_their_slot_moves_are_each_counted_once(
    cluster: RedisClusterServers,
    admin: Admin,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    coalesce: bool,
) -> None:
    storage = AsyncRedisStorage(cluster.async_client(), clock=clock, budget=5.0, coalesce=coalesce)
    limiter = AsyncLimiter(storage)
    try:
        names = identities_in(storage, limiter, 12)
        for algorithm in ALGORITHMS:  # the slot map, and the scripts
            await limiter.peek("first", LIMIT, algorithm)  # type: ignore[arg-type]
        await limiter.peek_many([("first", LIMIT, algorithm) for algorithm in ALGORITHMS])  # type: ignore[misc]
        sizes = Sizes(monkeypatch)
        outcomes, moved = await crowd(limiter, names, admin)

        check_counts(outcomes)
        assert moved > 0
        errors = admin.errors()
        assert errors["ASK"] > 0 and errors["TRYAGAIN"] > 0 and errors["MOVED"] > 0, errors
        # MOVED updates the client's map: the checks on their way when the slot
        # moved meet it, not every check after (were MOVED followed as ASK is,
        # the map would stay stale and each of the AFTER checks would bounce).
        assert errors["MOVED"] < AFTER / 2, errors
        (_, source_port), (_, target_port) = cluster.nodes
        # Coalesced, checks went out in batches to the first node, then to the second.
        assert (max(sizes.per_port[source_port]) > 2, max(sizes.per_port[target_port]) > 2) == (
            coalesce,
            coalesce,
        )
        # Every key now lives on the second node, spent.
        assert admin.keys_in_slot() == (0, len(names) * len(ALGORITHMS))
        for name in names:
            for algorithm in ALGORITHMS:
                seen = await limiter.peek(name, LIMIT, algorithm)  # type: ignore[arg-type]
                assert (seen.allowed, seen.remaining) == (False, 0), (name, algorithm)
    finally:
        await limiter.aclose()


def test_threads_checking_while_their_slot_moves_are_each_counted_once(
    cluster: RedisClusterServers, admin: Admin, clock: ManualClock
) -> None:
    storage = RedisStorage(cluster.client(), clock=clock, budget=5.0)
    limiter = Limiter(storage)
    try:
        names = identities_in(storage, limiter, 8)
        work = workload(names)
        outcomes: list[tuple[Any, Outcome]] = []
        moved: list[int] = []
        started, done = threading.Event(), threading.Event()

        def operator() -> None:
            started.wait()
            try:
                moved.append(admin.move(outcomes.__len__))
            finally:
                done.set()

        def worker() -> None:
            while not done.is_set() or len(outcomes) < end:
                if len(outcomes) >= BEFORE:
                    started.set()
                call = next(work)
                try:
                    outcomes.append((call, getattr(limiter, call[0])(*call[1])))
                except Exception as exc:  # each failure is reported by check_counts
                    outcomes.append((call, exc))

        end = 10**9
        operating = threading.Thread(target=operator)
        operating.start()
        workers = [threading.Thread(target=worker) for _ in range(16)]
        for thread in workers:
            thread.start()
        operating.join()
        end = len(outcomes) + AFTER
        for thread in workers:
            thread.join()

        check_counts(outcomes)
        assert moved[0] > 0
        errors = admin.errors()
        assert errors["ASK"] > 0 and errors["TRYAGAIN"] > 0 and errors["MOVED"] > 0, errors
        assert admin.keys_in_slot() == (0, len(names) * len(ALGORITHMS))
    finally:
        limiter.close()


async def test_chat_context_appended_while_its_slot_moves_keeps_every_message_once(
    cluster: RedisClusterServers, admin: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Windows of 8 messages: a thread's context spans several keys, which the
    # script finds by name; while the move splits them between the nodes, the
    # server refuses the script ("a non local key").
    waits = 0
    run = NodeBatches._run

    async def counting(batches: NodeBatches, args: tuple[Any, ...], batch: bool) -> Any:
        nonlocal waits
        try:
            return await run(batches, args, batch)
        except redis.ResponseError as exc:
            waits += str(exc).startswith("Script attempted to access a non local key")
            raise

    monkeypatch.setattr(NodeBatches, "_run", counting)
    chat = AsyncChatContext(cluster.async_client(), keep=10_000, window_size=8, ttl=600)
    threads = [name.strip("{}") for name in identities_in(None, None, 8)]
    sent: dict[str, list[int]] = {thread: [] for thread in threads}
    numbers: dict[str, list[int]] = {thread: [] for thread in threads}
    failures: list[Exception] = []
    done = 0
    moving: asyncio.Future[int] | None = None
    end: int | None = None
    order = itertools.cycle(threads)

    async def writer() -> None:
        nonlocal done, moving, end
        while end is None or done < end:
            if moving is None and done >= BEFORE:
                moving = asyncio.ensure_future(asyncio.to_thread(admin.move))
            elif moving is not None and moving.done() and end is None:
                end = done + AFTER
            thread = next(order)
            message = len(sent[thread])
            sent[thread].append(message)
            try:
                numbers[thread].append(await chat.append(thread, {"n": message}))
            except Exception as exc:  # each failure is reported below
                failures.append(exc)
            done += 1

    try:
        await asyncio.gather(*(writer() for _ in range(64)))
        assert moving is not None and await moving > 0
        assert failures == []
        # Appends met a thread's keys split between the nodes, and waited.
        assert waits > 0
        for thread in threads:
            # Each message stored once, numbered 1 to n in the order the server took them.
            assert sorted(numbers[thread]) == list(range(1, len(sent[thread]) + 1))
            stored = [message["n"] for message in await chat.last(thread)]
            assert sorted(stored) == sent[thread]
    finally:
        await chat.aclose()


def test_chat_context_appended_by_threads_while_its_slot_moves_keeps_every_message_once(
    cluster: RedisClusterServers, admin: Admin
) -> None:
    chat = ChatContext(cluster.client(), keep=10_000, window_size=8, ttl=600)
    threads = [name.strip("{}") for name in identities_in(None, None, 8)]
    sent: dict[str, list[int]] = {thread: [] for thread in threads}
    numbers: dict[str, list[int]] = {thread: [] for thread in threads}
    failures: list[Exception] = []
    order = itertools.cycle(threads)
    lock = threading.Lock()
    started, done = threading.Event(), threading.Event()
    moved: list[int] = []

    def operator() -> None:
        started.wait()
        try:
            moved.append(admin.move())
        finally:
            done.set()

    def writer() -> None:
        after = 0
        while after < AFTER // 16:
            with lock:
                thread = next(order)
                message = len(sent[thread])
                sent[thread].append(message)
                if sum(map(len, sent.values())) >= BEFORE:
                    started.set()
            try:
                numbers[thread].append(chat.append(thread, {"n": message}))
            except Exception as exc:  # each failure is reported below
                failures.append(exc)
            after += done.is_set()

    workers = [threading.Thread(target=operator)] + [threading.Thread(target=writer) for _ in range(16)]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert moved[0] > 0
        assert failures == []
        for thread in threads:
            assert sorted(numbers[thread]) == list(range(1, len(sent[thread]) + 1))
            assert sorted(message["n"] for message in chat.last(thread)) == sent[thread]
    finally:
        chat.close()
