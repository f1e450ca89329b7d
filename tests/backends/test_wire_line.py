"""Asyncio checks under load: the line for connections, and deadlines in server time."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from bisman_ratelimit import AsyncLimiter, StorageBusy
from bisman_ratelimit.backends import AsyncFallbackStorage, AsyncRedisStorage


def lender_of(limiter: AsyncLimiter) -> Any:
    storage = limiter.storage
    assert isinstance(storage, AsyncRedisStorage) and storage._wire.lender is not None
    return storage._wire.lender


async def test_checks_wait_in_line_and_each_connection_given_back_goes_to_the_first(redis_url: str) -> None:
    # Each check on a connection of its own: coalesced, they would wait as one.
    async with AsyncLimiter.from_url(redis_url + "?max_connections=4&coalesce=off") as limiter:
        lender = lender_of(limiter)
        await limiter.warm()
        held = [await lender._take() for _ in range(4)]
        assert (lender.lent, lender.capacity, lender.max_waiting) == (4, 4, 64)
        waiting = [asyncio.ensure_future(limiter.hit(f"k{i}", "10/minute")) for i in range(64)]
        await asyncio.sleep(0)  # one turn: they queue up
        assert len(lender.line) == 64
        # The line is full: the next check is turned away at once, not after the wait.
        with pytest.raises(
            StorageBusy, match=r"^64 Redis commands already wait for a connection of the pool$"
        ):
            await limiter.hit("late", "10/minute")
        for conn in held:
            await lender._give_back(conn)
        decisions = await asyncio.gather(*waiting)
        assert [d.remaining for d in decisions] == [9] * 64
        # One stays idle with the lender (a quarter of the pool), the rest went back to the pool.
        assert (len(lender.line), lender.lent, len(lender.idle)) == (0, 1, 1)


async def test_no_connection_within_the_wait_raises_storage_busy(redis_url: str) -> None:
    async with AsyncLimiter.from_url(redis_url + "?max_connections=4") as limiter:
        lender = lender_of(limiter)
        assert lender.pool.timeout == 2.0
        lender.pool.timeout = 0.05
        held = [await lender._take() for _ in range(4)]
        with pytest.raises(
            StorageBusy, match=r"^no Redis connection came free within 0.05 s \(all 4 of the pool in use\)$"
        ):
            await limiter.hit("k", "10/minute")
        assert not any(not turn.done() for turn in lender.line)
        await lender._give_back(held.pop())
        assert (await limiter.hit("k", "10/minute")).remaining == 9
        for conn in held:
            await lender._give_back(conn)


async def test_a_reply_that_came_while_the_app_held_the_loop_is_read_not_timed_out(redis_url: str) -> None:
    async with AsyncLimiter.from_url(redis_url + "?timeout=50ms") as limiter:
        await limiter.warm()
        checks = [asyncio.ensure_future(limiter.hit(f"k{i}", "10/minute")) for i in range(40)]
        await asyncio.sleep(0)  # one turn: the checks are sent
        time.sleep(0.08)  # a handler holds the loop past every check's 50 ms budget
        decisions = await asyncio.gather(*checks)
        assert [d.remaining for d in decisions] == [9] * 40


@pytest.mark.parametrize("coalesce", ["on", "off"])
async def test_replies_that_came_while_the_app_held_the_loop_for_seconds_count_as_no_failure(
    redis_url: str, coalesce: str
) -> None:
    # With a 20 ms budget a read is given up on once the loop has been held
    # up for 200 ms in all, but not before it has read what came meanwhile.
    # The app below holds the loop for 1.3 s: longer than that, and longer
    # than the 1.2 s that redis-py's own timeout on the read once had.
    url = redis_url + f"?timeout=20ms&fallback=memory&coalesce={coalesce}"
    async with AsyncLimiter.from_url(url) as limiter:
        storage = limiter.storage
        assert isinstance(storage, AsyncFallbackStorage) and isinstance(storage.primary, AsyncRedisStorage)
        lender = storage.primary._wire.lender
        assert lender is not None
        await limiter.warm()
        costs = [1 + i % 9 for i in range(120)]
        hits = [limiter.hit(f"k{n}", "10/minute", cost=cost) for n, cost in enumerate(costs)]
        checks = [asyncio.ensure_future(hit) for hit in hits]
        await asyncio.sleep(0)  # one turn: the checks are sent, or wait for their batch
        while lender.pending:
            await asyncio.sleep(0)  # the batch is written in the turn its task starts
        assert lender.busy == (2 if coalesce == "on" else 120)
        time.sleep(1.3)  # a handler holds the loop
        decisions = await asyncio.gather(*checks)
        assert [d.remaining for d in decisions] == [10 - cost for cost in costs]
        stats = storage.breaker.stats()
        assert (stats.failures, stats.opened, storage.answered_locally) == (0, 0, 0)
