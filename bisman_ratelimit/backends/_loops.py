"""An asyncio Redis client per event loop, for the asynchronous Redis backend.

A ``redis.asyncio`` client belongs to the event loop it connects in: its
connections' streams and futures are that loop's. An app may run in
several loops, one after the other (``asyncio.run`` twice, a Starlette
``TestClient`` per test) or at once (a thread with a loop of its own), and
a forked worker starts a loop of its own while holding its parent's
sockets. A connection used from another loop fails with a ``RuntimeError``
("attached to a different loop", "Event loop is closed") that no handler
of storage failures expects.

So a backend built from a URL keeps one :class:`Wire` per running loop:
the first loop takes the client built with the backend, each other loop
gets a new client from the URL on its first call, and a loop's client is
closed when that loop shuts down its async generators (as ``asyncio.run``,
anyio and ``TestClient`` do on exit). A client the app built itself is
used in the loop of its first call; a call from another loop raises
:class:`~bisman_ratelimit.core._errors.StorageUnavailable` saying so, which
the fallback and the web plugins' outage policies handle like any outage.
After a fork, the child starts with no wire: its first call builds its own
client (or, for a client the app built, refuses as from another loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import redis

from bisman_ratelimit.backends._wire import async_lender_for, node_batches_for
from bisman_ratelimit.core import StorageUnavailable

# Another client of the same server, and what to close with it.
Connect = Callable[[], tuple[Any, tuple[Any, ...]]]

OTHER_LOOP = (
    "the redis.asyncio client given to this limiter belongs to another event loop "
    "(or to the process this one was forked from): build the limiter from a URL, "
    "and it keeps one client per event loop"
)


class Wire:
    """How checks reach Redis from one event loop: its client, and what carries the commands."""

    __slots__ = ("call", "client", "closer", "closing", "lender", "loading", "loop")

    def __init__(self, client: Any, closing: tuple[Any, ...], coalesce: bool) -> None:
        self.client = client
        self.closing = closing
        self.lender = async_lender_for(client)
        # On Cluster, checks go out on the nodes' connections even one at a
        # time: that is how an ASK redirect is followed right (NodeBatches).
        sender = self.lender if self.lender is not None else node_batches_for(client)
        self.call: Callable[..., Awaitable[Any]] = (
            client.execute_command if sender is None else sender.call if coalesce else sender.call_one
        )
        # Script loads under way (a Cluster client's), shared by their callers.
        self.loading: dict[str, asyncio.Future[object]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.closer: AsyncGenerator[None, None] | None = None

    async def aclose(self) -> None:
        if self.lender is not None:
            await self.lender.aclose()
        await self.client.aclose()
        for other in self.closing:
            await other.aclose()


class LoopWires:
    """The :class:`Wire` of each running loop; ``connect`` makes clients for the loops after the first."""

    def __init__(
        self, client: Any, closing: tuple[Any, ...], coalesce: bool, connect: Connect | None
    ) -> None:
        self._coalesce = coalesce
        self._connect = connect
        # The client given, until a loop takes it.
        self._unbound: Wire | None = Wire(client, closing, coalesce)
        self._wires: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Wire] = weakref.WeakKeyDictionary()
        # The last loop's: most apps run in one loop, and skip the lookup.
        self.last: Wire | None = None
        self._lock = threading.Lock()
        _all.add(self)

    @property
    def first(self) -> Wire | None:
        """The wire no loop took yet, if any."""
        return self._unbound

    async def here(self) -> Wire:
        """The running loop's wire."""
        loop = asyncio.get_running_loop()
        wire = self.last
        if wire is not None and wire.loop is loop:
            return wire
        return await self._wire_of(loop)

    async def _wire_of(self, loop: asyncio.AbstractEventLoop) -> Wire:
        with self._lock:
            wire = self._wires.get(loop)
            fresh = wire is None
            if wire is None:
                self._forget_closed_loops()
                wire, self._unbound = self._unbound, None
                if wire is None:
                    if self._connect is None:
                        raise StorageUnavailable(OTHER_LOOP)
                    wire = Wire(*self._connect(), self._coalesce)
                wire.loop = loop
                self._wires[loop] = wire
        if fresh and self._connect is not None:
            # An async generator started in the loop is closed by the loop's
            # shutdown_asyncgens(): the one hook asyncio gives into a loop's end.
            wire.closer = self._close_at_shutdown(wire)
            await wire.closer.__anext__()
        self.last = wire
        return wire

    async def _close_at_shutdown(self, wire: Wire) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            self._drop(wire)
            # The loop is ending: a server gone meanwhile leaves nothing to close.
            with contextlib.suppress(redis.RedisError, OSError):
                await wire.aclose()

    def _drop(self, wire: Wire) -> None:
        with self._lock:
            if wire.loop is not None and self._wires.get(wire.loop) is wire:
                del self._wires[wire.loop]
            if self.last is wire:
                self.last = None

    def _forget_closed_loops(self) -> None:
        # A loop closed without shutting down its async generators left its
        # client behind; its sockets go with the garbage collector.
        for loop in [loop for loop in self._wires if loop.is_closed()]:
            del self._wires[loop]
        if self.last is not None and self.last.loop is not None and self.last.loop.is_closed():
            self.last = None

    async def aclose(self) -> None:
        """Close the running loop's client, and the one no loop took yet."""
        loop = asyncio.get_running_loop()
        with self._lock:
            wire = self._wires.get(loop)
            unbound, self._unbound = self._unbound, None
        if wire is not None:
            if wire.closer is not None:
                await wire.closer.aclose()
            else:
                self._drop(wire)
                await wire.aclose()
        if unbound is not None:
            await unbound.aclose()

    def _after_fork(self) -> None:
        # The parent's clients are not the child's to use, nor to close.
        self._wires = weakref.WeakKeyDictionary()
        self.last = None
        self._unbound = None
        self._lock = threading.Lock()


_all: weakref.WeakSet[LoopWires] = weakref.WeakSet()


def _forget_after_fork() -> None:
    for wires in list(_all):
        wires._after_fork()


os.register_at_fork(after_in_child=_forget_after_fork)
