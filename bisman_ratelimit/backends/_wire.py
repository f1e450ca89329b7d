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

Waiting for a connection is not a fault of the server. When every
connection of a bounded pool is in use, a command waits in line for one,
as long as the pool's ``timeout`` allows; an asyncio lender lets at most
``16 x max_connections`` commands wait, and turns away the rest at once.
Either way the command raises
:class:`~bisman_ratelimit.core._errors.StorageBusy`, which no circuit
breaker counts.

An asyncio reply is given up on only once the server has had the
connection's socket timeout of the event loop's attention (see
:class:`_Deadline`): a reply that arrived while the loop was held up by
the app is read, not thrown away as a timeout.

An asyncio Cluster client's checks are coalesced per node
(:class:`NodeBatches`), on the connections of the client's own nodes.

Clients whose commands go through something other than a plain RESP2 pool
(one shared connection, RESP3 with its push messages, a synchronous
Cluster client, a subclass
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
import contextlib
import inspect
import logging
import math
import os
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis.exceptions import AskError, ClusterDownError, MovedError, RedisClusterException, TryAgainError

from bisman_ratelimit.core import StorageBusy

try:
    from hiredis import pack_command
except ImportError:  # pragma: no cover - hiredis is in the test extra
    pack_command = None  # type: ignore[assignment]


_log = logging.getLogger("bisman_ratelimit.wire")

_KEEP = 16
# Commands written together at most; more that come in one turn of the
# loop go out in several batches, on as many connections.
MAX_BATCH = 128
# Commands that may wait in line for a connection, per connection of a bounded pool.
_WAITING_PER_CONNECTION = 16
# What a bounded pool says when no connection came free in time.
_EXHAUSTED = "No connection available"
# Seconds a connection opened in advance may take: a start-up is a busy
# time, and no request waits for it.
_WARM_TIMEOUT = 1.0
_TIMEOUTS = ("socket_connect_timeout", "socket_timeout")


@contextlib.contextmanager
def _patient(pool: Any) -> Iterator[Callable[[Any], None]]:
    """Connections that the pool opens meanwhile get ``_WARM_TIMEOUT`` to connect;
    give each to the function yielded to set its own timeouts back."""
    kwargs = getattr(pool, "connection_kwargs", {})
    saved = {name: kwargs[name] for name in _TIMEOUTS if name in kwargs}
    for name, value in saved.items():
        if value is not None and value < _WARM_TIMEOUT:
            kwargs[name] = _WARM_TIMEOUT

    def restore(conn: Any) -> None:
        for name, value in saved.items():
            for field in (name, f"orig_{name}"):  # redis-py 7+ keeps a copy of each
                if hasattr(conn, field):
                    setattr(conn, field, value)
        # A connected socket keeps the timeout it was made with.
        sock = getattr(conn, "_sock", None)
        if sock is not None and "socket_timeout" in saved:
            sock.settimeout(saved["socket_timeout"])

    try:
        yield restore
    finally:
        kwargs.update(saved)


# Seconds a timer may fire late before the event loop counts as held up.
_LATE = 0.001
# What reads ask of redis-py's own timeout: none (an endless one before
# redis-py 8). It counts the time the loop spends elsewhere, and drops a
# reply that came in meanwhile; a _Deadline bounds the read instead.
_NO_TIMEOUT = math.inf
# How long NodeBatches.call_patiently waits out TRYAGAIN (redis-py's client:
# 16 tries, the last eight 50 ms apart).
_TRY_AGAIN_FOR = 1.0
_NOT_LOCAL = "Script attempted to access a non local key"


def _busy(pool: Any, exc: BaseException) -> StorageBusy:
    return StorageBusy(
        f"no Redis connection came free within {pool.timeout:g} s "
        f"(all {pool.max_connections} of the pool in use): {exc}"
    )


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
        # Only a pool that makes callers wait has a line to bound.
        self.bounded = hasattr(pool, "timeout") and hasattr(pool, "max_connections")
        self.max_waiting = bound * _WAITING_PER_CONNECTION
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
        if isinstance(lender, AsyncLender):
            lender.line.clear()
            lender.lent = 0
            lender.pending.clear()
            lender.busy = 0
    for batches in list(_node_batches.values()):
        batches.pending.clear()
        batches.busy = 0


os.register_at_fork(after_in_child=_forget_after_fork)


class Lender(_LenderBase):
    """Commands on connections borrowed from a ``redis.Redis`` pool."""

    def _borrow(self) -> Any:
        pool = self.pool
        try:
            return pool.get_connection("EVALSHA") if self.named else pool.get_connection()
        except redis.ConnectionError as exc:
            if self.bounded and _EXHAUSTED in str(exc):
                raise _busy(pool, exc) from exc
            raise

    def warm(self, count: int) -> None:
        """Open ``count`` connections of the pool now; they wait, idle, for the first commands."""
        taken: list[Any] = []
        with _patient(self.pool) as restore:
            try:
                while len(taken) < count:
                    conn = self._borrow()
                    taken.append(conn)
                    if conn._sock is None:
                        conn.connect()
            finally:
                for conn in taken:
                    restore(conn)
                    if not self._shelve(conn):
                        self.pool.release(conn)

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

    def call_batch(
        self,
        commands: list[tuple[Any, ...]],
        deliver: Callable[[int, Any], None],
        timeout: float | None = None,
    ) -> str:
        """Write ``commands`` at once on one connection; hand each reply in turn to ``deliver(index, reply)``.

        An error reply, or a command that cannot be packed (which is not
        sent), is handed over as its exception. A connection error or a
        timeout is raised, once the replies read so far are handed over;
        redis-py has then closed the connection, so no reply is left for
        the next command to read. ``timeout`` stands for the socket timeout
        in this call, when shorter. Returns where the connection
        leads (``host:port`` or a socket path).
        """
        idle = self.idle
        try:
            conn = idle.pop()
        except IndexError:
            conn = self._borrow()
        usual = conn.socket_timeout
        shorter = timeout is not None and (usual is None or timeout < usual)
        try:
            if shorter:
                # A connection made now, and its handshake, wait no longer either.
                conn.socket_timeout = timeout
                if conn._sock is not None:
                    conn._sock.settimeout(timeout)
            if conn._sock is None:
                conn.connect()  # as in call
            pack = self.pack
            chunks: list[Any] = []
            sent = []
            for index, args in enumerate(commands):
                try:
                    if pack is None:
                        chunks += conn.pack_command(*args)
                    else:
                        chunks.append(pack(args))
                except Exception as exc:  # its caller's alone
                    deliver(index, exc)
                    continue
                sent.append(index)
            if sent:
                conn.send_packed_command([b"".join(chunks)])
                for index in sent:
                    try:
                        reply = conn.read_response()
                    except redis.ResponseError as exc:
                        reply = exc
                    deliver(index, reply)
            return _where(conn)
        except (redis.ConnectionError, OSError):
            self.drop_idle()
            raise
        finally:
            if shorter:
                conn.socket_timeout = usual
                if conn._sock is not None:
                    conn._sock.settimeout(usual)
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
    """Commands on connections borrowed from a ``redis.asyncio.Redis`` pool.

    When it holds all the connections a bounded pool has, commands wait in
    a line of its own, and each connection that comes back goes straight
    to the first in line: one wake-up, where the pool's condition and lock
    would take several turns of a crowded event loop.
    """

    def __init__(self, pool: Any) -> None:
        super().__init__(pool)
        self.line: deque[asyncio.Future[Any]] = deque()
        # Connections taken from the pool and not given back (idle or in use).
        self.lent = 0
        self.capacity = getattr(pool, "max_connections", None) if self.bounded else None
        # Commands waiting for the next batch, with their callers' futures.
        self.pending: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        # Commands and batches written and not yet answered.
        self.busy = 0
        self.batches: set[asyncio.Task[None]] = set()

    async def _borrow(self) -> Any:
        pool = self.pool
        try:
            conn = await (pool.get_connection("EVALSHA") if self.named else pool.get_connection())
        except redis.ConnectionError as exc:
            if self.bounded and _EXHAUSTED in str(exc):
                raise _busy(pool, exc) from exc
            raise
        self.lent += 1
        return conn

    async def _take(self) -> Any:
        """A connection: an idle one, a new one from the pool, or the next to come back."""
        idle = self.idle
        if idle:
            return idle.pop()
        if self.capacity is None or self.lent < self.capacity:
            return await self._borrow()
        line = self.line
        if len(line) >= self.max_waiting:
            raise StorageBusy(f"{len(line)} Redis commands already wait for a connection of the pool")
        loop = asyncio.get_running_loop()
        turn = loop.create_future()
        line.append(turn)
        wait = self.pool.timeout
        # A bare timer rather than asyncio.wait_for: a connection handed over
        # then wakes its task in one turn of the loop, not three.
        timer = loop.call_later(wait, _time_out, turn)
        try:
            return await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled() and turn.exception() is None:
                # Cancelled as a connection came: pass it on.
                await self._give_back(turn.result())
            raise
        except asyncio.TimeoutError:
            raise StorageBusy(
                f"no Redis connection came free within {wait:g} s (all {self.capacity} of the pool in use)"
            ) from None
        finally:
            timer.cancel()

    async def _give_back(self, conn: Any) -> None:
        line = self.line
        while line:
            turn = line.popleft()
            if not turn.done():
                turn.set_result(conn)
                return
        if not self._shelve(conn):
            self.lent -= 1
            await self.pool.release(conn)

    async def warm(self, count: int) -> None:
        """Open ``count`` connections of the pool now; they wait, idle, for the first commands."""
        taken: list[Any] = []
        with _patient(self.pool) as restore:
            try:
                while len(taken) < count:
                    conn = await self._borrow()
                    taken.append(conn)
                    if not conn.is_connected:
                        await conn.connect()
            finally:
                for conn in taken:
                    restore(conn)
                    await self._give_back(conn)

    async def call(self, *args: Any) -> Any:
        """Run a command, written together with the others that come in this turn of the loop.

        With nothing else under way, the command goes out at once, as
        :meth:`call_one` sends it: coalescing never makes a lone command wait.
        """
        pending = self.pending
        if not self.busy and not pending:
            # call_one, one frame less: this is every check of an idle app.
            self.busy = 1
            try:
                return await self._call_one(args)
            finally:
                self.busy -= 1
        future = asyncio.get_running_loop().create_future()
        pending.append((args, future))
        if len(pending) == 1:
            self._start_batch()
        return await future

    def _start_batch(self) -> None:
        # A task's first step runs after the callbacks already due: every
        # command that comes in this turn of the loop joins the batch.
        task = asyncio.get_running_loop().create_task(self._send_batch())
        self.batches.add(task)
        task.add_done_callback(self.batches.discard)

    async def _send_batch(self) -> None:
        pending = self.pending
        # A caller cancelled before its command went out has nothing to wait for.
        batch = [entry for entry in pending[:MAX_BATCH] if not entry[1].done()]
        del pending[:MAX_BATCH]
        if pending:
            self._start_batch()
        if not batch:
            return
        self.busy += 1
        try:
            conn = await self._take()
        except BaseException as exc:
            self.busy -= 1
            _fail(batch, exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        try:
            await _exchange(conn, batch, self.pack)
        except BaseException as exc:
            # Each caller has the error now; raised again, it would only be
            # logged as a task's exception that nobody retrieved.
            _fail(batch, exc)
            if isinstance(exc, (redis.ConnectionError, OSError)):
                await self.drop_idle()
            elif isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
                raise
        finally:
            self.busy -= 1
            await self._give_back(conn)

    async def call_one(self, *args: Any) -> Any:
        """Run a command on a connection of its own, written and read alone."""
        self.busy += 1
        try:
            return await self._call_one(args)
        finally:
            self.busy -= 1

    async def _call_one(self, args: tuple[Any, ...]) -> Any:
        conn = await self._take()
        try:
            if not conn.is_connected:
                await conn.connect()  # as above
            packed = conn.pack_command(*args) if self.pack is None else [self.pack(args)]
            await _send(conn, packed)
            return await _read(conn)
        except (redis.ConnectionError, OSError):
            await self.drop_idle()
            raise
        finally:
            await self._give_back(conn)

    async def drop_idle(self) -> None:
        for conn in self._take_idle():
            await conn.disconnect()
            await self._give_back(conn)

    async def aclose(self) -> None:
        pool, idle = self.pool, self.idle
        while idle:
            self.lent -= 1
            await pool.release(idle.pop())


_CLUSTER_ORIGINAL = redis.asyncio.cluster.RedisCluster.execute_command
_node_batches: weakref.WeakKeyDictionary[Any, NodeBatches] = weakref.WeakKeyDictionary()


def split_pause(exc: redis.ResponseError, attempt: int, elapsed: float) -> float | None:
    """The pause before trying again a command refused because a moving slot splits its keys, or ``None``.

    For callers without a time budget of their own (the stores). The
    server says so with ``TRYAGAIN``, or, for a key that a script finds by
    name rather than in its KEYS (a chat thread's windows), with "Script
    attempted to access a non local key". As redis-py's client does for
    ``TRYAGAIN``, the pause grows with each try, for about a second in all.
    """
    if not isinstance(exc, TryAgainError) and not str(exc).startswith(_NOT_LOCAL):
        return None
    pause = min(0.002 * 2**attempt, 0.05)
    return pause if elapsed + pause <= _TRY_AGAIN_FOR else None


def sync_command(client: Any) -> Callable[..., Any]:
    """What runs a command on a synchronous client for a caller without a time budget (the stores).

    On a Cluster client, the client's own, tried again as :func:`split_pause` says.
    """
    execute: Callable[..., Any] = client.execute_command
    if not isinstance(client, redis.cluster.RedisCluster):
        return execute

    def patiently(*args: Any) -> Any:
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                return execute(*args)
            except redis.ResponseError as exc:
                pause = split_pause(exc, attempt, time.monotonic() - started)
                if pause is None:
                    raise
            time.sleep(pause)
            attempt += 1

    return patiently


def async_command(client: Any) -> Callable[..., Awaitable[Any]]:
    """:func:`sync_command` for an asyncio client.

    On a Cluster client, :meth:`NodeBatches.call_patiently` (``ASK``
    followed right; see :class:`NodeBatches`), else the client's own.
    """
    nodes = node_batches_for(client)
    execute: Callable[..., Awaitable[Any]] = client.execute_command
    return execute if nodes is None else nodes.call_patiently


def node_batches_for(client: Any) -> NodeBatches | None:
    """The batches of a ``redis.asyncio.cluster.RedisCluster`` client, or ``None`` if it cannot have them."""
    if not isinstance(client, redis.asyncio.cluster.RedisCluster) or not internals_hold(redis.asyncio.Redis):
        return None
    command = type(client).execute_command
    if command is not _CLUSTER_ORIGINAL or hasattr(command, "__wrapped__"):
        return None
    node = redis.asyncio.cluster.ClusterNode
    # Before redis-py had these, a node's connections went back through a private field.
    release = getattr(node, "release", None)
    if not callable(getattr(node, "acquire_connection", None)) or not callable(release):
        return None
    if inspect.iscoroutinefunction(release):
        return None
    kwargs = client.get_connection_kwargs()
    protocol = str(kwargs.get("protocol") or 2)
    connection: Any = kwargs.get("connection_class") or redis.asyncio.Connection
    if (
        protocol != "2"
        or kwargs.get("cache")
        or not issubclass(connection, _CONNECTIONS[redis.asyncio.Redis][0])
    ):
        return None
    batches = _node_batches.get(client)
    if batches is None:
        batches = _node_batches[client] = NodeBatches(client)
    return batches


class NodeBatches:
    """Script calls of a ``redis.asyncio.cluster.RedisCluster`` client, sent on its nodes' connections.

    As with :class:`AsyncLender`, a command that comes while nothing else
    is under way goes out at once, on a connection of the primary that
    serves its key's slot. With :meth:`call`, those that come while others
    are under way wait for the end of this turn of the event loop, grouped
    by that primary, and each node's group goes out in one write on one of
    its connections and comes back in one read (at most ``MAX_BATCH`` per
    write); :meth:`call_one` sends each alone.

    The client stays in charge of what the slot map alone cannot tell:

    - a reply that redirects with ``MOVED`` (the slot has moved) or says
      that the cluster is down sends its command again through the client,
      which follows it and updates its map;
    - ``ASK`` (the slot is moving and the key has left) is followed here:
      ``ASKING`` and the command go to the named node in one write on one
      connection. redis-py's asyncio client sends ``ASKING`` as a command
      of its own, then the command on whichever of the node's connections
      is free first; the node, not asked on that one, answers ``MOVED``
      back to the slot's owner, and after 16 such turns the client gives
      up (``TTL exhausted``);
    - ``TRYAGAIN`` (a command of several keys, some moved and some not) is
      raised, for the storage to try again within its budget
      (:meth:`call_patiently` waits it out itself);
    - when a node's connection fails (reset, no reply in time), each of the
      callers on it gets an exception of its own, and that node's commands
      go through the client until one of them succeeds, so the client
      learns of the failure (and, after a failover, of the new primary) as
      it would without batches. The other nodes' batches go on.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        encoding = client.get_connection_kwargs().get("encoding", "utf-8")
        self.pack = pack_command if encoding.replace("-", "").lower() == "utf8" else None
        # Commands and batches under way.
        self.busy = 0
        # Per node name: the node, and the commands waiting for its next batch.
        self.pending: dict[str, tuple[Any, list[tuple[tuple[Any, ...], asyncio.Future[Any]]]]] = {}
        self.batches: set[asyncio.Task[None]] = set()
        # Names of the nodes whose last exchange failed.
        self.suspect: set[str] = set()

    async def call(self, *args: Any) -> Any:
        """Run a command: at once if nothing else is under way, else in its node's next batch."""
        return await self._run(args, True)

    async def call_one(self, *args: Any) -> Any:
        """Run a command alone, on a connection of its node."""
        return await self._run(args, False)

    async def call_patiently(self, *args: Any) -> Any:
        """:meth:`call_one`, tried again while a moving slot splits its keys (:func:`split_pause`)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        attempt = 0
        while True:
            try:
                return await self._run(args, False)
            except redis.ResponseError as exc:
                pause = split_pause(exc, attempt, loop.time() - started)
                if pause is None:
                    raise
            await asyncio.sleep(pause)
            attempt += 1

    async def _run(self, args: tuple[Any, ...], batch: bool) -> Any:
        node = self._node_of(args)
        if node is None:
            return await self._alone(args)
        name = node.name
        if name in self.suspect:
            reply = await self._alone(args)
            self.suspect.discard(name)
            return reply
        try:
            if batch and (self.busy or self.pending):
                return await self._join(node, args)
            return await self._single(node, args)
        except (MovedError, ClusterDownError):  # (MovedError is a kind of AskError)
            return await self._alone(args)
        except AskError as exc:
            try:
                return await self._asked(args, exc)
            except (AskError, ClusterDownError):
                return await self._alone(args)

    def _node_of(self, args: tuple[Any, ...]) -> Any:
        """The primary serving a script call's first key; ``None`` for another command, or before the map."""
        if args[0] != "EVALSHA" or len(args) < 4 or not int(args[2]):
            return None
        try:
            return self.client.get_node_from_key(args[3])
        except (redis.RedisError, RedisClusterException):  # the client has not read the slot map yet
            return None

    async def _alone(self, args: tuple[Any, ...]) -> Any:
        self.busy += 1
        try:
            return await self.client.execute_command(*args)
        finally:
            self.busy -= 1

    async def _single(self, node: Any, args: tuple[Any, ...]) -> Any:
        future = asyncio.get_running_loop().create_future()
        await self._exchange_on(node, [(args, future)])
        return future.result()

    async def _asked(self, args: tuple[Any, ...], ask: AskError) -> Any:
        """``args`` sent after ``ASKING``, in one write, to the node that ``ask`` names."""
        remap = getattr(self.client.nodes_manager, "remap_host_port", None)
        host, port = remap(ask.host, ask.port) if remap is not None else (ask.host, ask.port)
        node = self.client.get_node(host=host, port=port)
        if node is None:  # a node the client has not met yet
            return await self._alone(args)
        loop = asyncio.get_running_loop()
        asking, future = loop.create_future(), loop.create_future()
        await self._exchange_on(node, [(("ASKING",), asking), (args, future)])
        if not asking.cancelled():
            asking.exception()  # ASKING's own reply (OK) matters only through the command's
        return future.result()

    async def _join(self, node: Any, args: tuple[Any, ...]) -> Any:
        name = node.name
        entry = self.pending.get(name)
        if entry is None:
            entry = self.pending[name] = (node, [])
            self._start_batch(name)
        future = asyncio.get_running_loop().create_future()
        entry[1].append((args, future))
        return await future

    def _start_batch(self, name: str) -> None:
        # As AsyncLender's: every command of this turn for the node joins the batch.
        task = asyncio.get_running_loop().create_task(self._send_batch(name))
        self.batches.add(task)
        task.add_done_callback(self.batches.discard)

    async def _send_batch(self, name: str) -> None:
        node, pending = self.pending.pop(name)
        batch = [entry for entry in pending if not entry[1].done()]
        if len(batch) > MAX_BATCH:
            self.pending[name] = (node, batch[MAX_BATCH:])
            self._start_batch(name)
            del batch[MAX_BATCH:]
        if batch:
            await self._exchange_on(node, batch)

    async def _exchange_on(self, node: Any, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        """Send ``batch`` on a connection of ``node``; on failure, fail its callers and suspect the node."""
        self.busy += 1
        conn = None
        try:
            conn = node.acquire_connection()
            prepare = getattr(node, "disconnect_if_needed", None)  # redis-py 7+
            if prepare is not None:
                await prepare(conn)
            await _exchange(conn, batch, self.pack)
        except BaseException as exc:
            _fail(batch, exc)  # as in AsyncLender._send_batch
            if not isinstance(exc, asyncio.CancelledError):
                self.suspect.add(node.name)
            if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
                raise
        finally:
            self.busy -= 1
            if conn is not None:
                node.release(conn)


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


async def _exchange(
    conn: Any,
    batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]],
    pack: Callable[[tuple[Any, ...]], bytes] | None,
) -> None:
    """Send a batch's commands in one write on ``conn`` and hand each caller its reply."""
    if not conn.is_connected:
        await conn.connect()
    packed: list[bytes] = []
    for args, _ in batch:
        packed += conn.pack_command(*args) if pack is None else [pack(args)]
    await _send(conn, packed)
    await _read_batch(conn, batch)


def _time_out(turn: asyncio.Future[Any]) -> None:
    if not turn.done():
        turn.set_exception(asyncio.TimeoutError())


class _Deadline:
    """Cancels the task reading a reply once the server has had ``budget`` seconds of the loop.

    A plain timeout counts the time the event loop spent elsewhere (a
    handler that blocks it, a backlog of callbacks) against the server,
    and throws away a reply that came in meanwhile. So the deadline moves
    on by as much as its timer fired late, and when it fires on time (or
    ``last`` seconds have passed, however late) it cancels one turn of the
    loop later: a reply read in this turn wakes the task first, and the
    task then reads it. The reads it bounds ask redis-py for no timeout of
    its own (``_NO_TIMEOUT``): one would cancel the task as soon as it
    fired, before a reply that came during a stall could be read.
    """

    __slots__ = ("expired", "handle", "last", "loop", "task", "when")

    def __init__(self, budget: float, last: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        self.when = self.loop.time() + budget
        self.last = self.loop.time() + last  # whatever the loop did, never later than this
        self.expired = False
        self.handle: asyncio.Handle = self.loop.call_at(self.when, self._due)

    def _due(self) -> None:
        now = self.loop.time()
        late = now - self.when
        if late > _LATE and now < self.last:
            self.when = now + late
            self.handle = self.loop.call_at(self.when, self._due)
        else:
            self.handle = self.loop.call_soon(self._expire)

    def _expire(self) -> None:
        self.expired = True
        if self.task is not None:
            self.task.cancel()


async def _read(conn: Any) -> Any:
    """The reply to the command just sent on ``conn``, within its socket timeout of server time."""
    budget = conn.socket_timeout
    if not budget:
        return await conn.read_response()
    deadline = _Deadline(budget, 10 * budget)
    try:
        return await conn.read_response(timeout=_NO_TIMEOUT)
    except asyncio.CancelledError:
        if not deadline.expired:
            raise
        uncancel = getattr(deadline.task, "uncancel", None)
        if uncancel is not None and uncancel():
            raise  # cancelled by someone else as well
        await conn.disconnect(nowait=True)
        raise redis.TimeoutError(f"Timeout reading from {_where(conn)}") from None
    finally:
        deadline.handle.cancel()


async def _read_batch(conn: Any, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
    """Read the replies to ``batch``, just sent on ``conn``, each into its caller's future.

    The whole batch has the connection's socket timeout of server time, as
    each of its commands would have had alone. An error reply is its
    caller's alone; a caller that gave up has its reply read and dropped,
    so the connection stays in step.
    """
    budget = conn.socket_timeout
    deadline = _Deadline(budget, 10 * budget) if budget else None
    timeout = _NO_TIMEOUT if budget else None
    try:
        for _, future in batch:
            try:
                reply = await conn.read_response(timeout=timeout)
            except redis.ResponseError as exc:
                if not future.done():
                    future.set_exception(exc)
                continue
            if not future.done():
                future.set_result(reply)
    except asyncio.CancelledError:
        if deadline is None or not deadline.expired:
            raise
        uncancel = getattr(deadline.task, "uncancel", None)
        if uncancel is not None and uncancel():
            raise
        await conn.disconnect(nowait=True)
        raise redis.TimeoutError(f"Timeout reading from {_where(conn)}") from None
    finally:
        if deadline is not None:
            deadline.handle.cancel()


def _fail(batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]], exc: BaseException) -> None:
    """Fail the callers of ``batch`` still waiting, each with an exception of its own."""
    for _, future in batch:
        if not future.done():
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
                continue
            try:
                own = type(exc)(*exc.args)
            except Exception:  # an exception class of another shape
                own = exc
            future.set_exception(own)


def _where(conn: Any) -> str:
    path = getattr(conn, "path", None)
    return str(path) if path else f"{getattr(conn, 'host', '?')}:{getattr(conn, 'port', '?')}"
