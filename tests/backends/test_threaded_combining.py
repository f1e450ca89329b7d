"""Checks from many threads combined into one write per connection (``backends/_combine.py``).

Each check is compared with what the same check, sent alone, decides: a
second storage under another prefix with ``coalesce=False``, on the same
server and the same injected clock. Where a test needs a batch of a known
make-up, a blocking command holds the combiner's lane while the callers
queue up behind it.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import astuple
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import ManualClock

from bisman_ratelimit import InvalidArgument, Limiter, StorageResponseError, StorageUnavailable
from bisman_ratelimit.backends import RedisStorage
from bisman_ratelimit.backends._combine import Combiner, combiner_for
from bisman_ratelimit.backends._wire import lender_for
from bisman_ratelimit.core import Decision
from bisman_ratelimit.testing import RedisServer

ALGORITHMS = ("fixed_window", "sliding_window", "sliding_log", "token_bucket", "gcra")
# Per hour: a key's expiry in server time outlasts the test, whatever the injected clock says.
LIMIT = "100/hour"

Check = tuple[str, str, int, bool]  # key, algorithm, cost, hit (else peek)


def pair(url: str, clock: ManualClock, **options: Any) -> tuple[Limiter, Limiter]:
    """A combining limiter and one that sends each check alone, on the same server and clock."""
    combined = RedisStorage(
        redis.Redis.from_url(url, **options), prefix="co", clock=clock, budget=1.0, coalesce=True
    )
    alone = RedisStorage(redis.Redis.from_url(url, **options), prefix="one", clock=clock, budget=1.0)
    return Limiter(combined), Limiter(alone)


@pytest.fixture
def limiters(redis_url: str, clock: ManualClock) -> Iterator[tuple[Limiter, Limiter]]:
    combined, alone = pair(redis_url, clock)
    yield combined, alone
    combined.close()
    alone.close()


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as started:
        yield started


def combiner_of(limiter: Limiter) -> Combiner:
    storage = limiter.storage
    assert isinstance(storage, RedisStorage) and storage._lender is not None
    assert storage._call == combiner_for(storage._lender).call
    return combiner_for(storage._lender)


def run(limiter: Limiter, check: Check) -> Decision:
    key, algorithm, cost, hit = check
    act = limiter.hit if hit else limiter.peek
    return act(key, LIMIT, algorithm, cost)  # type: ignore[arg-type]


def figures(decision: Decision) -> tuple[Any, ...]:
    return astuple(decision)


def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for another thread to reach a state (not for time to pass)."""
    deadline = time.monotonic() + 10.0
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.001)


def in_threads(work: list[Callable[[], Any]]) -> list[Any]:
    """Run each of ``work`` on a thread of its own, all at once; results or exceptions, in order."""
    results: list[Any] = [None] * len(work)
    barrier = threading.Barrier(len(work))

    def target(index: int) -> None:
        barrier.wait()
        try:
            results[index] = work[index]()
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=target, args=(n,)) for n in range(len(work))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@contextmanager
def lane_held(combiner: Combiner, client: redis.Redis) -> Iterator[None]:
    """The combiner's lane taken by a blocking command until the block ends, so callers queue."""
    key = f"lane:{random.random()}"
    holder = threading.Thread(target=combiner.call, args=("BLPOP", key, "10"))
    holder.start()
    until(lambda: combiner.busy, "the lane is taken")
    until(lambda: any(entry["cmd"] == "blpop" for entry in client.client_list()), "the BLPOP is blocked")
    try:
        yield
    finally:
        client.lpush(key, "go")
        holder.join()


def queued(combiner: Combiner, work: list[Callable[[], Any]], client: redis.Redis) -> list[Any]:
    """Run ``work`` on threads that all queue behind the lane, then go out as one batch."""
    outcomes: list[Any] = []
    with lane_held(combiner, client):
        runner = threading.Thread(target=lambda: outcomes.extend(in_threads(work)))
        runner.start()
        until(lambda: len(combiner.queue) == len(work), "every caller queued")
    runner.join()
    return outcomes


def test_a_lone_check_goes_out_at_once(limiters: tuple[Limiter, Limiter]) -> None:
    combined, _ = limiters
    combiner = combiner_of(combined)
    assert [combined.hit("a", "2/hour").allowed for _ in range(3)] == [True, True, False]
    assert (combiner.batches, combiner.combined, combiner.busy) == (0, 0, False)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_threads_hammering_one_limit_get_exactly_the_limit(
    limiters: tuple[Limiter, Limiter], algorithm: str
) -> None:
    combined, _ = limiters

    def hammer() -> int:
        return sum(combined.hit("shared", "300/hour", algorithm).allowed for _ in range(50))  # type: ignore[arg-type]

    allowed = in_threads([hammer] * 16)
    assert sum(allowed) == 300
    assert combined.peek("shared", "300/hour", algorithm).remaining == 0  # type: ignore[arg-type]
    assert combiner_of(combined).batches > 0


def test_thousands_of_mixed_checks_from_threads_each_get_their_own_reply(
    limiters: tuple[Limiter, Limiter],
) -> None:
    combined, alone = limiters
    rng = random.Random(16)
    # Each thread's keys are its own, so what each check decides does not
    # hang on how the threads interleave.
    plans = [
        [
            (f"t{t}:k{rng.randrange(6)}", rng.choice(ALGORITHMS), rng.randint(1, 12), rng.random() < 0.8)
            for _ in range(250)
        ]
        for t in range(24)
    ]
    got = in_threads([lambda plan=plan: [figures(run(combined, check)) for check in plan] for plan in plans])
    expected = [[figures(run(alone, check)) for check in plan] for plan in plans]
    assert got == expected
    combiner = combiner_of(combined)
    assert combiner.batches > 0 and combiner.combined >= 2 * combiner.batches


def test_a_script_error_fails_its_own_caller_only(limiters: tuple[Limiter, Limiter]) -> None:
    combined, _ = limiters
    client = combined.storage.client  # type: ignore[attr-defined]
    combiner = combiner_of(combined)
    assert combined.hit("warm", LIMIT, "sliding_log").allowed  # the script is loaded
    # A string where sliding_log keeps a sorted set: the script fails on it.
    client.set(combined.storage.key_for("bad", combined._prepare("bad", LIMIT, "sliding_log", 1)[0]), "x")  # type: ignore[attr-defined]
    work = [lambda n=n: combined.hit(f"k{n}", LIMIT, "sliding_log", cost=n + 1) for n in range(15)]
    work.insert(7, lambda: combined.hit("bad", LIMIT, "sliding_log"))
    outcomes = queued(combiner, work, client)
    assert (combiner.batches, combiner.combined) == (1, 16)
    failed = outcomes.pop(7)
    assert isinstance(failed, StorageResponseError)
    assert str(failed).startswith(
        "Redis answered with an error: WRONGTYPE Operation against a key holding the wrong kind of value"
    )
    assert [(d.key, d.remaining) for d in outcomes] == [(f"k{n}", 99 - n) for n in range(15)]


def test_after_a_script_flush_each_caller_of_a_batch_loads_the_script_and_counts_once(
    limiters: tuple[Limiter, Limiter],
) -> None:
    combined, _ = limiters
    client = combined.storage.client  # type: ignore[attr-defined]
    assert combined.hit("warm", LIMIT).allowed
    client.script_flush()
    outcomes = queued(
        combiner_of(combined), [lambda n=n: combined.hit(f"k{n}", LIMIT) for n in range(12)], client
    )
    assert [(d.key, d.remaining) for d in outcomes] == [(f"k{n}", 99) for n in range(12)]


def test_a_command_that_cannot_be_packed_fails_its_own_caller_only(redis_client: redis.Redis) -> None:
    lender = lender_for(redis_client)
    assert lender is not None
    combiner = combiner_for(lender)
    work: list[Callable[[], Any]] = [
        lambda n=n: combiner.call("INCRBY", f"n{n}", str(n)) for n in range(1, 6)
    ]
    work.insert(2, lambda: combiner.call("INCRBY", "bad", object()))
    outcomes = queued(combiner, work, redis_client)
    assert isinstance(outcomes.pop(2), TypeError)
    assert outcomes == [1, 2, 3, 4, 5]
    assert redis_client.exists("bad") == 0


@pytest.mark.redis
def test_a_connection_killed_mid_batch_fails_each_caller_and_checks_are_tried_again(
    server: RedisServer, clock: ManualClock
) -> None:
    combined, _ = pair(server.url, clock)
    admin = redis.Redis.from_url(server.url)
    combiner = combiner_of(combined)
    try:
        assert combined.hit("warm", LIMIT).allowed
        # The batch's first command blocks the connection: the rest wait
        # unread behind it when the connection is killed.
        raw = [lambda: combiner.call("INCR", "raw") for _ in range(4)]
        checks = [lambda n=n: combined.hit(f"k{n}", LIMIT, cost=n + 1) for n in range(16)]
        outcomes: list[Any] = []
        blocked: list[Any] = []
        with lane_held(combiner, admin):
            runner = threading.Thread(target=lambda: outcomes.extend(in_threads(raw + checks)))
            runner.start()
            until(lambda: len(combiner.queue) == 20, "the checks queued")
            # The newest caller leads, and its command goes first: it blocks
            # the connection, and the others wait unread behind it.
            last = threading.Thread(
                target=lambda: blocked.extend(in_threads([lambda: combiner.call("BZPOPMIN", "never", "10")]))
            )
            last.start()
            until(lambda: len(combiner.queue) == 21, "the blocker queued")
        until(lambda: any(e["cmd"] == "bzpopmin" for e in admin.client_list()), "the batch is blocked")
        [victim] = [e["id"] for e in admin.client_list() if e["cmd"] == "bzpopmin"]
        assert (combiner.batches, combiner.combined) == (1, 21)
        assert admin.execute_command("CLIENT", "KILL", "ID", victim) == 1
        runner.join()
        last.join()
        errors = blocked + outcomes[:4]
        assert [type(e) for e in errors] == [redis.ConnectionError] * 5
        assert {str(e) for e in errors} == {"Connection closed by server."}
        assert len({id(e) for e in errors}) == 5  # each caller has its own
        assert admin.get("raw") is None  # never run
        # The checks were tried again, once each.
        assert [(d.key, d.remaining) for d in outcomes[4:]] == [(f"k{n}", 99 - n) for n in range(16)]
        assert [combined.peek(f"k{n}", LIMIT).remaining for n in range(16)] == [99 - n for n in range(16)]
    finally:
        combined.close()
        admin.close()


@pytest.mark.redis
def test_a_stopped_server_fails_each_caller_within_its_own_socket_timeout(server: RedisServer) -> None:
    limiter = Limiter.from_url(server.url + "?timeout=300ms&blocked_cache=off&coalesce=on")
    assert server.process is not None
    limiter.warm()
    assert limiter.hit("warm", LIMIT).allowed

    def timed(n: int) -> tuple[Any, float]:
        started = time.monotonic()
        try:
            outcome: Any = limiter.hit(f"k{n}", LIMIT)
        except StorageUnavailable as exc:
            outcome = exc
        return outcome, time.monotonic() - started

    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        results = in_threads([lambda n=n: timed(n) for n in range(16)])
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    try:
        assert [str(outcome) for outcome, _ in results] == [
            f"Redis is unavailable: Timeout reading from 127.0.0.1:{server.port}"
        ] * 16
        # Not a socket timeout after the batch ahead of it had one: each
        # caller waited its own, from its arrival (0.6 s and more without).
        assert max(waited for _, waited in results) < 0.5
        # The connections that timed out were closed, unread replies and
        # all: what the server answers now goes to the right callers.
        allowed = in_threads([lambda: sum(limiter.hit("after", LIMIT).allowed for _ in range(20))] * 16)
        assert sum(allowed) == 100
        assert [limiter.hit(f"fresh{n}", LIMIT).remaining for n in range(3)] == [99, 99, 99]
    finally:
        limiter.close()


def test_a_forked_child_combines_on_connections_of_its_own(redis_url: str) -> None:
    # A timeout longer than the blocking command that holds the lane.
    limiter = Limiter.from_url(redis_url + "?coalesce=on&timeout=30s")
    combiner = combiner_of(limiter)
    admin = redis.Redis.from_url(redis_url)
    assert limiter.hit("forked", "1000/hour").remaining == 999
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    try:
        # Forked while a parent thread holds the lane: the child must not
        # wait for a batch that is not its own.
        with lane_held(combiner, admin):
            child = context.Process(target=_fork_child, args=(limiter, queue))
            child.start()
            child.join(timeout=30)
            assert child.exitcode == 0
            assert queue.get(timeout=5) == (160, 839)
        assert limiter.hit("forked", "1000/hour").remaining == 838
    finally:
        limiter.close()
        admin.close()


def _fork_child(limiter: Limiter, queue: Any) -> None:  # pragma: no cover - runs in the child
    allowed = in_threads([lambda: sum(limiter.hit("forked", "1000/hour").allowed for _ in range(20))] * 8)
    queue.put((sum(allowed), limiter.peek("forked", "1000/hour").remaining))


def test_the_coalesce_switch(redis_url: str) -> None:
    on = Limiter.from_url(redis_url + "?coalesce=on")
    off = Limiter.from_url(redis_url + "?coalesce=off")
    assert combiner_of(on).lender is lender_for(on.storage.client)  # type: ignore[attr-defined]
    assert off.storage._call == lender_for(off.storage.client).call  # type: ignore[attr-defined,union-attr]
    with pytest.raises(InvalidArgument, match="coalesce must be True or False, got 'yes'"):
        RedisStorage(redis.Redis.from_url(redis_url), coalesce="yes")  # type: ignore[arg-type]
    on.close()
    off.close()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    plans=st.lists(
        st.lists(
            st.tuples(st.integers(0, 3), st.sampled_from(ALGORITHMS), st.integers(1, 30), st.booleans()),
            min_size=1,
            max_size=10,
        ),
        min_size=2,
        max_size=6,
    ),
    pause=st.floats(0, 400),
)
def test_combined_and_single_calls_decide_alike(
    redis_url: str, plans: list[list[tuple[int, str, int, bool]]], pause: float
) -> None:
    clock = ManualClock()
    combined, alone = pair(redis_url, clock)
    combiner = combiner_of(combined)
    client = combined.storage.client  # type: ignore[attr-defined]
    try:
        client.flushdb()
        for _ in range(2):
            checks = [
                [(f"t{t}:k{n}", algo, cost, hit) for n, algo, cost, hit in plan]
                for t, plan in enumerate(plans)
            ]
            before = combiner.batches
            # Every thread's first check in one batch; the rest as they come.
            got = queued(
                combiner,
                [lambda mine=mine: [figures(run(combined, c)) for c in mine] for mine in checks],
                client,
            )
            assert combiner.batches > before
            assert got == [[figures(run(alone, c)) for c in mine] for mine in checks]
            clock.advance(pause)
    finally:
        combined.close()
        alone.close()
