"""The Redis backend, sync and async.

Each check is one Lua script call (``backends/lua/*.lua``), run by SHA and
loaded again when the server answers NOSCRIPT (after ``SCRIPT FLUSH`` or a
restart). Time comes from the server's ``TIME``, so app hosts with skewed
clocks agree.

Keys. A limit of key ``K`` is stored under ``K:<tag>``, the tag being the
algorithm's letter and the window (``rl:user:{u14}:api:/calls:s1m``, see
:func:`~bisman_ratelimit.core.limit_tag`); with a ``prefix``, under
``<prefix>:K:<tag>``. ``K`` is not changed: a key that holds a Cluster hash
tag (``{u14}``, as the web plugins write them) keeps every limit of that
identity in one slot; a ``hit_many`` whose keys fall in several slots is
split per slot (see :mod:`.cluster`).

Faults. Every call has a time budget (``budget`` seconds). Within it a
call is tried again after a connection reset, ``BUSY`` (a slow script),
``LOADING`` (a restarting server) or ``READONLY`` (a primary demoted by a
failover: the pool's idle connections are dropped so the next ones reach
the new primary, which Sentinel clients look up again). A timeout is not
tried again: waiting for it has spent the budget. What is left over
surfaces as :class:`~bisman_ratelimit.core._errors.StorageUnavailable` or
:class:`~bisman_ratelimit.core._errors.StorageResponseError`, for the fallback
backend to handle. The budget bounds waiting only together with the
client's socket timeouts; clients built from URLs get both from
``?timeout=``.

With ``blocked_cache=True`` (or a :class:`~.blocked.BlockedKeys`), denials
are remembered and repeated hits on a blocked key are answered without
Redis. The library's entry points (Redis URLs, ``Limiter(client)``) turn
it on; a storage made directly decides every hit on Redis, which keeps its
figures bit for bit those of the Lua script.

``RedisStorage`` and ``AsyncRedisStorage`` share everything but the calls
that touch the network.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from types import TracebackType
from typing import Any, TypeVar

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis.exceptions import NoScriptError, RedisClusterException, TryAgainError

from bisman_ratelimit.backends._base import BatchResult, Check, GroupResult, Spec
from bisman_ratelimit.backends._blocked import BlockedKeys
from bisman_ratelimit.backends._cluster import (
    arun_step,
    grouped_check,
    run_step,
    slot_groups,
)
from bisman_ratelimit.backends._combine import combiner_for
from bisman_ratelimit.backends._loops import Connect, LoopWires, Wire
from bisman_ratelimit.backends._scripts import Script
from bisman_ratelimit.backends._wire import lender_for
from bisman_ratelimit.core import (
    Decision,
    InvalidArgument,
    StorageError,
    StorageReadOnly,
    StorageResponseError,
    StorageUnavailable,
    adrive,
    drive,
    escape,
    limit_tag,
    make_decision,
    parse_limit_tag,
    scan_pattern,
)

T = TypeVar("T")

# Seconds. Short, because a rate limit that waits for a sick Redis turns
# its sickness into the app's.
DEFAULT_BUDGET = 0.05
# Seconds a call may wait in line for a pooled connection. Apart from the
# budget: when every connection is in use, the app is busy, not Redis.
POOL_WAIT = 2.0

_ALGORITHMS = ("fixed_window", "sliding_window", "sliding_log", "token_bucket", "gcra")

# Limits whose key suffix and arguments are kept (a limiter keeps as many).
_FORMS = 1024

# Exceptions a Redis call can raise that are Redis's fault, not ours.
_FAULTS = (redis.RedisError, RedisClusterException, OSError)


# The helper files each algorithm's Lua needs (after common.lua). Lua makes
# every helper of a script again on each call, so a script holds only those
# it uses.
_HELPERS: dict[str, tuple[str, ...]] = {
    "fixed_window": ("write_now.lua", "state.lua", "counts.lua"),
    "sliding_window": ("write_now.lua", "state.lua", "counts.lua"),
    "sliding_log": ("write_now.lua",),
    "token_bucket": ("write_now.lua", "state.lua", "debt.lua"),
    "gcra": ("write_now.lua", "state.lua", "debt.lua"),
}
_ALGORITHM_FILES = tuple(f"algo_{name}.lua" for name in _ALGORITHMS)
# Every limit of a hit_many, all or nothing, and refunds.
RATELIMIT = Script("write.lua", "state.lua", "counts.lua", "debt.lua", *_ALGORITHM_FILES, "ratelimit.lua")
# One limit: a script per algorithm holding only that algorithm.
SINGLE = {name: Script(*_HELPERS[name], f"algo_{name}.lua", "single.lua", bind=name) for name in _ALGORITHMS}
LEASE = Script("lease.lua")


def storage_error(exc: BaseException) -> StorageError:
    """The exception of ours that stands for a redis-py (or socket) one."""
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, OSError)):
        return StorageUnavailable(f"Redis is unavailable: {exc}")
    if isinstance(exc, RedisClusterException):
        return StorageUnavailable(f"Redis Cluster is unavailable: {exc}")
    if isinstance(exc, redis.ReadOnlyError):
        return StorageReadOnly(f"Redis is read-only (a replica): {exc}")
    if refuses_writes(exc):
        return StorageReadOnly(f"Redis refuses writes (fewer replicas than min-replicas-to-write): {exc}")
    if isinstance(exc, redis.ResponseError):
        return StorageResponseError(f"Redis answered with an error: {exc}")
    return StorageError(f"Redis call failed: {exc}")


class translate_errors:
    """The one place where redis-py exceptions become ours."""

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None and isinstance(exc, _FAULTS):
            raise storage_error(exc) from exc


_translate = translate_errors()
_running_loop = asyncio.get_running_loop


def refuses_writes(exc: BaseException) -> bool:
    """Whether the server answered but would not write: a replica (``READONLY``), or a primary
    with fewer replicas than its ``min-replicas-to-write`` (``NOREPLICAS``: after a failover, the
    old primary, whose replica has been promoted)."""
    return isinstance(exc, redis.ReadOnlyError) or (
        isinstance(exc, redis.ResponseError) and str(exc).startswith("NOREPLICAS")
    )


def _is_busy(exc: BaseException) -> bool:
    return isinstance(exc, redis.ResponseError) and str(exc).startswith("BUSY")


def retry_delay(exc: BaseException, attempt: int, elapsed: float, budget: float) -> float | None:
    """Seconds to wait before trying again after ``exc``, or ``None`` to give up.

    ``attempt`` counts the tries so far, from 0; ``elapsed`` is the time
    they took.
    """
    if isinstance(exc, redis.TimeoutError):
        return None
    if isinstance(exc, (redis.BusyLoadingError, TryAgainError)) or _is_busy(exc):
        # The server answers quickly but cannot serve yet (loading, running a
        # script, or moving the slot of a check's keys between Cluster
        # nodes, some moved and some not): poll it.
        delay = min(0.002 * 2**attempt, 0.02)
    elif isinstance(exc, redis.ConnectionError) or refuses_writes(exc):
        # A reset, or a primary demoted or cut off from its replicas: a fresh
        # connection usually works at once (Sentinel's reaches the new primary).
        # More than two tries in a row means the server is gone.
        if attempt >= 2:
            return None
        delay = 0.0 if attempt == 0 else 0.002
    else:
        return None
    return delay if elapsed + delay < budget else None


def is_cluster_client(client: object) -> bool:
    return isinstance(client, (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster))


def is_sync_client(client: object) -> bool:
    """A ``redis.Redis`` (plain, or from ``Sentinel.master_for``) or ``RedisCluster``."""
    return isinstance(client, (redis.Redis, redis.cluster.RedisCluster))


def is_async_client(client: object) -> bool:
    return isinstance(client, (redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster))


class _RedisBase:
    """Keys, arguments, decoding, retry decisions: everything that does no I/O.

    ``closing`` are clients closed with the storage (those of the
    sentinels, for a storage made from a URL). ``clock`` is for tests
    only: a time source in seconds standing in for the server's ``TIME``,
    which the blocked-keys cache then follows too.
    """

    def __init__(
        self,
        client: Any,
        *,
        prefix: str = "",
        budget: float = DEFAULT_BUDGET,
        blocked_cache: bool | BlockedKeys = False,
        clock: Callable[[], float] | None = None,
        closing: tuple[Any, ...] = (),
    ) -> None:
        if (
            isinstance(budget, bool)
            or not isinstance(budget, (int, float))
            or not (math.isfinite(budget) and budget > 0)
        ):
            raise InvalidArgument(f"Redis time budget must be a positive number of seconds, got {budget!r}")
        if not isinstance(prefix, str) or prefix.endswith(":"):
            raise InvalidArgument(f"key prefix must be a string not ending in ':', got {prefix!r}")
        self.client = client
        self.prefix = prefix
        self._start = f"{prefix}:" if prefix else ""
        self.budget = float(budget)
        self.cluster = is_cluster_client(client)
        self._clock = clock
        if blocked_cache is True:
            blocked_cache = BlockedKeys(clock=clock or time.monotonic)
        self.blocked: BlockedKeys | None = None if blocked_cache is False else blocked_cache
        self._closing = closing
        # Per limit: the end of its keys, and its script arguments as text
        # (which hiredis packs faster than numbers).
        self._forms: dict[Spec, tuple[str, tuple[str, ...]]] = {}

    def _form(self, spec: Spec) -> tuple[str, tuple[str, ...]]:
        try:
            return self._forms[spec]
        except KeyError:
            pass
        if len(self._forms) >= _FORMS:
            self._forms.clear()
        algorithm, amount, period_us, capacity = spec
        form = self._forms[spec] = (
            ":" + limit_tag(algorithm, period_us),
            (algorithm, str(amount), str(period_us), str(capacity)),
        )
        return form

    def _head(self, key: str) -> str:
        """What every stored key of ``key`` starts with: the prefix, if any, and ``key``."""
        if not key.isascii():
            try:
                key.encode()
            except UnicodeEncodeError:
                # Lone surrogates (from a badly decoded header, say) are no
                # UTF-8: such a key is stored percent-escaped.
                key = escape(key)
        return self._start + key if self._start else key

    def key_for(self, key: str, spec: Spec) -> str:
        return self._head(key) + self._form(spec)[0]

    def parse_key(self, redis_key: str) -> tuple[str, str, int] | None:
        """The key, algorithm and window (µs) :meth:`key_for` turned into ``redis_key``.

        ``None`` for a key of another shape. The amount is not in the key
        (:func:`~bisman_ratelimit.core.limit_tag`): whoever reads the key
        back knows its limits.
        """
        if self._start:
            if not redis_key.startswith(self._start):
                return None
            redis_key = redis_key[len(self._start) :]
        key, sep, tag = redis_key.rpartition(":")
        parsed = parse_limit_tag(tag)
        if not sep or not key or parsed is None:
            return None
        return key, parsed[0], parsed[1]

    def lease_key(self, key: str) -> str:
        return self._head(key) + ":lease"

    def _now(self) -> str:
        return "" if self._clock is None else str(int(self._clock() * 1_000_000))

    def _check_args(self, checks: list[Check], mode: str, at: int = 0) -> tuple[list[str], list[str]]:
        keys = []
        args = [self._now(), mode]
        identity = head = ""
        for key, spec, cost in checks:
            if key != identity:  # the limits of one identity usually come together
                identity, head = key, self._head(key)
            suffix, spec_args = self._form(spec)
            keys.append(head + suffix)
            args += spec_args
            args.append(str(cost))
        if mode == "r":
            args.append(str(at))
        return keys, args

    def _one_args(self, spec: Spec, cost: int, commit: bool) -> list[str]:
        return [self._now(), "1" if commit else "0", *self._form(spec)[1], str(cost)]

    @staticmethod
    def _decode_one(key: str, spec: Spec, raw: int | list[int]) -> Decision:
        if isinstance(raw, int):
            # An allowed hit, packed by single.lua: remaining, reset (µs), 1.
            return make_decision(True, spec[3], raw >> 33, (raw >> 1) & 0xFFFFFFFF, 0, key, spec[0])
        return make_decision(raw[0] == 1, spec[3], raw[1], raw[2], raw[3], key, spec[0])

    @staticmethod
    def _decode(checks: list[Check], raw: list[int]) -> GroupResult:
        decisions = []
        at = 1
        for key, spec, _ in checks:
            decisions.append(
                make_decision(raw[at] == 1, spec[3], raw[at + 1], raw[at + 2], raw[at + 3], key, spec[0])
            )
            at += 4
        return raw[0] == 1, decisions, int(raw[at])

    def cached(self, checks: list[Check]) -> BatchResult | None:
        """A denial for every check from the blocked-keys cache, else ``None`` (no I/O)."""
        blocked = self.blocked
        if not blocked:  # none, or nothing blocked
            return None
        decisions = []
        for key, spec, cost in checks:
            denial = blocked.lookup(key, spec, cost)
            if denial is None:
                return None
            decisions.append(denial)
        return False, decisions

    def _remember(
        self, checks: list[Check], decisions: list[Decision], asked: tuple[int, int] | None
    ) -> None:
        """``asked``: the cache's clock and refund count, read before asking Redis."""
        blocked = self.blocked
        if blocked is None or asked is None or (not blocked and all(decisions)):
            return  # nothing to forget, nothing to remember
        for (_, spec, cost), decision in zip(checks, decisions, strict=True):
            blocked.record(spec, cost, decision, *asked)

    def _refunded(self, checks: list[Check], decisions: list[Decision]) -> list[Decision]:
        # Denials given while the hits were held may rest on them, even
        # those whose answers are still on their way.
        blocked = self.blocked
        if blocked is not None:
            for key, spec, _ in checks:
                blocked.refunded(key, spec)
        return decisions

    def _slot_groups(self, checks: list[Check]) -> list[list[int]] | None:
        """Indexes of ``checks`` per Cluster slot, or ``None`` if one call does."""
        if not self.cluster or len(checks) < 2:
            return None
        groups = slot_groups([self.key_for(key, spec) for key, spec, _ in checks])
        return groups if len(groups) > 1 else None

    def _lease_args(self, key: str, lease_id: str, max_in_flight: int, ttl_us: int) -> tuple[str, list[Any]]:
        return self.lease_key(key), [self._now(), lease_id, max_in_flight, ttl_us]

    def _delay(self, exc: BaseException, attempt: int, started: float) -> float:
        """The wait before the next try, or raise ours for ``exc``."""
        delay = retry_delay(exc, attempt, time.monotonic() - started, self.budget)
        if delay is None:
            raise storage_error(exc) from exc
        return delay


class RedisStorage(_RedisBase):
    """Synchronous backend on a ``redis.Redis`` (plain, Sentinel) or ``RedisCluster`` client.

    With ``coalesce``, the commands that threads send while others are in
    flight go out together, in one write on one connection (see :mod:`._combine`).
    """

    def __init__(self, client: Any, *, coalesce: bool = False, **options: Any) -> None:
        super().__init__(client, **options)
        if not isinstance(coalesce, bool):
            raise InvalidArgument(f"coalesce must be True or False, got {coalesce!r}")
        self._lender = lender_for(client)
        self._call: Callable[..., Any] = (
            client.execute_command
            if self._lender is None
            else combiner_for(self._lender).call
            if coalesce
            else self._lender.call
        )
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()

    def _run(self, call: Callable[..., T], *args: Any) -> T:
        return self._retry(call, args, time.monotonic(), 0)

    def _retry(self, call: Callable[..., T], args: tuple[Any, ...], started: float, attempt: int) -> T:
        while True:
            try:
                return call(*args)
            except _FAULTS as exc:
                delay = self._delay(exc, attempt, started)
                if refuses_writes(exc):
                    self._drop_idle_connections()
            if delay:
                time.sleep(delay)
            attempt += 1

    def _drop_idle_connections(self) -> None:
        if self._lender is not None:
            self._lender.drop_idle()
        pool = getattr(self.client, "connection_pool", None)
        if pool is not None:
            try:
                pool.disconnect(inuse_connections=False)
            except TypeError:
                # redis-py 5's BlockingConnectionPool drops them all.
                pool.disconnect()

    def _evalsha(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        return script.run(self._call, self.client.script_load, keys, args)

    def _eval(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        # The first try is inline: the retry loop costs frames on every call.
        started = time.monotonic()
        try:
            return self._call("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            pass
        except _FAULTS as exc:
            delay = self._delay(exc, 0, started)
            if refuses_writes(exc):
                self._drop_idle_connections()
            if delay:
                time.sleep(delay)
        return self._retry(self._evalsha, (script, keys, args), started, 1)

    def check(self, key: str, spec: Spec, cost: int, commit: bool) -> Decision:
        blocked = self.blocked
        if blocked is None:
            raw = self._eval(SINGLE[spec[0]], [self.key_for(key, spec)], self._one_args(spec, cost, commit))
            return self._decode_one(key, spec, raw)
        denial = blocked.lookup(key, spec, cost)
        if denial is not None:
            return denial
        asked_at, refunds = blocked.now(), blocked.refunds
        raw = self._eval(SINGLE[spec[0]], [self.key_for(key, spec)], self._one_args(spec, cost, commit))
        decision = self._decode_one(key, spec, raw)
        blocked.record(spec, cost, decision, asked_at, refunds)
        return decision

    def check_many(self, checks: list[Check], commit: bool) -> BatchResult:
        cached = self.cached(checks)
        if cached is not None:
            return cached
        groups = self._slot_groups(checks)
        if groups is not None:
            return drive(
                grouped_check(checks, groups, commit),
                partial(run_step, check=self._group_check, refund=self._group_refund, run_all=self._all),
            )
        ok, decisions, _ = self._check_once(checks, commit)
        return ok, decisions

    def check_timed(self, checks: list[Check], commit: bool) -> GroupResult:
        """:meth:`check_many`, with the server time it ran at (for :meth:`refund`).

        The time is ``None`` when no script call consumed the hits at one
        time: a denial from the blocked-keys cache, or checks spread over
        Cluster slots.
        """
        cached = self.cached(checks)
        if cached is not None:
            return cached[0], cached[1], None
        groups = self._slot_groups(checks)
        if groups is not None:
            ok, decisions = self.check_many(checks, commit)
            return ok, decisions, None
        return self._check_once(checks, commit)

    def _check_once(self, checks: list[Check], commit: bool) -> GroupResult:
        keys, args = self._check_args(checks, "1" if commit else "0")
        asked = (self.blocked.now(), self.blocked.refunds) if self.blocked is not None else None
        result = self._decode(checks, self._eval(RATELIMIT, keys, args))
        self._remember(checks, result[1], asked)
        return result

    def refund(self, checks: list[Check], at: int | None) -> list[Decision]:
        """Give back hits that :meth:`check_timed` consumed at server time ``at``; then look."""
        if at is None:
            return self.check_timed(checks, False)[1]
        keys, args = self._check_args(checks, "r", at)
        return self._refunded(checks, self._decode(checks, self._eval(RATELIMIT, keys, args))[1])

    def _group_check(self, group: int, checks: list[Check], commit: bool) -> GroupResult:
        return self._check_once(checks, commit)

    def _group_refund(self, group: int, checks: list[Check], at: int | None) -> list[Decision]:
        return self.refund(checks, at)

    def _all(self, calls: list[Callable[[], Any]]) -> list[Any]:
        """Run ``calls`` at once (one here, the rest on threads); results or exceptions, in order."""
        if self._executor is None:
            with self._executor_lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="bisman-cluster")
        futures = [self._executor.submit(_capture, call) for call in calls[1:]]
        return [_capture(calls[0]), *(future.result() for future in futures)]

    def reset(self, key: str, spec: Spec) -> None:
        if self.blocked is not None:
            self.blocked.forget(key, spec)
        self._run(self.client.delete, self.key_for(key, spec))

    def sample(
        self, max_keys: int, resolve: Callable[[str, str, int], Spec | None]
    ) -> list[tuple[str, Spec]]:
        """Up to ``max_keys`` (key, limit) pairs counted now, from a bounded SCAN (standalone Redis).

        ``resolve(key, algorithm, window_us)`` names the limit of a stored
        key (the caller knows its limits), or ``None`` to pass it over.
        """
        found: list[tuple[str, Spec]] = []
        cursor = 0
        pattern = scan_pattern(self._start) if self._start else "*"
        # SCAN may return nothing for many rounds on a big database: bound the rounds too.
        for _ in range(max(10, max_keys // 10)):
            cursor, keys = self._run(self.client.scan, cursor, pattern, 1000)
            for raw in keys:
                parsed = self.parse_key(raw.decode() if isinstance(raw, bytes) else raw)
                spec = None if parsed is None else resolve(*parsed)
                if parsed is not None and spec is not None:
                    found.append((parsed[0], spec))
                    if len(found) >= max_keys:
                        return found
            if int(cursor) == 0:
                break
        return found

    def acquire(self, key: str, lease_id: str, max_in_flight: int, ttl_us: int) -> bool:
        lease_key, args = self._lease_args(key, lease_id, max_in_flight, ttl_us)
        return bool(self._eval(LEASE, [lease_key], args)[0])

    def release(self, key: str, lease_id: str) -> None:
        self._run(self.client.zrem, self.lease_key(key), lease_id)

    def warm(self, connections: int | None = None) -> None:
        """Open ``connections`` (default: a bounded pool's size, at most 64) to Redis now."""
        if self._lender is not None:
            with _translate:
                self._lender.warm(_warm_count(self._lender.pool, connections))

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        if self._lender is not None:
            self._lender.close()
        self.client.close()
        for other in self._closing:
            other.close()


class AsyncRedisStorage(_RedisBase):
    """Asynchronous backend on a ``redis.asyncio.Redis`` (plain, Sentinel) or ``RedisCluster`` client.

    With ``coalesce`` (the default), the commands that tasks send in one turn
    of the event loop go out in one write on one connection (on Cluster,
    one per node) and their replies come back in one read (see :mod:`._wire`).

    ``client`` serves the event loop of the first call. With ``connect``
    (as a backend built from a URL has), each other loop gets a client of
    its own from it; without, a call from another loop raises
    :class:`~bisman_ratelimit.core._errors.StorageUnavailable` (see :mod:`._loops`).
    """

    def __init__(
        self, client: Any, *, coalesce: bool = True, connect: Connect | None = None, **options: Any
    ) -> None:
        super().__init__(client, **options)
        if not isinstance(coalesce, bool):
            raise InvalidArgument(f"coalesce must be True or False, got {coalesce!r}")
        self._wires = LoopWires(client, self._closing, coalesce, connect)

    @property
    def _wire(self) -> Wire:
        """The last loop's wire, or the one no loop took yet."""
        wire = self._wires.last or self._wires.first
        if wire is None:
            raise LookupError("no client: every event loop that used this backend has ended")
        return wire

    async def _run(self, call: Callable[..., Awaitable[T]], *args: Any) -> T:
        return await self._retry(call, args, time.monotonic(), 0)

    async def _retry(
        self, call: Callable[..., Awaitable[T]], args: tuple[Any, ...], started: float, attempt: int
    ) -> T:
        while True:
            try:
                return await call(*args)
            except _FAULTS as exc:
                delay = self._delay(exc, attempt, started)
                if refuses_writes(exc):
                    await self._drop_idle_connections(await self._wires.here())
            if delay:
                await asyncio.sleep(delay)
            attempt += 1

    async def _drop_idle_connections(self, wire: Wire) -> None:
        if wire.lender is not None:
            await wire.lender.drop_idle()
        pool = getattr(wire.client, "connection_pool", None)
        if pool is not None:
            try:
                await pool.disconnect(inuse_connections=False)
            except TypeError:
                await pool.disconnect()

    async def _evalsha(self, wire: Wire, script: Script, keys: list[str], args: list[Any]) -> Any:
        return await script.arun(wire.call, partial(_load, wire), keys, args)

    async def _eval(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        wires = self._wires
        wire = wires.last
        if wire is None or wire.loop is not _running_loop():
            wire = await wires.here()
        # The first try is inline: the retry loop costs frames on every call.
        started = time.monotonic()
        try:
            return await wire.call("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            pass
        except _FAULTS as exc:
            delay = self._delay(exc, 0, started)
            if refuses_writes(exc):
                await self._drop_idle_connections(wire)
            if delay:
                await asyncio.sleep(delay)
        return await self._retry(self._evalsha, (wire, script, keys, args), started, 1)

    async def check(self, key: str, spec: Spec, cost: int, commit: bool) -> Decision:
        blocked = self.blocked
        if blocked is None:
            raw = await self._eval(
                SINGLE[spec[0]], [self.key_for(key, spec)], self._one_args(spec, cost, commit)
            )
            return self._decode_one(key, spec, raw)
        denial = blocked.lookup(key, spec, cost)
        if denial is not None:
            return denial
        asked_at, refunds = blocked.now(), blocked.refunds
        raw = await self._eval(SINGLE[spec[0]], [self.key_for(key, spec)], self._one_args(spec, cost, commit))
        decision = self._decode_one(key, spec, raw)
        blocked.record(spec, cost, decision, asked_at, refunds)
        return decision

    async def check_many(self, checks: list[Check], commit: bool) -> BatchResult:
        cached = self.cached(checks)
        if cached is not None:
            return cached
        groups = self._slot_groups(checks)
        if groups is not None:
            return await adrive(
                grouped_check(checks, groups, commit),
                partial(arun_step, check=self._group_check, refund=self._group_refund),
            )
        ok, decisions, _ = await self._check_once(checks, commit)
        return ok, decisions

    async def check_timed(self, checks: list[Check], commit: bool) -> GroupResult:
        cached = self.cached(checks)
        if cached is not None:
            return cached[0], cached[1], None
        groups = self._slot_groups(checks)
        if groups is not None:
            ok, decisions = await self.check_many(checks, commit)
            return ok, decisions, None
        return await self._check_once(checks, commit)

    async def _check_once(self, checks: list[Check], commit: bool) -> GroupResult:
        keys, args = self._check_args(checks, "1" if commit else "0")
        asked = (self.blocked.now(), self.blocked.refunds) if self.blocked is not None else None
        result = self._decode(checks, await self._eval(RATELIMIT, keys, args))
        self._remember(checks, result[1], asked)
        return result

    async def refund(self, checks: list[Check], at: int | None) -> list[Decision]:
        if at is None:
            return (await self.check_timed(checks, False))[1]
        keys, args = self._check_args(checks, "r", at)
        return self._refunded(checks, self._decode(checks, await self._eval(RATELIMIT, keys, args))[1])

    async def _group_check(self, group: int, checks: list[Check], commit: bool) -> GroupResult:
        return await self._check_once(checks, commit)

    async def _group_refund(self, group: int, checks: list[Check], at: int | None) -> list[Decision]:
        return await self.refund(checks, at)

    async def reset(self, key: str, spec: Spec) -> None:
        if self.blocked is not None:
            self.blocked.forget(key, spec)
        await self._run((await self._wires.here()).client.delete, self.key_for(key, spec))

    async def acquire(self, key: str, lease_id: str, max_in_flight: int, ttl_us: int) -> bool:
        lease_key, args = self._lease_args(key, lease_id, max_in_flight, ttl_us)
        return bool((await self._eval(LEASE, [lease_key], args))[0])

    async def release(self, key: str, lease_id: str) -> None:
        await self._run((await self._wires.here()).client.zrem, self.lease_key(key), lease_id)

    async def warm(self, connections: int | None = None) -> None:
        """Open ``connections`` (default: a bounded pool's size, at most 64) to Redis now."""
        lender = (await self._wires.here()).lender
        if lender is not None:
            with _translate:
                await lender.warm(_warm_count(lender.pool, connections))

    async def aclose(self) -> None:
        """Close the client of the running loop (and the client no loop took yet)."""
        await self._wires.aclose()


def _warm_count(pool: Any, connections: int | None) -> int:
    if connections is None:
        return min(getattr(pool, "max_connections", None) or 64, 64)
    if isinstance(connections, bool) or not isinstance(connections, int) or connections < 0:
        raise InvalidArgument(f"connections to warm must be a whole number >= 0, got {connections!r}")
    return min(connections, getattr(pool, "max_connections", None) or connections)


async def _load(wire: Wire, source: str) -> object:
    if wire.lender is None:
        # A Cluster client loads on every primary (and redis-py 5's
        # cannot route a bare SCRIPT LOAD: it looks for keys in it).
        # Callers that find the script missing together share one load:
        # each of a crowd's would take a connection of every node.
        loading = wire.loading.get(source)
        if loading is None:
            loading = wire.loading[source] = asyncio.ensure_future(wire.client.script_load(source))
            loading.add_done_callback(partial(_forget, wire.loading, source))
        return await asyncio.shield(loading)
    # The way the checks go: after a SCRIPT FLUSH, a batch's callers
    # each load the script again, and their loads go out as one batch too.
    return await wire.call("SCRIPT", "LOAD", source)


def _forget(loading: dict[str, Any], source: str, done: asyncio.Future[object]) -> None:
    loading.pop(source, None)
    if not done.cancelled():
        done.exception()  # retrieved: its callers raise it


def _capture(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as exc:
        return exc
