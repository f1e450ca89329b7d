"""Test helpers: a manual clock, limiters over every backend, sync and async, and waiting for a server."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis
import redis.asyncio

from bisman_ratelimit import AsyncLimiter, Limiter
from bisman_ratelimit.backends import AsyncRedisStorage, MemoryStorage, RedisStorage
from bisman_ratelimit.core import unpack_state

_BY_LETTER = {"f": "fixed_window", "s": "sliding_window", "t": "token_bucket", "g": "gcra"}


def stored_state(client: Any, key: str | bytes) -> tuple[float, ...] | None:
    """The numbers a counter key holds (fixed_window: window, count; sliding_window:
    window, count, previous count; token_bucket and gcra: debt, time, or the
    time the debt is paid off, 0), from an integer or a string of doubles."""
    raw = client.get(key)
    if raw is None:
        return None
    if raw.isdigit():
        name = key.decode() if isinstance(key, bytes) else key
        algorithm = _BY_LETTER[name.rsplit(":", 1)[1][0]]
        return tuple(float(n) for n in unpack_state(algorithm, int(raw)))
    return struct.unpack(f"<{len(raw) // 8}d", raw)


def period_with_room_left(client: Any, near: float, room: float) -> float:
    """A window length of about ``near`` seconds (not less) whose current
    window, on the server's clock, has at least ``room`` seconds left.

    Windows start at multiples of their length since the epoch, so a test
    that must stay inside one window on a real clock picks its length
    rather than waiting for the next window to start."""
    seconds, micros = client.time()
    now_us = seconds * 1_000_000 + micros
    period_us = round(near * 1_000_000)
    room_us = round(room * 1_000_000)
    if room_us * 2 > period_us:
        raise ValueError(f"room {room} s must be at most half of {near} s")
    # Each microsecond added moves the current window's start back by
    # now // period microseconds: short windows need a few tries, a day's
    # window with a minute of room a few thousand at most.
    while now_us % period_us > period_us - room_us:
        period_us += 1
    return period_us / 1_000_000


class ManualClock:
    """A clock for the memory backend that moves only when told."""

    def __init__(self, start: float = 1_699_920_000.0) -> None:
        # Midnight UTC: every window of a minute, hour or day starts here.
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class SyncFacade:
    """Runs an AsyncLimiter's coroutines on a private loop, so the sync suite covers it."""

    def __init__(self, limiter: AsyncLimiter) -> None:
        self._limiter = limiter
        self._loop = asyncio.new_event_loop()
        self.storage = limiter.storage

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._limiter, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            result = self._loop.run_until_complete(method(*args, **kwargs))
            if hasattr(result, "release") and hasattr(result, "limiter"):
                return SyncLease(result, self._loop)
            return result

        return call

    def shutdown(self) -> None:
        self._loop.run_until_complete(self._limiter.aclose())
        self._loop.close()


class SyncLease:
    def __init__(self, lease: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._lease = lease
        self._loop = loop
        self.key = lease.key

    def release(self) -> None:
        self._loop.run_until_complete(self._lease.release())


def make_limiter(backend: str, mode: str, clock: Callable[[], float], url: str | None) -> Any:
    """``backend`` is "memory" or a server URL's kind; ``clock`` drives time on both.

    On Redis the clock stands in for the server's TIME through the storage's
    test hook, so exact figures can be asserted there too.
    """
    if backend == "memory":
        memory = MemoryStorage(clock=clock)
        return Limiter(memory) if mode == "sync" else SyncFacade(AsyncLimiter(memory))
    assert url is not None
    if mode == "sync":
        return Limiter(RedisStorage(redis.Redis.from_url(url), clock=clock))
    return SyncFacade(AsyncLimiter(AsyncRedisStorage(redis.asyncio.Redis.from_url(url), clock=clock)))


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Wait until the server ``process`` started listens on ``port`` of 127.0.0.1; say why if it exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"the server exited with {process.returncode}: {err}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the server did not listen on port {port} within {timeout} s")


@contextlib.contextmanager
def served(command: list[str], port: int, env: dict[str, str]) -> Iterator[str]:
    """Start the server ``command`` (listening on ``port``), give its base URL, stop it after."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()


def soon(read: Callable[[], object], expected: object, within: float = 2.0) -> object:
    """What ``read()`` gives once it gives ``expected``, or after ``within`` seconds: for what
    reaches another connection moments after the call that caused it returned."""
    deadline = time.monotonic() + within
    value = read()
    while value != expected and time.monotonic() < deadline:
        time.sleep(0.005)
        value = read()
    return value
