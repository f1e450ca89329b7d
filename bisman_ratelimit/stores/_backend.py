"""How a store talks to its backend: one call, one round trip.

A store's core is I/O-free. Each operation is a generator that yields
:class:`Call` objects and returns the decoded result;
:func:`bisman_ratelimit.core.drive` and :func:`~bisman_ratelimit.core.adrive`
run it against a backend's ``run``, so the sync and async stores are
thin shells over the same code (the pattern of httpx's auth flows).

A :class:`Call` names an :class:`Op`: a Lua script shipped in
``stores/lua/`` for Redis, and the same operation written in Python for
:class:`MemoryBackend`. On Redis a call is one ``EVALSHA`` (loaded again
on NOSCRIPT), with the time taken from the server's ``TIME``; in memory it
runs under a lock, with the time from an injectable clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncGenerator, Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

from bisman_ratelimit.backends import (
    REDIS_SCHEMES,
    BoundedMap,
    RedisConnection,
    Script,
    async_command,
    is_async_client,
    is_sync_client,
    masked_url,
    memory_options,
    redis_from_url,
    sync_command,
    translate_errors,
)
from bisman_ratelimit.backends._wire import AsyncLender, async_lender_for
from bisman_ratelimit.core import InvalidArgument, StorageUnavailable, adrive, drive

T = TypeVar("T")
S = TypeVar("S", bound="StoreShell")
A = TypeVar("A", bound="AsyncStoreShell")
Clock = Callable[[], float]
SyncClient = redis.Redis | redis.cluster.RedisCluster
AsyncClient = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster
MemoryImpl = Callable[["MemoryBackend", int, Sequence[str], Sequence[Any]], Any]


def store_script(name: str) -> Script:
    """A script from ``stores/lua/``, after the engine's shared head.

    The head reads the time from ``ARGV[1]``, which the Redis runner always
    sends empty: the server's clock is used.
    """
    return Script(name, package=__package__)


@dataclass(frozen=True)
class Op:
    """One backend operation: a Lua script and its in-memory twin."""

    script: Script
    memory: MemoryImpl


@dataclass(frozen=True)
class Call:
    """An operation with its keys and arguments, ready to run."""

    op: Op
    keys: tuple[str, ...]
    args: tuple[Any, ...] = ()


Flow = Generator[Call, Any, T]


class RedisRunner:
    """Runs calls on a ``redis.Redis`` or ``RedisCluster`` client.

    ``closing`` are clients closed with it (the sentinels', for a client
    built from a ``redis+sentinel://`` URL). ``connection`` is where a
    client built from a URL came from: only its pool is warmed.
    """

    def __init__(
        self,
        client: SyncClient,
        *,
        closing: tuple[Any, ...] = (),
        connection: RedisConnection | None = None,
    ) -> None:
        self.client = client
        self._command = sync_command(client)
        self._closing = closing
        self._connection = connection

    def run(self, call: Call) -> Any:
        with translate_errors():
            return call.op.script.run(self._command, self.client.script_load, call.keys, ("", *call.args))

    def warm(self, connections: int | None) -> None:
        if self._connection is not None:
            with translate_errors():
                self._connection.warm(connections)

    def close(self) -> None:
        self.client.close()
        for other in self._closing:
            other.close()


_OTHER_LOOP = (
    "the redis.asyncio client given to this store belongs to another event loop ({}): "
    "give the store a URL instead, and it keeps one client per event loop"
)


class AsyncRedisRunner:
    """Runs calls on a ``redis.asyncio.Redis`` or ``RedisCluster`` client the caller built.

    Such a client belongs to the event loop it first connected in. Used
    from another loop, a call raises ``StorageUnavailable`` saying so
    (redis-py's own error, a ``RuntimeError``, would escape every handler
    of storage failures).
    """

    def __init__(self, client: AsyncClient, *, closing: tuple[Any, ...] = ()) -> None:
        self.client = client
        self._command = async_command(client)
        self._closing = closing

    async def run(self, call: Call) -> Any:
        try:
            with translate_errors():
                return await call.op.script.arun(
                    self._command, self.client.script_load, call.keys, ("", *call.args)
                )
        except RuntimeError as exc:
            if "loop" not in str(exc):
                raise
            raise StorageUnavailable(_OTHER_LOOP.format(exc)) from exc

    async def aclose(self) -> None:
        await self.client.aclose()
        for other in self._closing:
            await other.aclose()


@dataclass
class _LoopClient:
    """The client of one event loop, and the generator that closes it when that loop shuts down.

    As a rate limit's storage does, calls on a plain client go through the
    lender of its pool (see :mod:`bisman_ratelimit.backends._wire`): those
    that come in one turn of the loop are written together on one
    connection, so a burst of requests needs a few connections, not one
    each, and a reply is awaited for the budget of Redis's time, not of
    the time the loop spent on other requests.
    """

    connection: RedisConnection
    closer: AsyncGenerator[None, None] | None = None
    lender: AsyncLender | None = field(init=False)

    def __post_init__(self) -> None:
        self.lender = async_lender_for(self.connection.client)

    @property
    def command(self) -> Callable[..., Any]:
        return async_command(self.connection.client) if self.lender is None else self.lender.call

    async def aclose(self) -> None:
        if self.lender is not None:
            await self.lender.aclose()
        await self.connection.client.aclose()
        for other in self.connection.closing:
            await other.aclose()


class AsyncUrlRunner:
    """Runs calls on one ``redis.asyncio`` client per event loop, each built from the URL.

    An asyncio client belongs to the loop it connects in, and an app may
    run in several loops, one after the other or at once (a test client
    per test, a thread with its own loop). Each loop's client is closed
    when that loop shuts down its async generators (as ``asyncio.run``,
    anyio and Starlette's ``TestClient`` do), or by :meth:`aclose` called
    in that loop.
    """

    def __init__(self, url: str, store: type[ShellBase] | None) -> None:
        self._url = url
        self._store = store
        # Built now so that a bad URL is refused at once; the first loop to run a call takes it.
        self._spare: RedisConnection | None = _connect(url, asyncio=True, store=store)
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClient] = (
            weakref.WeakKeyDictionary()
        )
        # The last loop, its client and the client's command runner: most
        # apps run in one loop, and skip the lookup.
        self._last: tuple[asyncio.AbstractEventLoop, AsyncClient, Callable[..., Any]] | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> AsyncClient:
        """The client of the running loop (outside a loop, the one the next loop will take)."""
        try:
            entry = self._clients.get(asyncio.get_running_loop())
        except RuntimeError:
            entry = None
        if entry is not None:
            return cast(AsyncClient, entry.connection.client)
        with self._lock:
            if self._spare is None:
                self._spare = _connect(self._url, asyncio=True, store=self._store)
            return cast(AsyncClient, self._spare.client)

    async def run(self, call: Call) -> Any:
        loop = asyncio.get_running_loop()
        last = self._last
        if last is None or last[0] is not loop:
            last = await self._client_of(loop)
        _, client, command = last
        with translate_errors():
            return await call.op.script.arun(command, client.script_load, call.keys, ("", *call.args))

    async def warm(self, connections: int | None) -> None:
        """Open connections of the running loop's client now (see :meth:`RedisConnection.warm`)."""
        loop = asyncio.get_running_loop()
        await self._client_of(loop)
        entry = self._clients.get(loop)
        if entry is not None:
            with translate_errors():
                await entry.connection.awarm(connections)

    async def _client_of(
        self, loop: asyncio.AbstractEventLoop
    ) -> tuple[asyncio.AbstractEventLoop, AsyncClient, Callable[..., Any]]:
        with self._lock:
            entry = self._clients.get(loop)
            fresh = entry is None
            if entry is None:
                self._forget_closed_loops()
                connection = self._spare or _connect(self._url, asyncio=True, store=self._store)
                self._spare = None
                entry = self._clients[loop] = _LoopClient(connection)
        if fresh:
            # An async generator started in the loop is closed by the loop's
            # shutdown_asyncgens(): the one hook asyncio gives into a loop's end.
            entry.closer = self._close_at_shutdown(loop, entry)
            await entry.closer.__anext__()
        client = cast(AsyncClient, entry.connection.client)
        last = (loop, client, entry.command)
        self._last = last
        return last

    async def _close_at_shutdown(
        self, loop: asyncio.AbstractEventLoop, entry: _LoopClient
    ) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            with self._lock:
                if self._clients.get(loop) is entry:
                    del self._clients[loop]
                if self._last is not None and self._last[0] is loop:
                    self._last = None
            # The loop is ending: a server gone meanwhile leaves nothing to close.
            with contextlib.suppress(redis.RedisError, OSError):
                await entry.aclose()

    def _forget_closed_loops(self) -> None:
        # A loop closed without shutting down its async generators left its
        # client behind; its sockets go with the garbage collector.
        for loop in [loop for loop in self._clients if loop.is_closed()]:
            del self._clients[loop]

    async def aclose(self) -> None:
        """Close the running loop's client (and the one no loop took yet)."""
        loop = asyncio.get_running_loop()
        entry = self._clients.get(loop)
        if entry is not None and entry.closer is not None:
            await entry.closer.aclose()
        with self._lock:
            spare, self._spare = self._spare, None
            self._forget_closed_loops()
        if spare is not None:
            await _LoopClient(spare).aclose()


class MemorySubscription:
    """Messages published on one channel of a :class:`MemoryBackend`."""

    def __init__(self, backend: MemoryBackend, channel: str) -> None:
        self._backend = backend
        self.channel = channel
        self._queue: deque[str] = deque()

    def deliver(self, message: str) -> None:
        self._queue.append(message)

    def poll(self) -> list[str]:
        """Every message received since the last poll."""
        out = list(self._queue)
        self._queue.clear()
        return out

    def close(self) -> None:
        self._backend.unsubscribe(self)


class MemoryBackend:
    """Store data in this process, with Redis semantics and lazy expiry.

    ``clock`` returns seconds (default ``time.time``). It starts no thread
    and holds at most ``max_keys`` keys (and, if set, about ``max_bytes``:
    key lengths plus a fixed overhead per key), in the
    :class:`~bisman_ratelimit.backends.BoundedMap` that the memory storage
    of limits uses too: an entry expires when next touched, each new key
    drops a few expired ones, and at the cap the least recently used go
    first.
    """

    def __init__(
        self, *, clock: Clock = time.time, max_keys: int = 100_000, max_bytes: int | None = None
    ) -> None:
        self.clock = clock
        # key -> [expires_at_ms or None, value]; value is a dict (hash), a
        # list (head first), a dict of scores (sorted set) or a str.
        self._map: BoundedMap[str] = BoundedMap(max_keys=max_keys, max_bytes=max_bytes)
        self._lock = threading.Lock()
        self._subscriptions: dict[str, list[MemorySubscription]] = {}

    @property
    def max_keys(self) -> int:
        return self._map.max_keys

    @property
    def max_bytes(self) -> int | None:
        return self._map.max_bytes

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def run(self, call: Call) -> Any:
        with self._lock:
            return call.op.memory(self, self.now_ms(), call.keys, call.args)

    def close(self) -> None:
        """Nothing to release; here so every backend closes alike."""

    # Key space primitives, used by the stores' in-memory operations.

    def get(self, key: str, now: int) -> Any:
        entry = self._map.entry(key, now)
        return None if entry is None else entry[1]

    def put(self, key: str, value: Any, now: int) -> None:
        """Write ``key``, keeping its TTL if it exists (as Redis does for HSET, LPUSH...)."""
        entry = self._map.entry(key, now)
        if entry is None:
            self._map.add(key, [None, value], now)
        else:
            entry[1] = value

    def expire(self, key: str, ttl_ms: int, now: int) -> None:
        entry = self._map.entry(key, now)
        if entry is not None:
            entry[0] = now + ttl_ms

    def pttl(self, key: str, now: int) -> int:
        """Milliseconds left, ``-1`` for a key without TTL, ``-2`` for a missing key."""
        entry = self._map.entry(key, now)
        if entry is None:
            return -2
        return -1 if entry[0] is None else int(entry[0] - now)

    def delete(self, key: str, now: int) -> bool:
        found = self._map.entry(key, now) is not None
        self._map.pop(key)
        return found

    def drop_if_empty(self, key: str, now: int) -> None:
        """Redis removes a hash, list or set when its last element goes."""
        entry = self._map.entry(key, now)
        if entry is not None and not entry[1]:
            self._map.pop(key)

    def rename(self, old: str, new: str) -> None:
        self._map.rename(old, new)

    def live_keys(self) -> list[str]:
        """Every live key, for inspection and tests."""
        with self._lock:
            now = self.now_ms()
            return [key for key in self._map if self._map.entry(key, now) is not None]

    def ttl(self, key: str) -> int:
        """:meth:`pttl` at the clock's current time."""
        with self._lock:
            return self.pttl(key, self.now_ms())

    # Publish and subscribe, within this process.

    def publish(self, channel: str, message: str) -> int:
        subscribers = self._subscriptions.get(channel, [])
        for subscription in subscribers:
            subscription.deliver(message)
        return len(subscribers)

    def subscribe(self, channel: str) -> MemorySubscription:
        subscription = MemorySubscription(self, channel)
        with self._lock:
            self._subscriptions.setdefault(channel, []).append(subscription)
        return subscription

    def unsubscribe(self, subscription: MemorySubscription) -> None:
        with self._lock:
            subscribers = self._subscriptions.get(subscription.channel, [])
            if subscription in subscribers:
                subscribers.remove(subscription)


class AsyncMemoryRunner:
    """A :class:`MemoryBackend` behind the async interface; it never blocks on I/O."""

    def __init__(self, backend: MemoryBackend) -> None:
        self.backend = backend

    async def run(self, call: Call) -> Any:
        return self.backend.run(call)

    async def aclose(self) -> None:
        self.backend.close()


SyncRunner = RedisRunner | MemoryBackend
AsyncRunner = AsyncRedisRunner | AsyncUrlRunner | AsyncMemoryRunner


def _describe(backend: object) -> str:
    return f"{type(backend).__module__}.{type(backend).__qualname__}"


def sync_runner(backend: object, store: type[ShellBase] | None = None) -> SyncRunner:
    """A runner for ``backend``: a URL, a ``redis.Redis`` client or a :class:`MemoryBackend`."""
    if isinstance(backend, str):
        if _scheme(backend) != "memory":
            connection = _connect(backend, asyncio=False, store=store)
            return RedisRunner(connection.client, closing=connection.closing, connection=connection)
        backend = _memory(backend)
    if isinstance(backend, MemoryBackend):
        return backend
    if is_async_client(backend):
        raise InvalidArgument(
            "this store is synchronous: give it a redis.Redis client, or use the Async store"
        )
    if is_sync_client(backend):
        return RedisRunner(cast(SyncClient, backend))
    raise InvalidArgument(
        f"a store needs a URL, a redis.Redis client or a MemoryBackend, got {_describe(backend)}"
    )


def async_runner(backend: object, store: type[ShellBase] | None = None) -> AsyncRunner:
    """A runner for ``backend``: a URL, a ``redis.asyncio.Redis`` client or a :class:`MemoryBackend`."""
    if isinstance(backend, str):
        if _scheme(backend) != "memory":
            return AsyncUrlRunner(backend, store)
        backend = _memory(backend)
    if isinstance(backend, MemoryBackend):
        return AsyncMemoryRunner(backend)
    if is_async_client(backend):
        return AsyncRedisRunner(cast(AsyncClient, backend))
    if is_sync_client(backend):
        raise InvalidArgument("this store is asynchronous: give it a redis.asyncio.Redis client")
    raise InvalidArgument(
        f"an async store needs a URL, a redis.asyncio.Redis client or a MemoryBackend, "
        f"got {_describe(backend)}"
    )


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def _memory(url: str) -> MemoryBackend:
    return MemoryBackend(**memory_options(url, what="store"))


def _connect(url: str, *, asyncio: bool, store: type[ShellBase] | None) -> RedisConnection:
    """The client of a Redis URL, built as the rate limits build theirs (budget, Sentinel, TLS)."""
    if _scheme(url) not in REDIS_SCHEMES:
        raise InvalidArgument(
            f"bad store URL {masked_url(url)!r}: "
            f"expected memory:// or {', '.join(s + '://' for s in REDIS_SCHEMES)}"
        )
    return redis_from_url(url, asyncio=asyncio, store="a store" if store is None else store.__name__)


def backend_from_url(
    url: str, *, use_async: bool, store: type[ShellBase] | None = None
) -> MemoryBackend | SyncClient | AsyncClient:
    """A :class:`MemoryBackend` for ``memory://``, else the Redis client the URL names.

    Redis URLs are read as the rate limits read them (``redis://``,
    ``rediss://``, ``unix://``, ``redis+sentinel://``, ``redis+cluster://``,
    with ``?timeout=`` the time budget of one call, 50 ms by default).
    ``store``, the class the client is for, names it in errors. A store
    given a URL itself also
    closes the sentinels' clients; here they are left to the garbage
    collector.
    """
    if _scheme(url) == "memory":
        return _memory(url)
    client: SyncClient | AsyncClient = _connect(url, asyncio=use_async, store=store).client
    return client


class ShellBase:
    """What every store shell, sync or async, starts with.

    A store's shared constructor derives from it too, so that it can pass
    ``backend`` on to whichever of :class:`StoreShell` or
    :class:`AsyncStoreShell` comes next in the class's bases.
    """

    def __init__(self, backend: object) -> None:
        self._owns_client = isinstance(backend, str)


class StoreShell(ShellBase):
    """Base of the synchronous stores: holds the runner, closes what it opened."""

    def __init__(self, backend: object) -> None:
        self._runner = sync_runner(backend, type(self))
        super().__init__(backend)

    @property
    def backend(self) -> MemoryBackend | SyncClient:
        """The memory backend or Redis client in use."""
        runner = self._runner
        return runner if isinstance(runner, MemoryBackend) else runner.client

    def _run(self, flow: Flow[T]) -> T:
        return drive(flow, self._runner.run)

    def run(self, flow: Flow[T]) -> T:
        """Run an operation built by the store's ``core`` (for integrations composing them)."""
        return drive(flow, self._runner.run)

    def warm(self, connections: int | None = None) -> None:
        """Open ``connections`` to Redis now (default: the pool's size, at most 64), if built from a URL.

        Each gets up to 1 s to connect, as a rate limiter's ``warm()`` gives
        its own: a crowd of first calls then opens none under the budget's
        connect timeout. Raises ``StorageUnavailable`` if Redis cannot be
        reached.
        """
        if isinstance(self._runner, RedisRunner):
            self._runner.warm(connections)

    def close(self) -> None:
        """Close the Redis client if this store built it from a URL."""
        if self._owns_client:
            self._runner.close()

    def __enter__(self: S) -> S:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncStoreShell(ShellBase):
    """Base of the asynchronous stores."""

    def __init__(self, backend: object) -> None:
        self._runner = async_runner(backend, type(self))
        super().__init__(backend)

    @property
    def backend(self) -> MemoryBackend | AsyncClient:
        """The memory backend or Redis client in use."""
        runner = self._runner
        return runner.backend if isinstance(runner, AsyncMemoryRunner) else runner.client

    async def _run(self, flow: Flow[T]) -> T:
        return await adrive(flow, self._runner.run)

    async def run(self, flow: Flow[T]) -> T:
        """Run an operation built by the store's ``core`` (for integrations composing them)."""
        return await adrive(flow, self._runner.run)

    async def warm(self, connections: int | None = None) -> None:
        """Open ``connections`` of the running loop's client now, as :meth:`StoreShell.warm` does."""
        if isinstance(self._runner, AsyncUrlRunner):
            await self._runner.warm(connections)

    async def aclose(self) -> None:
        """Close the Redis client if this store built it from a URL (that of the running loop)."""
        if self._owns_client:
            await self._runner.aclose()

    async def __aenter__(self: A) -> A:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
