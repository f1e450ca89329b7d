"""Script calls on connections borrowed from the client's pool.

A check is one EVALSHA, and on loopback its round trip is a few tens of
microseconds. redis-py's ``execute_command`` adds about a fifth to that:
a retry wrapper, observability hooks, and a pool checkout that takes a
lock and polls the socket before every command. The backends retry within
their own time budget, so they need none of it; a :class:`Lender` keeps a
few connections of the client's pool on a stack of its own and runs each
command on one of them with redis-py's connection (its packer, parser,
socket timeouts, TLS and Sentinel handling).

There is one lender per pool, however many storages share the client. The
borrowed connections stay in the pool's books as in use: a bounded pool
still bounds them, and ``pool.disconnect()`` still closes them. A lender
holds at most ``keep`` of them while idle (a quarter of a bounded pool's
size, at most 16; none for a pool of fewer than four) and hands back the
rest. After a connection error it closes its idle ones too (a restarted
server leaves every one of them stale), and after a fork the child starts
with none. Asynchronous commands are written without ``asyncio.wait_for``
(see :func:`_send`).

Clients whose commands go through something other than a plain RESP2 pool
(one shared connection, RESP3 with its push messages, Cluster, a subclass
or wrapper with an ``execute_command`` of its own, such as
:class:`~bisman_ratelimit.metrics._instrument.InstrumentedRedis`, or an
``execute_command`` that tracing wrapped in place) are served by
``execute_command``. redis-py's own command metrics do not see the checks.

This module is the one place that reads redis-py's private fields: a
connection's socket (``_sock``) and an asyncio connection's stream writer
(``_writer``). Before the first lender is made, :func:`internals_hold`
checks on a fresh connection that the field is there; when a redis-py
release has changed it, no lender is made and every command goes through
``execute_command``, slower by that fifth but just as correct (one debug
line on the ``bisman_ratelimit.wire`` logger says so).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import weakref
from typing import Any

import redis
import redis.asyncio

try:
    from hiredis import pack_command
except ImportError:  # pragma: no cover - hiredis is in the test extra
    pack_command = None  # type: ignore[assignment]


_log = logging.getLogger("bisman_ratelimit.wire")

_KEEP = 16

# The private field of a client's connections that a lender reads, by
# client class: ``None`` until the connection connects.
PRIVATE_FIELDS: dict[Any, str] = {redis.Redis: "_sock", redis.asyncio.Redis: "_writer"}
# Where that field is set, by client class: the pools served must make
# connections of these classes.
_CONNECTIONS: dict[Any, tuple[type[Any], type[Any]]] = {
    redis.Redis: (redis.connection.AbstractConnection, redis.Connection),
    redis.asyncio.Redis: (redis.asyncio.connection.AbstractConnection, redis.asyncio.Connection),
}
# Whether the field is there on the installed redis-py, by client class:
# found once, before the first lender of that kind.
fields_hold: dict[Any, bool] = {}
_MISSING = object()


def internals_hold(plain: Any) -> bool:
    """Whether connections of ``plain`` (``redis.Redis`` or ``redis.asyncio.Redis``)
    have the private field a lender reads: checked once, on a connection that never connects."""
    found = fields_hold.get(plain)
    if found is None:
        field = PRIVATE_FIELDS[plain]
        try:
            found = getattr(_CONNECTIONS[plain][1](), field, _MISSING) is None
        except Exception:  # a constructor of another shape
            found = False
        fields_hold[plain] = found
        if not found:
            _log.debug(
                "redis-py %s connections have no %s as expected: commands go through execute_command",
                redis.__version__,
                field,
            )
    return found


# execute_command as redis-py defines it, before anything wraps it later.
_ORIGINAL = {cls: cls.execute_command for cls in (redis.Redis, redis.asyncio.Redis)}


def _pool_of(client: Any, plain: Any) -> Any:
    """``client``'s pool if its commands can run on connections taken from it, else ``None``."""
    command = type(client).execute_command
    # A subclass's own, or one wrapped in place by instrumentation (which
    # keeps the original as __wrapped__): those want to see every command.
    if command is not _ORIGINAL.get(plain, command) or hasattr(command, "__wrapped__"):
        return None
    # A synchronous single-connection client holds its connection from the start;
    # an asyncio one opens it with its first command.
    if getattr(client, "single_connection_client", False) or getattr(client, "connection", None) is not None:
        return None
    pool = client.connection_pool
    # RESP3 brings push messages (client-side caching, maintenance
    # notifications) that the pool acts upon when connections come back.
    protocol = str(getattr(pool, "connection_kwargs", {}).get("protocol") or 2)
    return pool if protocol == "2" and getattr(pool, "cache", None) is None else None


class _LenderBase:
    def __init__(self, pool: Any) -> None:
        self._pool = weakref.ref(pool)  # the registry's key: a strong reference would keep it alive
        bound = getattr(pool, "max_connections", None) or 4 * _KEEP
        self.keep = min(_KEEP, bound // 4)
        self.idle: list[Any] = []
        # redis-py before 5.3 wants a command name when asked for a
        # connection; later versions warn when given one.
        wanted = inspect.signature(pool.get_connection).parameters.get("command_name")
        self.named = wanted is not None and wanted.default is inspect.Parameter.empty
        # hiredis packs a command in C; redis-py would first walk the
        # arguments in Python. The same bytes, as long as strings are UTF-8.
        encoding = getattr(pool, "connection_kwargs", {}).get("encoding", "utf-8")
        self.pack = pack_command if encoding.replace("-", "").lower() == "utf8" else None

    @property
    def pool(self) -> Any:
        pool = self._pool()
        if pool is None:  # pragma: no cover - the storage holding the lender holds the pool
            raise RuntimeError("the connection pool is gone")
        return pool

    def _shelve(self, conn: Any) -> bool:
        """Keep ``conn`` for the next command if there is room; else it goes back to the pool."""
        idle = self.idle
        if len(idle) < self.keep:
            idle.append(conn)
            return True
        return False

    def _take_idle(self) -> list[Any]:
        taken = []
        idle = self.idle
        while True:
            try:
                taken.append(idle.pop())
            except IndexError:
                return taken


_lenders: weakref.WeakKeyDictionary[Any, _LenderBase] = weakref.WeakKeyDictionary()


def _lender(client: Any, plain: Any, kind: type[_LenderBase]) -> Any:
    if not isinstance(client, plain):
        return None
    pool = _pool_of(client, plain)
    if pool is None or not internals_hold(plain):
        return None
    # A connection class of its own may keep its socket elsewhere.
    if not issubclass(getattr(pool, "connection_class", object), _CONNECTIONS[plain][0]):
        return None
    lender = _lenders.get(pool)
    if lender is None:
        lender = _lenders[pool] = kind(pool)
    return lender


def lender_for(client: Any) -> Lender | None:
    """The lender of a ``redis.Redis`` client's pool, or ``None`` if it cannot have one."""
    lender: Lender | None = _lender(client, redis.Redis, Lender)
    return lender


def async_lender_for(client: Any) -> AsyncLender | None:
    """The lender of a ``redis.asyncio.Redis`` client's pool, or ``None``."""
    lender: AsyncLender | None = _lender(client, redis.asyncio.Redis, AsyncLender)
    return lender


def _forget_after_fork() -> None:
    # The parent's sockets are not the child's to use, nor to close.
    for lender in list(_lenders.values()):
        lender.idle.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


class Lender(_LenderBase):
    """Commands on connections borrowed from a ``redis.Redis`` pool."""

    def _borrow(self) -> Any:
        return self.pool.get_connection("EVALSHA") if self.named else self.pool.get_connection()

    def call(self, *args: Any) -> Any:
        idle = self.idle
        try:
            conn = idle.pop()
        except IndexError:
            conn = self._borrow()
        try:
            if conn._sock is None:
                # Reconnecting inside send_command would skip a Sentinel
                # connection's lookup of the current primary.
                conn.connect()
            if self.pack is None:
                conn.send_command(*args)
            else:
                conn.send_packed_command([self.pack(args)])
            return conn.read_response()
        except (redis.ConnectionError, OSError):
            self.drop_idle()
            raise
        finally:
            if not self._shelve(conn):
                self.pool.release(conn)

    def drop_idle(self) -> None:
        """Close the idle connections; each connects again when next used."""
        # Off the stack while closing, so no other thread picks one up meanwhile.
        for conn in self._take_idle():
            conn.disconnect()
            if not self._shelve(conn):
                self.pool.release(conn)

    def close(self) -> None:
        """Hand the idle connections back to the pool."""
        pool, idle = self.pool, self.idle
        while idle:
            pool.release(idle.pop())


class AsyncLender(_LenderBase):
    """Commands on connections borrowed from a ``redis.asyncio.Redis`` pool."""

    async def _borrow(self) -> Any:
        if self.named:
            return await self.pool.get_connection("EVALSHA")
        return await self.pool.get_connection()

    async def call(self, *args: Any) -> Any:
        idle = self.idle
        try:
            conn = idle.pop()
        except IndexError:
            conn = await self._borrow()
        try:
            if not conn.is_connected:
                await conn.connect()  # as above
            packed = conn.pack_command(*args) if self.pack is None else [self.pack(args)]
            await _send(conn, packed)
            return await conn.read_response()
        except (redis.ConnectionError, OSError):
            await self.drop_idle()
            raise
        finally:
            if not self._shelve(conn):
                await self.pool.release(conn)

    async def drop_idle(self) -> None:
        for conn in self._take_idle():
            await conn.disconnect()
            if not self._shelve(conn):
                await self.pool.release(conn)

    async def aclose(self) -> None:
        pool, idle = self.pool, self.idle
        while idle:
            await pool.release(idle.pop())


async def _send(conn: Any, packed: list[bytes]) -> None:
    """Write a command to an asyncio connection.

    redis-py sends under ``asyncio.wait_for`` whenever the connection has a
    socket timeout (5 s by default), which makes every command a task and a
    turn of the event loop. A command of a few hundred bytes goes straight
    into the socket's buffer, so only when it does not (the transport holds
    some back) is the wait for room bounded by the timeout.
    """
    writer = getattr(conn, "_writer", None)
    if writer is None:  # a connection class of another shape
        await conn.send_packed_command(packed)
        return
    if conn.health_check_interval:
        await conn.check_health()
    try:
        writer.writelines(packed)
        if writer.transport.get_write_buffer_size():
            await asyncio.wait_for(writer.drain(), conn.socket_timeout)
    except BaseException as exc:
        # Abort, not close: closing would go on sending what the transport
        # holds, and the server could run a command reported as failed.
        writer.transport.abort()
        await conn.disconnect(nowait=True)
        if isinstance(exc, asyncio.TimeoutError):
            raise redis.TimeoutError("Timeout writing to socket") from None
        if isinstance(exc, OSError):
            raise redis.ConnectionError(f"Error while writing to socket: {exc}") from exc
        raise  # cancelled mid-write
