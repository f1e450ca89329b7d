"""One AsyncLimiter on Redis used from several event loops: one after another, at once, and after a fork.

An asyncio client's connections belong to the loop they were opened in. A
limiter built from a URL keeps a client per loop (``backends/_loops.py``);
a client the app built serves the loop of its first call, and a call from
another loop is a storage outage, never a ``RuntimeError`` from asyncio.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections import Counter
from typing import Any

import pytest
import redis
import redis.asyncio

from bisman_ratelimit import AsyncLimiter, StorageUnavailable
from bisman_ratelimit.backends import AsyncFallbackStorage

LIMIT = "1000/hour"
KEYS = 8


async def crowd(limiter: AsyncLimiter, prefix: str, checks: int = 64) -> Counter[str]:
    """``checks`` hits at once over ``KEYS`` keys: how each ended."""
    results = await asyncio.gather(
        *(limiter.hit(f"{prefix}{i % KEYS}", LIMIT) for i in range(checks)), return_exceptions=True
    )
    return Counter(
        type(result).__name__
        if isinstance(result, BaseException)
        else "allowed"
        if result.allowed
        else "denied"
        for result in results
    )


def counted(url: str, prefix: str) -> int:
    """Hits stored in Redis for the keys of ``prefix``."""
    with redis.Redis.from_url(url) as client:
        keys = client.keys(f"{prefix}*")
    peeks = AsyncLimiter.from_url(url)

    async def used() -> int:
        try:
            return sum([1000 - (await peeks.peek(f"{prefix}{i}", LIMIT)).remaining for i in range(KEYS)])
        finally:
            await peeks.aclose()

    assert len(keys) == KEYS
    return asyncio.run(used())


def connections(url: str) -> int:
    with redis.Redis.from_url(url) as client:
        return len(client.client_list()) - 1  # not this one


@pytest.fixture
def unretrieved(caplog: pytest.LogCaptureFixture) -> Any:
    """The asyncio logger's records of task exceptions nobody retrieved, after the test's runs."""
    caplog.set_level(logging.ERROR, logger="asyncio")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "asyncio"]


def test_loops_one_after_another_each_get_a_client_of_their_own(redis_url: str, unretrieved: Any) -> None:
    limiter = AsyncLimiter.from_url(redis_url + "?timeout=50ms&fallback=memory")
    storage = limiter.storage
    assert isinstance(storage, AsyncFallbackStorage)
    before = connections(redis_url)
    for run in range(3):
        assert asyncio.run(crowd(limiter, f"run{run}:")) == {"allowed": 64}
        # The loop's client closed with the loop.
        assert connections(redis_url) == before
        assert counted(redis_url, f"run{run}:") == 64
    assert storage.answered_locally == 0
    assert storage.breaker.state == "closed"
    assert unretrieved() == []


def test_a_loop_that_ends_with_checks_in_flight_leaves_the_next_loop_working(
    redis_url: str, unretrieved: Any
) -> None:
    limiter = AsyncLimiter.from_url(redis_url + "?timeout=50ms&fallback=memory")

    async def cut_short() -> None:
        await limiter.warm()
        for i in range(64):
            asyncio.create_task(limiter.hit(f"cut:{i % KEYS}", LIMIT))  # noqa: RUF006 - cancelled by asyncio.run
        await asyncio.sleep(0)  # under way, and the loop ends: asyncio.run cancels them

    asyncio.run(cut_short())
    for run in range(2):
        assert asyncio.run(crowd(limiter, f"after{run}:")) == {"allowed": 64}
        assert counted(redis_url, f"after{run}:") == 64
    assert limiter.storage.answered_locally == 0  # type: ignore[attr-defined]
    assert unretrieved() == []


def test_loops_of_two_threads_at_once(redis_url: str, unretrieved: Any) -> None:
    # (A budget a busy machine meets: the second loop opens its connections under a crowd.)
    limiter = AsyncLimiter.from_url(redis_url + "?timeout=1s&fallback=memory")
    outcomes: dict[str, Counter[str]] = {}
    start = threading.Barrier(2)

    def thread(name: str) -> None:
        async def rounds() -> Counter[str]:
            total: Counter[str] = Counter()
            for _ in range(20):
                total += await crowd(limiter, f"{name}:", 32)
            return total

        start.wait()
        outcomes[name] = asyncio.run(rounds())

    threads = [threading.Thread(target=thread, args=(name,)) for name in ("a", "b")]
    for each in threads:
        each.start()
    for each in threads:
        each.join(30)
    assert outcomes == {"a": {"allowed": 640}, "b": {"allowed": 640}}
    assert counted(redis_url, "a:") == 640
    assert counted(redis_url, "b:") == 640
    assert limiter.storage.answered_locally == 0  # type: ignore[attr-defined]
    assert unretrieved() == []


def test_forked_children_build_clients_of_their_own(redis_url: str) -> None:
    # gunicorn --preload: the limiter is made, warmed and used in the parent, then workers fork.
    # (Each child opens its connections during a crowd of 320 checks: a budget a busy machine meets.)
    limiter = AsyncLimiter.from_url(redis_url + "?timeout=1s&fallback=memory")

    async def parent() -> Counter[str]:
        await limiter.warm()
        return await crowd(limiter, "parent:")

    assert asyncio.run(parent()) == {"allowed": 64}
    children = []
    for child in range(2):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through the pipe
            os.close(read)
            try:
                outcome: Any = dict(asyncio.run(crowd(limiter, f"child{child}:", 320)))
                outcome["answered_locally"] = limiter.storage.answered_locally  # type: ignore[attr-defined]
            except BaseException as exc:
                outcome = {"error": repr(exc)}
            os.write(write, json.dumps(outcome).encode())
            os._exit(0)
        os.close(write)
        children.append((pid, read))
    for child, (pid, read) in enumerate(children):
        with os.fdopen(read) as pipe:
            report = json.loads(pipe.read())
        os.waitpid(pid, 0)
        assert report == {"allowed": 320, "answered_locally": 0}
        assert counted(redis_url, f"child{child}:") == 320


def test_a_client_the_app_built_serves_one_loop_and_another_loop_is_an_outage(redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    limiter = AsyncLimiter(client)
    assert asyncio.run(crowd(limiter, "own:")) == {"allowed": 64}

    async def elsewhere() -> str:
        with pytest.raises(StorageUnavailable) as caught:
            await limiter.hit("own:0", LIMIT)
        return str(caught.value)

    assert asyncio.run(elsewhere()) == (
        "the redis.asyncio client given to this limiter belongs to another event loop "
        "(or to the process this one was forked from): build the limiter from a URL, "
        "and it keeps one client per event loop"
    )
    assert counted(redis_url, "own:") == 64  # the refused hit was not counted
