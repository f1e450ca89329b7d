"""Timing of cache and store operations into ``app_cache_op_duration_seconds``.

Two wrappers, both recording into a :class:`~bisman_ratelimit.metrics._prometheus.CacheMetrics`:

- :func:`instrument_storage` wraps a limiter backend; each check, refund,
  reset and lease call is one observation (``method="ratelimit"``,
  ``"refund"``, ``"reset"``, ...); a backend that can give hits back
  still can through the wrapper::

      limiter = Limiter(instrument_storage(storage_from_url(url), metrics=cache))

- :class:`InstrumentedRedis` wraps a ``redis.Redis`` or ``redis.asyncio.Redis``
  client for stores that talk to Redis directly: ``get``, ``set``, ``incr``,
  ``evalsha`` and the other commands in :data:`COMMANDS` are timed, and reads
  are labelled ``hit`` or ``miss`` from their answer. Other attributes
  (``pipeline``, ``script_load``, ``close``...) pass through untouched.

A failed call is timed too, under ``hit="n/a"``, so slow timeouts show.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bisman_ratelimit.backends import AsyncRefundable, AsyncStorage, Check, Refundable, Spec, Storage
from bisman_ratelimit.core import Decision
from bisman_ratelimit.metrics._prometheus import CacheMetrics, HitLabel


class _StorageShell:
    """What both storage wrappers share: the wrapped backend and the metrics."""

    def __init__(self, storage: Any, *, metrics: CacheMetrics) -> None:
        self.inner = storage
        self.metrics = metrics

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.inner!r}>"


class InstrumentedStorage(_StorageShell):
    """A synchronous :class:`~bisman_ratelimit.backends._urls.Storage` that times every call."""

    inner: Storage

    def check(self, key: str, spec: Spec, cost: int, commit: bool) -> Decision:
        with self.metrics.time("ratelimit"):
            return self.inner.check(key, spec, cost, commit)

    def check_many(self, checks: list[Check], commit: bool) -> tuple[bool, list[Decision]]:
        with self.metrics.time("ratelimit"):
            return self.inner.check_many(checks, commit)

    def reset(self, key: str, spec: Spec) -> None:
        with self.metrics.time("reset"):
            self.inner.reset(key, spec)

    def acquire(self, key: str, lease_id: str, max_in_flight: int, ttl_us: int) -> bool:
        with self.metrics.time("acquire"):
            return self.inner.acquire(key, lease_id, max_in_flight, ttl_us)

    def release(self, key: str, lease_id: str) -> None:
        with self.metrics.time("release"):
            self.inner.release(key, lease_id)

    def close(self) -> None:
        self.inner.close()


class AsyncInstrumentedStorage(_StorageShell):
    """An :class:`~bisman_ratelimit.backends._urls.AsyncStorage` that times every call."""

    inner: AsyncStorage

    async def check(self, key: str, spec: Spec, cost: int, commit: bool) -> Decision:
        with self.metrics.time("ratelimit"):
            return await self.inner.check(key, spec, cost, commit)

    async def check_many(self, checks: list[Check], commit: bool) -> tuple[bool, list[Decision]]:
        with self.metrics.time("ratelimit"):
            return await self.inner.check_many(checks, commit)

    async def reset(self, key: str, spec: Spec) -> None:
        with self.metrics.time("reset"):
            await self.inner.reset(key, spec)

    async def acquire(self, key: str, lease_id: str, max_in_flight: int, ttl_us: int) -> bool:
        with self.metrics.time("acquire"):
            return await self.inner.acquire(key, lease_id, max_in_flight, ttl_us)

    async def release(self, key: str, lease_id: str) -> None:
        with self.metrics.time("release"):
            await self.inner.release(key, lease_id)

    async def aclose(self) -> None:
        await self.inner.aclose()


class RefundableInstrumentedStorage(InstrumentedStorage):
    """:class:`InstrumentedStorage` of a backend that can give hits back."""

    inner: Any

    def check_timed(self, checks: list[Check], commit: bool) -> tuple[bool, list[Decision], int | None]:
        with self.metrics.time("ratelimit"):
            timed: tuple[bool, list[Decision], int | None] = self.inner.check_timed(checks, commit)
            return timed

    def refund(self, checks: list[Check], at: int | None) -> list[Decision]:
        with self.metrics.time("refund"):
            refunded: list[Decision] = self.inner.refund(checks, at)
            return refunded


class AsyncRefundableInstrumentedStorage(AsyncInstrumentedStorage):
    """:class:`AsyncInstrumentedStorage` of a backend that can give hits back."""

    inner: Any

    async def check_timed(self, checks: list[Check], commit: bool) -> tuple[bool, list[Decision], int | None]:
        with self.metrics.time("ratelimit"):
            timed: tuple[bool, list[Decision], int | None] = await self.inner.check_timed(checks, commit)
            return timed

    async def refund(self, checks: list[Check], at: int | None) -> list[Decision]:
        with self.metrics.time("refund"):
            refunded: list[Decision] = await self.inner.refund(checks, at)
            return refunded


def instrument_storage(storage: Any, *, metrics: CacheMetrics) -> Any:
    """Wrap a sync or async backend in the matching timing shell (decided once, here)."""
    if inspect.iscoroutinefunction(getattr(storage, "check", None)):
        if isinstance(storage, AsyncRefundable):
            return AsyncRefundableInstrumentedStorage(storage, metrics=metrics)
        return AsyncInstrumentedStorage(storage, metrics=metrics)
    if isinstance(storage, Refundable):
        return RefundableInstrumentedStorage(storage, metrics=metrics)
    return InstrumentedStorage(storage, metrics=metrics)


def _found(value: Any) -> HitLabel:
    return "miss" if value is None else "hit"


def _nonempty(value: Any) -> HitLabel:
    return "hit" if value else "miss"


def _any_found(values: Any) -> HitLabel:
    return "hit" if any(v is not None for v in values) else "miss"


def _not_applicable(value: Any) -> HitLabel:
    return "n/a"


# (method label, how to read hit or miss from the answer)
_Entry = tuple[str, Callable[[Any], HitLabel]]

# client attribute or command name -> its entry
COMMANDS: dict[str, _Entry] = {
    "get": ("get", _found),
    "getex": ("get", _found),
    "hget": ("hget", _found),
    "hgetall": ("hgetall", _nonempty),
    "mget": ("mget", _any_found),
    "exists": ("exists", _nonempty),
    "lrange": ("lrange", _nonempty),
    "smembers": ("smembers", _nonempty),
    "set": ("set", _not_applicable),
    "setex": ("set", _not_applicable),
    "psetex": ("set", _not_applicable),
    "incr": ("incr", _not_applicable),
    "incrby": ("incr", _not_applicable),
    "decr": ("incr", _not_applicable),
    "decrby": ("incr", _not_applicable),
    "evalsha": ("evalsha", _not_applicable),
    "eval": ("eval", _not_applicable),
    "delete": ("delete", _not_applicable),
    "del": ("delete", _not_applicable),
    "unlink": ("delete", _not_applicable),
    "expire": ("expire", _not_applicable),
    "pexpire": ("expire", _not_applicable),
    "hset": ("hset", _not_applicable),
    "hdel": ("hdel", _not_applicable),
    "lpush": ("lpush", _not_applicable),
    "ltrim": ("ltrim", _not_applicable),
    "sadd": ("sadd", _not_applicable),
    "srem": ("srem", _not_applicable),
}
"""Client methods that :class:`InstrumentedRedis` times, and their ``method`` label."""


class InstrumentedRedis:
    """A Redis client whose data commands are timed into ``app_cache_op_duration_seconds``.

    Works for ``redis.Redis`` and ``redis.asyncio.Redis`` alike: a wrapped
    call that returns an awaitable is timed when that awaitable completes.
    ``execute_command("EVALSHA", ...)`` is timed like ``evalsha(...)``.
    """

    def __init__(self, client: Any, *, metrics: CacheMetrics) -> None:
        self.client = client
        self.metrics = metrics

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if name == "execute_command":
            timed = self._timed(_by_command_name, attr)
        else:
            entry = COMMANDS.get(name)
            if entry is None or not callable(attr):
                return attr
            timed = self._timed(lambda args: entry, attr)
        # Cached on the instance: later lookups skip __getattr__.
        self.__dict__[name] = timed
        return timed

    def _timed(self, lookup: Callable[[tuple[Any, ...]], _Entry | None], call: Callable[..., Any]) -> Any:
        observe = self.metrics.observe
        clock = time.perf_counter

        async def finish(pending: Awaitable[Any], entry: _Entry, start: float) -> Any:
            try:
                result = await pending
            except BaseException:
                observe(entry[0], "n/a", clock() - start)
                raise
            observe(entry[0], entry[1](result), clock() - start)
            return result

        def run(*args: Any, **kwargs: Any) -> Any:
            entry = lookup(args)
            if entry is None:
                return call(*args, **kwargs)
            start = clock()
            try:
                result = call(*args, **kwargs)
            except BaseException:
                observe(entry[0], "n/a", clock() - start)
                raise
            if inspect.isawaitable(result):
                return finish(result, entry, start)
            observe(entry[0], entry[1](result), clock() - start)
            return result

        return run

    def __repr__(self) -> str:
        return f"<InstrumentedRedis {self.client!r}>"


def _by_command_name(args: tuple[Any, ...]) -> _Entry | None:
    if not args:
        return None
    name = args[0]
    text = name.decode() if isinstance(name, bytes) else str(name)
    return COMMANDS.get(text.lower())
