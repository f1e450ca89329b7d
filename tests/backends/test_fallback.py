"""Faults injected into real server processes: the fallback decides, callers see no error.

Each test starts its own server (it may be killed, put to sleep or made
busy). The breaker runs on a manual clock, so "later" needs no sleeping,
and waits are bounded by counting tries (``Replies``), not by timing them.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
from support import ManualClock, stored_state

from bisman_ratelimit import AsyncLimiter, Limiter, StorageResponseError, StorageUnavailable
from bisman_ratelimit.backends import (
    AsyncFallbackStorage,
    FallbackStorage,
    MemoryStorage,
    RedisStorage,
    storage_from_url,
)
from bisman_ratelimit.core import CircuitBreaker, InvalidArgument, OutagePolicy
from bisman_ratelimit.testing import RedisServer

# Every test here starts its own server.
pytestmark = pytest.mark.redis

LOGGER = "bisman_ratelimit.fallback"


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer(args=("--enable-debug-command", "yes")) as started:
        yield started


@pytest.fixture
def durable_server() -> Iterator[RedisServer]:
    """A server that keeps its data across SIGKILL and restart."""
    with RedisServer(args=("--appendonly", "yes", "--appendfsync", "always")) as started:
        yield started


def admin(server: RedisServer) -> redis.Redis:
    return redis.Redis(port=server.port, socket_timeout=10)


def send_raw(server: RedisServer, *words: str) -> socket.socket:
    """Send one command without waiting for its answer (the server may block on it)."""
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall("".join(f"${len(w)}\r\n{w}\r\n" for w in words).join([f"*{len(words)}\r\n", ""]).encode())
    return sock


def restart(server: RedisServer) -> None:
    """Start a killed server again, on the same port and data directory."""
    if server.process is not None and server.process.stderr is not None:
        server.process.stderr.close()
    server.start()


def breaker(clock: ManualClock, **options: Any) -> CircuitBreaker:
    settings: dict[str, Any] = {"failure_threshold": 3, "min_calls": 1, "open_for": 5.0, "clock": clock}
    settings.update(options)
    return CircuitBreaker(**settings)


def warning_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


async def settle(result: Any) -> Any:
    """The value of a sync call, or of an async one awaited."""
    return await result if inspect.isawaitable(result) else result


def make_limiter(mode: str, url: str, **options: Any) -> Any:
    return (Limiter if mode == "sync" else AsyncLimiter).from_url(url, **options)


def reply_kind(exc: BaseException | None) -> str:
    if exc is None:
        return "answer"
    # An asyncio check's read is cut off by cancelling it (its deadline
    # counts server time, not the event loop's stalls).
    if isinstance(exc, (redis.TimeoutError, asyncio.CancelledError)):
        return "timeout"
    if isinstance(exc, redis.BusyLoadingError):
        return "LOADING"
    if isinstance(exc, redis.exceptions.NoScriptError):
        return "NOSCRIPT"
    if isinstance(exc, redis.ResponseError):
        return str(exc).split(" ", 1)[0]  # BUSY, ERR...
    return type(exc).__name__


class Replies:
    """What each try of a limiter got from the server, read off the limiter's own connections.

    A limiter built with ``connection_class=replies.connection_class`` lists
    every reply it waits for in ``seen`` ("answer", "timeout", "BUSY",
    "LOADING"...), leaving out the handshake of a new connection: one entry
    per try, so retries are counted instead of timed. ``then(seen)`` runs
    after each one.
    """

    def __init__(self, mode: str, then: Callable[[list[str]], object] = lambda seen: None) -> None:
        self.seen: list[str] = []
        self.then = then
        note = self.note
        if mode == "sync":

            class Connection(redis.Connection):
                connecting = False

                def connect(self, *args: Any, **kwargs: Any) -> None:
                    self.connecting = True
                    try:
                        super().connect(*args, **kwargs)
                    finally:
                        self.connecting = False

                def read_response(self, *args: Any, **kwargs: Any) -> Any:
                    with note(not self.connecting):
                        return super().read_response(*args, **kwargs)

            self.connection_class: type[Any] = Connection
        else:

            class AsyncConnection(redis.asyncio.Connection):
                connecting = False

                async def connect(self, *args: Any, **kwargs: Any) -> None:
                    self.connecting = True
                    try:
                        await super().connect(*args, **kwargs)
                    finally:
                        self.connecting = False

                async def read_response(self, *args: Any, **kwargs: Any) -> Any:
                    with note(not self.connecting):
                        return await super().read_response(*args, **kwargs)

            self.connection_class = AsyncConnection

    @contextlib.contextmanager
    def note(self, counts: bool) -> Iterator[None]:
        try:
            yield
        except (Exception, asyncio.CancelledError) as exc:
            if counts:
                self.seen.append(reply_kind(exc))
                self.then(self.seen)
            raise
        if counts:
            self.seen.append(reply_kind(None))
            self.then(self.seen)


def socket_timeout(limiter: Any) -> float:
    storage = limiter.storage.primary if hasattr(limiter.storage, "primary") else limiter.storage
    return float(storage.client.connection_pool.connection_kwargs["socket_timeout"])


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_kill_mid_stream_no_errors_limits_enforced_breaker_opens(
    server: RedisServer, clock: ManualClock, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    guard = breaker(clock)
    caplog.set_level(logging.INFO, logger=LOGGER)
    limiter = make_limiter(mode, server.url + "?fallback=memory&timeout=0.2", breaker=guard)

    async def stream(count: int) -> list[bool]:
        return [
            (await settle(limiter.hit("user:1", "20/minute", "fixed_window"))).allowed for _ in range(count)
        ]

    assert await stream(10) == [True] * 10
    server.kill()
    # Every call returns a decision; the local counters start afresh and
    # enforce the limit on their own: 20 allowed, then denied.
    assert await stream(30) == [True] * 20 + [False] * 10
    stats = guard.stats()
    assert (stats.state, stats.failures, stats.rejected) == ("open", 3, 27)
    warnings = warning_messages(caplog)
    assert len(warnings) == 1
    assert warnings[0].startswith(
        "rate-limit storage unavailable (3 failure(s) within 10 s: Redis is unavailable:"
    )
    assert warnings[0].endswith("deciding limits without it for 5 s, then probing")
    await settle(limiter.close() if mode == "sync" else limiter.aclose())


def test_restart_closes_the_breaker_and_redis_decides_again(
    durable_server: RedisServer, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    guard = breaker(clock)
    caplog.set_level(logging.INFO, logger=LOGGER)
    with Limiter.from_url(durable_server.url + "?fallback=memory", breaker=guard) as limiter:
        assert [limiter.hit("user:1", "20/minute").remaining for _ in range(5)] == [
            19,
            18,
            17,
            16,
            15,
        ]
        durable_server.kill()
        assert all(limiter.hit("user:1", "20/minute").allowed for _ in range(8))
        assert guard.state == "open"
        restart(durable_server)
        assert limiter.hit("user:1", "20/minute").remaining == 11  # still local
        clock.advance(5.0)
        # The probe reaches Redis, whose count knows nothing of the 8 local hits.
        assert limiter.hit("user:1", "20/minute").remaining == 14
        assert guard.state == "closed"
        assert limiter.hit("user:1", "20/minute").remaining == 13
    with admin(durable_server) as client:
        (key,) = client.keys("*")
        # (window, this window's count, the previous one's): a minute
        # boundary may fall between the hits.
        assert sum(stored_state(client, key)[1:]) == 7
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(messages) == 3
    assert messages[1] == "probing the rate-limit storage again (5 s elapsed since opening)"
    assert messages[2] == "rate-limit storage answers again (1 probe(s) succeeded); deciding limits on it"


def test_local_counters_never_reach_redis(server: RedisServer, clock: ManualClock) -> None:
    guard = breaker(clock, failure_threshold=1)
    url = server.url + "?fallback=memory&timeout=0.1"
    with Limiter.from_url(url, breaker=guard) as limiter, admin(server) as client:
        sleeper = send_raw(server, "DEBUG", "SLEEP", "0.3")
        time.sleep(0.02)
        for _ in range(5):
            assert limiter.hit("k", "5/minute").allowed
        assert guard.state == "open"
        sleeper.recv(16)
        sleeper.close()
        # The first hit timed out: Redis may or may not run it on waking
        # (it was sent). The four decided locally never reach it.
        key = "k:s1m"
        state = stored_state(client, key)
        counted = int(state[1]) if state else 0
        assert counted <= 1
        clock.advance(5.0)
        assert limiter.hit("k", "5/minute").remaining == 5 - counted - 1
        assert stored_state(client, key)[1] == counted + 1


def test_script_flush_is_transparent(server: RedisServer, clock: ManualClock) -> None:
    guard = breaker(clock, failure_threshold=1)
    with Limiter.from_url(server.url + "?fallback=memory", breaker=guard) as limiter, admin(server) as client:
        assert limiter.hit("k", "10/minute").remaining == 9
        client.script_flush()
        assert limiter.hit("k", "10/minute").remaining == 8
        assert guard.stats().failures == 0


def test_client_kill_is_retried_on_a_new_connection(server: RedisServer) -> None:
    # No fallback: the retry alone hides the reset.
    with Limiter.from_url(server.url) as limiter, admin(server) as client:
        assert limiter.hit("k", "10/minute").remaining == 9
        killed = client.client_kill_filter(_type="normal", skipme=True)
        assert killed >= 1
        assert limiter.hit("k", "10/minute").remaining == 8


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_debug_sleep_beyond_the_budget_waits_no_longer_than_the_budget(
    server: RedisServer, clock: ManualClock, mode: str
) -> None:
    budget = 0.1
    guard = breaker(clock)
    replies = Replies(mode)
    url = f"{server.url}?fallback=memory&timeout={budget}"
    limiter = make_limiter(mode, url, breaker=guard, connection_class=replies.connection_class)
    assert (await settle(limiter.hit("k", "10/minute"))).remaining == 9
    replies.seen.clear()
    sleeper = send_raw(server, "DEBUG", "SLEEP", "1")
    time.sleep(0.02)
    decision = await settle(limiter.hit("k", "10/minute"))
    assert decision.allowed  # decided locally
    # One read, cut off by a socket timeout of the budget, and not tried again.
    assert replies.seen == ["timeout"]
    assert socket_timeout(limiter) == budget
    assert guard.stats().failures == 1
    sleeper.close()
    await settle(limiter.close() if mode == "sync" else limiter.aclose())


def test_debug_sleep_without_fallback_raises_within_the_budget(server: RedisServer) -> None:
    replies = Replies("sync")
    with Limiter.from_url(server.url + "?timeout=50ms", connection_class=replies.connection_class) as limiter:
        limiter.hit("k", "10/minute")
        replies.seen.clear()
        sleeper = send_raw(server, "DEBUG", "SLEEP", "1")
        time.sleep(0.02)
        with pytest.raises(StorageUnavailable, match="Redis is unavailable: Timeout reading from"):
            limiter.hit("k", "10/minute")
        assert replies.seen == ["timeout"]
        assert socket_timeout(limiter) == 0.05
        sleeper.close()


def start_busy_script(server: RedisServer) -> socket.socket:
    """A script that never ends; others get BUSY after 10 ms of it."""
    with admin(server) as client:
        client.config_set("busy-reply-threshold", 10)
    sock = send_raw(server, "EVAL", "while true do end", "0")
    time.sleep(0.05)
    return sock


def kill_script(server: RedisServer) -> None:
    with admin(server) as client:
        client.script_kill()


def test_busy_is_retried_within_the_budget(server: RedisServer, clock: ManualClock) -> None:
    guard = breaker(clock, failure_threshold=1)

    def kill_after_two_busy(seen: list[str]) -> None:
        if seen[-1] == "BUSY" and seen.count("BUSY") == 2:
            kill_script(server)

    replies = Replies("sync", then=kill_after_two_busy)
    url = server.url + "?fallback=memory&timeout=0.8"
    with Limiter.from_url(url, breaker=guard, connection_class=replies.connection_class) as limiter:
        assert limiter.hit("k", "10/minute").remaining == 9
        replies.seen.clear()
        busy = start_busy_script(server)
        decision = limiter.hit("k", "10/minute")
        busy.close()
        # Polled while busy; from Redis (the count goes on) once the script was killed.
        assert replies.seen == ["BUSY", "BUSY", "answer"]
        assert decision.remaining == 8
        assert guard.stats().failures == 0


def test_busy_beyond_the_budget_goes_to_the_fallback(server: RedisServer, clock: ManualClock) -> None:
    guard = breaker(clock)
    with Limiter.from_url(server.url + "?fallback=memory&timeout=0.1", breaker=guard) as limiter:
        limiter.hit("k", "10/minute")
        busy = start_busy_script(server)
        try:
            assert limiter.hit("k", "10/minute").remaining == 9  # the first local hit
            assert guard.stats().failures == 1
            # Without the fallback, the caller is told what went wrong.
            with (
                Limiter.from_url(server.url + "?timeout=0.1") as bare,
                pytest.raises(StorageResponseError, match="Redis answered with an error: BUSY Redis is busy"),
            ):
                bare.hit("k", "10/minute")
        finally:
            with admin(server) as client:
                client.script_kill()
            busy.close()


# Loading is slowed to 200 us a key, and the server answers clients every
# KiB of loading meanwhile (with LOADING).
LOADING_SLOWLY = (
    "--key-load-delay",
    "200",
    "--loading-process-events-interval-bytes",
    "1024",
    "--enable-debug-command",
    "yes",
)


def test_loading_is_retried_within_the_budget() -> None:
    with RedisServer(args=LOADING_SLOWLY) as server:
        with Limiter.from_url(server.url) as limiter:
            assert limiter.hit("k", "10/minute").remaining == 9
        with admin(server) as client:
            client.execute_command("DEBUG", "POPULATE", 2000)
            client.save()
        server.stop()
        restart = threading.Thread(target=server.start)
        restart.start()
        wait_for_loading(server)
        replies = Replies("sync")
        url = server.url + "?timeout=5"
        with Limiter.from_url(url, connection_class=replies.connection_class) as limiter:
            # Loading 2000 keys at 200 us each: the call waits it out and
            # sees the count saved before the restart (a sliding window: a
            # minute boundary during the restart changes no figure here).
            assert limiter.hit("k", "10/minute").remaining == 8
        # Polled while loading; then the script is loaded again (the restart
        # emptied the script cache) and answers.
        loading = replies.seen.count("LOADING")
        assert loading >= 1
        assert replies.seen == ["LOADING"] * loading + ["NOSCRIPT", "answer", "answer"]
        restart.join()


def wait_for_loading(server: RedisServer) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"-LOADING"):
                    return
        except OSError:
            pass
        time.sleep(0.005)
    raise AssertionError("the server never answered LOADING")


def test_loading_beyond_the_budget_goes_to_the_fallback(clock: ManualClock) -> None:
    with RedisServer(args=LOADING_SLOWLY) as server:
        with admin(server) as client:
            client.execute_command("DEBUG", "POPULATE", 2000)
            client.save()
        server.stop()
        restart = threading.Thread(target=server.start)
        restart.start()
        wait_for_loading(server)
        guard = breaker(clock)
        replies = Replies("sync")
        url = server.url + "?fallback=memory&timeout=0.05"
        with Limiter.from_url(url, breaker=guard, connection_class=replies.connection_class) as limiter:
            assert limiter.hit("k", "10/minute").remaining == 9
            assert guard.stats().failures == 1
        # Polling waits 2, 4, 8 and 16 ms between tries; a fifth wait (20 ms)
        # would end past the 50 ms budget, so the server is asked five times at most.
        tries = len(replies.seen)
        assert replies.seen == ["LOADING"] * tries and 1 <= tries <= 5
        restart.join()


def test_readonly_on_a_demoted_primary_goes_to_the_fallback(server: RedisServer, clock: ManualClock) -> None:
    with RedisServer() as other:
        guard = breaker(clock)
        with (
            Limiter.from_url(server.url + "?fallback=memory", breaker=guard) as limiter,
            admin(server) as client,
        ):
            assert limiter.hit("k", "10/minute").remaining == 9
            # A plain URL keeps pointing at the demoted server: after dropping
            # idle connections and trying again, the fallback decides.
            client.replicaof("127.0.0.1", other.port)
            assert limiter.hit("k", "10/minute").allowed
            assert guard.stats().failures == 1
            with pytest.raises(StorageResponseError, match="You can't write against a read only replica"):
                Limiter(client).hit("k", "10/minute")


def test_pool_exhaustion_waits_in_line_then_falls_back_without_counting_against_the_breaker(
    server: RedisServer, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    guard = breaker(clock)
    storage = storage_from_url(server.url + "?fallback=memory&timeout=0.1&max_connections=1", breaker=guard)
    assert isinstance(storage, FallbackStorage) and isinstance(storage.primary, RedisStorage)
    with Limiter(storage) as limiter:
        assert limiter.hit("k", "10/minute").remaining == 9
        pool = storage.primary.client.connection_pool
        # A busy pool is the app's load, not Redis failing: the line is longer than the budget.
        assert pool.timeout == 2.0
        pool.timeout = 0.1
        held = pool.get_connection()
        # Each wait for a connection lasts at most the pool's timeout.
        waits: list[None] = []
        take = pool.get_connection

        def counted(*args: Any, **kwargs: Any) -> Any:
            waits.append(None)
            return take(*args, **kwargs)

        monkeypatch.setattr(pool, "get_connection", counted)
        assert limiter.hit("k", "10/minute").remaining == 9  # local
        assert len(waits) == 1
        stats = guard.stats()
        assert (stats.failures, stats.successes, storage.answered_locally) == (0, 1, 1)
        pool.release(held)
        assert limiter.hit("k", "10/minute").remaining == 8  # Redis again


def killed_limiter(server: RedisServer, clock: ManualClock, query: str = "", **options: Any) -> Limiter:
    limiter = Limiter.from_url(f"{server.url}?fallback=memory{query}", breaker=breaker(clock), **options)
    limiter.hit("warm", "1/second")
    server.kill()
    return limiter


def test_outage_reaction_per_namespace(server: RedisServer, clock: ManualClock) -> None:
    limiter = killed_limiter(server, clock, "&on_outage.login=closed&on_outage.health=open")
    login = limiter.hit("login:alice", "5/minute")
    assert (login.allowed, login.limit, login.remaining, login.retry_after) == (False, 5, 0, 5.0)
    assert all(limiter.hit("health:probe", "1/minute").allowed for _ in range(3))
    assert [limiter.hit("user:1", "2/minute").allowed for _ in range(3)] == [True, True, False]
    # One closed limit denies the whole hit_many, and nothing is counted locally.
    many = limiter.hit_many([("user:2", "2/minute"), ("login:bob", "5/minute"), ("health:x", "1/minute")])
    assert not many.allowed
    assert [d.allowed for d in many.decisions] == [True, False, True]
    assert limiter.peek("user:2", "2/minute").remaining == 2
    limiter.close()


def test_outage_reaction_by_policy(server: RedisServer, clock: ManualClock) -> None:
    policy = OutagePolicy(default="fallback", by_namespace={"bulk": "open", "uploads": "closed"})
    limiter = killed_limiter(server, clock, on_outage=policy)
    assert all(limiter.hit("bulk:k", "1/minute").allowed for _ in range(5))
    assert [limiter.hit("k", "1/minute").allowed for _ in range(2)] == [True, False]
    assert limiter.acquire("uploads", max_in_flight=5, ttl=10) is None
    limiter.close()


def test_outage_reaction_is_an_outage_policy() -> None:
    fallback = FallbackStorage(MemoryStorage(), on_outage="open", on_outage_by_prefix={"auth": "closed"})
    assert fallback.policy == OutagePolicy(default="open", by_namespace={"auth": "closed"})
    with pytest.raises(InvalidArgument, match="must be one of fallback, open, closed, got <function"):
        FallbackStorage(MemoryStorage(), on_outage=lambda key, spec: "open")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="give on_outage as an OutagePolicy or on_outage_by_prefix"):
        FallbackStorage(MemoryStorage(), on_outage=OutagePolicy(), on_outage_by_prefix={"auth": "closed"})


def test_local_limits_are_divided_by_the_number_of_instances(server: RedisServer, clock: ManualClock) -> None:
    limiter = killed_limiter(server, clock, "&instances=4")
    results = [limiter.hit("user:1", "20/minute") for _ in range(6)]
    assert [r.allowed for r in results] == [True] * 5 + [False]
    assert results[0].limit == 5
    # A bucket's rate and burst are both divided.
    bursts = [limiter.hit("b", "8/second", "token_bucket").allowed for _ in range(3)]
    assert bursts == [True, True, False]
    # A cost above the local capacity is capped to it, not refused for ever.
    assert limiter.hit("c", "20/minute", "sliding_log", cost=12).allowed
    assert not limiter.hit("c", "20/minute", "sliding_log", cost=1).allowed
    # Leases too: 8 in flight over 4 instances is 2 here.
    leases = [limiter.acquire("jobs", max_in_flight=8, ttl=10) for _ in range(3)]
    assert [lease is not None for lease in leases] == [True, True, False]
    limiter.close()


def test_every_call_survives_an_outage(server: RedisServer, clock: ManualClock) -> None:
    limiter = killed_limiter(server, clock)
    lease = limiter.acquire("jobs", max_in_flight=1, ttl=10)
    assert lease is not None
    assert limiter.acquire("jobs", max_in_flight=1, ttl=10) is None
    lease.release()
    assert limiter.acquire("jobs", max_in_flight=1, ttl=10) is not None
    limiter.hit("k", "1/minute")
    assert not limiter.peek("k", "1/minute").allowed
    limiter.reset("k", "1/minute")
    assert limiter.peek("k", "1/minute").allowed
    limiter.close()


def test_failures_are_logged_once_per_state_change(
    server: RedisServer, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bisman_ratelimit")
    limiter = killed_limiter(server, clock)
    for _ in range(100):
        limiter.hit("k", "1000/minute")
    clock.advance(5.0)
    for _ in range(100):
        limiter.hit("k", "1000/minute")  # one failed probe, then open again
    records = [(r.levelname, r.getMessage().split(" (")[0]) for r in caplog.records]
    assert records == [
        ("WARNING", "rate-limit storage unavailable"),
        ("INFO", "probing the rate-limit storage again"),
        ("WARNING", "rate-limit storage unavailable"),
    ]
    limiter.close()


def test_blocked_keys_are_answered_without_spending_a_probe(server: RedisServer, clock: ManualClock) -> None:
    guard = breaker(clock, failure_threshold=1)
    with Limiter.from_url(server.url + "?fallback=memory&timeout=0.1", breaker=guard) as limiter:
        limiter.hit("abuser", "1/hour")
        denied = limiter.hit("abuser", "1/hour")
        assert not denied.allowed
        sleeper = send_raw(server, "DEBUG", "SLEEP", "0.3")
        time.sleep(0.02)
        limiter.hit("other", "5/minute")  # fails, opens
        clock.advance(5.0)
        assert guard.state == "half_open"
        assert not limiter.hit("abuser", "1/hour").allowed
        assert guard.state == "half_open"
        assert guard.stats().successes == 2  # the two hits before the outage
        sleeper.recv(16)
        sleeper.close()


def test_fallback_needs_the_right_kind_of_storage(redis_url: str) -> None:

    with pytest.raises(InvalidArgument, match="FallbackStorage needs a synchronous storage"):
        FallbackStorage(storage_from_url(redis_url, asyncio=True))
    with pytest.raises(InvalidArgument, match="AsyncFallbackStorage needs an asynchronous storage"):
        AsyncFallbackStorage(MemoryStorage())
    with pytest.raises(InvalidArgument, match="instances must be a whole number >= 1, got 0"):
        FallbackStorage(MemoryStorage(), instances=0)
    with pytest.raises(InvalidArgument, match="on_outage must be one of fallback, open, closed, got 'deny'"):
        FallbackStorage(MemoryStorage(), on_outage="deny")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="on_outage for namespace 'login' must be one of"):
        FallbackStorage(MemoryStorage(), on_outage_by_prefix={"login": "nope"})  # type: ignore[dict-item]
