"""``Limiter`` and ``AsyncLimiter``: the public face of the engine.

Both share :class:`_LimiterBase`, which turns arguments into backend specs
and validates them without I/O; the two classes only differ in whether they
await the backend.
"""

from __future__ import annotations

import inspect
import math
import secrets
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeGuard, cast

from bisman_ratelimit.backends import (
    AsyncAdapter,
    AsyncRefundable,
    AsyncStorage,
    Check,
    MemoryStorage,
    Refundable,
    Spec,
    Storage,
    storage_from_url,
)
from bisman_ratelimit.core import (
    ALGORITHMS,
    DEFAULT_ALGORITHM,
    Algorithm,
    Decision,
    InvalidArgument,
    InvalidLimit,
    Limit,
    LimitLike,
    MultiDecision,
    most_restrictive,
    parse_limits,
)

if TYPE_CHECKING:
    from typing import TypeAlias

    import redis
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.cluster

    # The redis-py clients the constructors wrap in a Redis storage of their own.
    SyncClient: TypeAlias = redis.Redis | redis.cluster.RedisCluster
    AsyncClient: TypeAlias = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster


_BUCKETS = ("token_bucket", "gcra")
_CACHE_SIZE = 1024

# hit_many() entries: (key, limit) or (key, limit, algorithm) or (key, limit, algorithm, cost)
ManyEntry = tuple[str, LimitLike] | tuple[str, LimitLike, Algorithm] | tuple[str, LimitLike, Algorithm, int]


def _is_async_storage(storage: object) -> TypeGuard[AsyncStorage]:
    return isinstance(storage, AsyncStorage) and inspect.iscoroutinefunction(storage.check)


def _spec(limit: Limit, algorithm: str) -> Spec:
    capacity = limit.capacity if algorithm in _BUCKETS else limit.amount
    return Spec(algorithm, limit.amount, limit.period_us, capacity)


def _one_per_window(specs: Iterable[Spec], what: str) -> None:
    """Refuse two limits that a storage would count under one key.

    A key's limits are stored apart by algorithm and window only (see
    :func:`~bisman_ratelimit.core.limit_tag`), so two amounts over one
    window would share a counter.
    """
    seen: dict[tuple[str, int], Spec] = {}
    for spec in specs:
        other = seen.setdefault((spec.algorithm, spec.period_us), spec)
        if other != spec:
            raise InvalidLimit(
                f"{what} has two {spec.algorithm} limits over one window ({other.amount} and "
                f"{spec.amount} per {spec.period_us / 1e6:g} s): they would share a counter; "
                "keep the stricter one, or count them under different keys"
            )


def _merge(checks: list[Check]) -> tuple[list[Check], list[int]]:
    """One check per (key, limit), of the summed cost; and each check's place among them."""
    merged: list[Check] = []
    place: dict[tuple[str, Spec], int] = {}
    where: list[int] = []
    windows: dict[str, list[Spec]] = {}
    for key, spec, cost in checks:
        at = place.get((key, spec))
        if at is None:
            at = place[key, spec] = len(merged)
            merged.append((key, spec, cost))
        else:
            merged[at] = (key, spec, merged[at][2] + cost)
        where.append(at)
    for key, spec, _ in merged:
        windows.setdefault(key, []).append(spec)
    for key, specs in windows.items():
        _one_per_window(specs, f"hit_many() key {key!r}")
    for key, spec, cost in merged:
        if cost > spec.capacity:
            raise InvalidLimit(
                f"hit_many() entries for key {key!r} add up to cost {cost} under one limit, "
                f"more than it can ever allow at once ({spec.capacity})"
            )
    return merged, where


def _answers(decisions: list[Decision], where: list[int] | None) -> tuple[Decision, ...]:
    return tuple(decisions) if where is None else tuple(decisions[at] for at in where)


class _LimiterBase:
    def __init__(self) -> None:
        # (limit, algorithm) -> (specs, largest cost they accept)
        self._specs: dict[tuple[Any, str], tuple[tuple[Spec, ...], int]] = {}

    def _resolve(self, limit: LimitLike, algorithm: str) -> tuple[tuple[Spec, ...], int]:
        try:
            return self._specs[(limit, algorithm)]
        except KeyError:
            pass
        except TypeError:  # an unhashable list of limits
            return self._build(limit, algorithm)
        resolved = self._build(limit, algorithm)
        if len(self._specs) >= _CACHE_SIZE:
            self._specs.clear()
        self._specs[(limit, algorithm)] = resolved
        return resolved

    @staticmethod
    def _build(limit: LimitLike, algorithm: str) -> tuple[tuple[Spec, ...], int]:
        if algorithm not in ALGORITHMS:
            raise InvalidArgument(
                f"unknown algorithm {algorithm!r}: expected one of {', '.join(sorted(ALGORITHMS))}"
            )
        # A limit given twice ("10/minute;10/minute") is one limit.
        specs = tuple(dict.fromkeys(_spec(item, algorithm) for item in parse_limits(limit)))
        _one_per_window(specs, f"limit {limit!r}")
        return specs, min(spec.capacity for spec in specs)

    def _prepare(self, key: str, limit: LimitLike, algorithm: str, cost: int) -> tuple[Spec, ...]:
        try:
            specs, max_cost = self._specs[limit, algorithm]
        except (KeyError, TypeError):
            specs, max_cost = self._resolve(limit, algorithm)
        if type(key) is not str or not key or type(cost) is not int or not 0 < cost <= max_cost:
            self._reject(key, limit, cost, max_cost)
        return specs

    @staticmethod
    def _reject(key: object, limit: LimitLike, cost: object, max_cost: int) -> None:
        if type(key) is not str or not key:
            raise InvalidArgument(f"key must be a non-empty string, got {key!r}")
        if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
            raise InvalidArgument(f"cost must be a whole number >= 1, got {cost!r}")
        if cost > max_cost:
            raise InvalidLimit(
                f"cost {cost} exceeds what limit {limit!r} can ever allow at once ({max_cost})"
            )

    def _prepare_many(self, entries: Iterable[ManyEntry]) -> tuple[list[Check], list[int] | None]:
        """The checks of a ``hit_many``, and where each entry's answer is among them.

        ``None`` means one answer per check, in order; else repeats of one
        key under one limit became a single check of their summed cost (so
        that all or nothing holds for them too), and the list maps every
        limit of every entry to its check.
        """
        checks: list[Check] = []
        key: str
        limit: LimitLike
        algorithm: str
        cost: int
        for index, entry in enumerate(entries):
            size = len(entry) if isinstance(entry, (tuple, list)) else 0
            if size == 2:
                key, limit, algorithm, cost = entry[0], entry[1], DEFAULT_ALGORITHM, 1
            elif size == 3:
                key, limit, algorithm, cost = entry[0], entry[1], entry[2], 1  # type: ignore[misc]
            elif size == 4:
                key, limit, algorithm, cost = entry  # type: ignore[misc]
            else:
                raise InvalidArgument(
                    f"hit_many() entry {index} must be (key, limit[, algorithm[, cost]]), got {entry!r}"
                )
            specs = self._prepare(key, limit, algorithm, cost)
            if len(specs) == 1:
                checks.append((key, specs[0], cost))
            else:
                checks += [(key, spec, cost) for spec in specs]
        if not checks:
            raise InvalidArgument("hit_many() needs at least one (key, limit) entry")
        if len(checks) > 1 and len({(key, spec[0], spec[2]) for key, spec, _ in checks}) < len(checks):
            return _merge(checks)
        return checks, None

    def _refund_checks(
        self, entries: Iterable[ManyEntry], at: int | None
    ) -> tuple[list[Check], list[int] | None]:
        if at is not None and (isinstance(at, bool) or not isinstance(at, int) or at < 0):
            raise InvalidArgument(
                f"at must be the MultiDecision.at of a hit_many() (an int or None), got {at!r}"
            )
        return self._prepare_many(entries)

    @staticmethod
    def _lease_args(key: str, max_in_flight: int, ttl: float) -> tuple[str, int]:
        if type(key) is not str or not key:
            raise InvalidArgument(f"key must be a non-empty string, got {key!r}")
        if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise InvalidArgument(f"max_in_flight must be a whole number >= 1, got {max_in_flight!r}")
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not (math.isfinite(ttl) and ttl > 0):
            raise InvalidArgument(f"lease ttl must be a positive number of seconds, got {ttl!r}")
        return secrets.token_hex(16), max(1, round(ttl * 1_000_000))


class Limiter(_LimiterBase):
    """Rate limits and concurrency leases, synchronously.

    ``Limiter()`` keeps counters in memory; ``Limiter(redis.Redis(...))`` or
    :meth:`from_url` puts them on Redis.
    """

    def __init__(self, storage: Storage | SyncClient | None = None, *, prefix: str = "") -> None:
        super().__init__()
        if storage is None:
            storage = MemoryStorage()
        else:
            from bisman_ratelimit.backends import RedisStorage, is_async_client, is_sync_client

            if is_sync_client(storage):
                storage = RedisStorage(storage, prefix=prefix, blocked_cache=True)
            elif is_async_client(storage) or _is_async_storage(storage):
                raise InvalidArgument("Limiter needs a synchronous client or storage; use AsyncLimiter")
            elif not isinstance(storage, Storage):
                raise InvalidArgument(f"Limiter needs a redis.Redis client or a storage, got {storage!r}")
        self.storage: Storage = storage
        # Hits on a storage that cannot give them back are never refunded.
        self._timed = isinstance(storage, Refundable)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Limiter:
        """``memory://``, ``redis://host:port/db``, ``rediss://...`` (``?prefix=`` goes before every key)."""
        return cls(storage_from_url(url, **options))

    def hit(
        self, key: str, limit: LimitLike, algorithm: Algorithm = DEFAULT_ALGORITHM, cost: int = 1
    ) -> Decision:
        """Count a hit of ``cost`` against ``limit`` if it is allowed."""
        specs = self._prepare(key, limit, algorithm, cost)
        if len(specs) == 1:
            return self.storage.check(key, specs[0], cost, True)
        return most_restrictive(self.storage.check_many([(key, s, cost) for s in specs], True)[1])

    def peek(
        self, key: str, limit: LimitLike, algorithm: Algorithm = DEFAULT_ALGORITHM, cost: int = 1
    ) -> Decision:
        """Whether a hit would be allowed, and what is left now; consumes nothing."""
        specs = self._prepare(key, limit, algorithm, cost)
        return most_restrictive(self.storage.check_many([(key, s, cost) for s in specs], False)[1])

    def reset(self, key: str, limit: LimitLike, algorithm: Algorithm = DEFAULT_ALGORITHM) -> None:
        """Forget everything counted for ``key`` under ``limit``."""
        for spec in self._prepare(key, limit, algorithm, 1):
            self.storage.reset(key, spec)

    def hit_many(self, entries: Sequence[ManyEntry]) -> MultiDecision:
        """Check several limits at once: all are consumed, or none is."""
        checks, where = self._prepare_many(entries)
        if self._timed:
            allowed, decisions, at = cast(Refundable, self.storage).check_timed(checks, True)
            return MultiDecision(allowed, _answers(decisions, where), at if allowed else None)
        allowed, decisions = self.storage.check_many(checks, True)
        return MultiDecision(allowed, _answers(decisions, where))

    def refund_many(self, entries: Sequence[ManyEntry], at: int | None) -> MultiDecision:
        """Give back what :meth:`hit_many` consumed for ``entries``, then look.

        ``at`` is that call's :attr:`MultiDecision.at`. The entries may be
        some of those hit. A hit whose window has passed stays as it is;
        with ``at=None`` (nothing consumed, or a storage that cannot give
        hits back) this only looks.
        """
        checks, where = self._refund_checks(entries, at)
        if self._timed:
            decisions = cast(Refundable, self.storage).refund(checks, at)
        else:
            decisions = self.storage.check_many(checks, False)[1]
        return MultiDecision(all(decisions), _answers(decisions, where))

    def peek_many(self, entries: Sequence[ManyEntry]) -> MultiDecision:
        """What :meth:`hit_many` would answer, consuming nothing."""
        checks, where = self._prepare_many(entries)
        allowed, decisions = self.storage.check_many(checks, False)
        return MultiDecision(allowed, _answers(decisions, where))

    def acquire(self, key: str, max_in_flight: int, ttl: float) -> Lease | None:
        """Take one of ``max_in_flight`` slots for at most ``ttl`` seconds, or ``None`` if full."""
        lease_id, ttl_us = self._lease_args(key, max_in_flight, ttl)
        if self.storage.acquire(key, lease_id, max_in_flight, ttl_us):
            return Lease(self, key, lease_id)
        return None

    def warm(self, connections: int | None = None) -> None:
        """Open ``connections`` to Redis now (default: the pool's size, at most 64), so that the
        first requests find them open; nothing for storages without connections.

        Raises ``StorageError`` when Redis cannot be reached.
        """
        warm = getattr(self.storage, "warm", None)
        if warm is not None:
            warm(connections)

    def close(self) -> None:
        self.storage.close()

    def __enter__(self) -> Limiter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncLimiter(_LimiterBase):
    """The methods of :class:`Limiter`, awaitable."""

    def __init__(
        self, storage: AsyncStorage | MemoryStorage | AsyncClient | None = None, *, prefix: str = ""
    ) -> None:
        super().__init__()
        if storage is None:
            storage = AsyncAdapter(MemoryStorage())
        elif isinstance(storage, MemoryStorage):
            storage = AsyncAdapter(storage)
        else:
            from bisman_ratelimit.backends import AsyncRedisStorage, is_async_client, is_sync_client

            if is_async_client(storage):
                storage = AsyncRedisStorage(storage, prefix=prefix, blocked_cache=True)
            elif is_sync_client(storage):
                raise InvalidArgument(
                    "AsyncLimiter needs a redis.asyncio.Redis client: a synchronous one would block the loop"
                )
            elif not _is_async_storage(storage):
                raise InvalidArgument(
                    f"AsyncLimiter needs a redis.asyncio.Redis client or an async storage, got {storage!r}"
                )
        self.storage: AsyncStorage = storage
        self._timed = isinstance(storage, AsyncRefundable)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> AsyncLimiter:
        """``memory://``, ``redis://host:port/db``, ``rediss://...`` (``?prefix=`` goes before every key)."""
        return cls(storage_from_url(url, asyncio=True, **options))

    async def hit(
        self, key: str, limit: LimitLike, algorithm: Algorithm = DEFAULT_ALGORITHM, cost: int = 1
    ) -> Decision:
        specs = self._prepare(key, limit, algorithm, cost)
        if len(specs) == 1:
            return await self.storage.check(key, specs[0], cost, True)
        return most_restrictive((await self.storage.check_many([(key, s, cost) for s in specs], True))[1])

    async def peek(
        self, key: str, limit: LimitLike, algorithm: Algorithm = DEFAULT_ALGORITHM, cost: int = 1
    ) -> Decision:
        specs = self._prepare(key, limit, algorithm, cost)
        return most_restrictive((await self.storage.check_many([(key, s, cost) for s in specs], False))[1])

    async def reset(self, key: str, limit: LimitLike, algorithm: Algorithm = DEFAULT_ALGORITHM) -> None:
        for spec in self._prepare(key, limit, algorithm, 1):
            await self.storage.reset(key, spec)

    async def hit_many(self, entries: Sequence[ManyEntry]) -> MultiDecision:
        checks, where = self._prepare_many(entries)
        if self._timed:
            allowed, decisions, at = await cast(AsyncRefundable, self.storage).check_timed(checks, True)
            return MultiDecision(allowed, _answers(decisions, where), at if allowed else None)
        allowed, decisions = await self.storage.check_many(checks, True)
        return MultiDecision(allowed, _answers(decisions, where))

    async def refund_many(self, entries: Sequence[ManyEntry], at: int | None) -> MultiDecision:
        checks, where = self._refund_checks(entries, at)
        if self._timed:
            decisions = await cast(AsyncRefundable, self.storage).refund(checks, at)
        else:
            decisions = (await self.storage.check_many(checks, False))[1]
        return MultiDecision(all(decisions), _answers(decisions, where))

    async def peek_many(self, entries: Sequence[ManyEntry]) -> MultiDecision:
        checks, where = self._prepare_many(entries)
        allowed, decisions = await self.storage.check_many(checks, False)
        return MultiDecision(allowed, _answers(decisions, where))

    async def acquire(self, key: str, max_in_flight: int, ttl: float) -> AsyncLease | None:
        lease_id, ttl_us = self._lease_args(key, max_in_flight, ttl)
        if await self.storage.acquire(key, lease_id, max_in_flight, ttl_us):
            return AsyncLease(self, key, lease_id)
        return None

    async def warm(self, connections: int | None = None) -> None:
        """:meth:`Limiter.warm`, awaitable."""
        warm = getattr(self.storage, "warm", None)
        if warm is not None:
            await warm(connections)

    async def aclose(self) -> None:
        await self.storage.aclose()

    async def __aenter__(self) -> AsyncLimiter:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class Lease:
    """A concurrency slot; release it, or let it expire after its TTL."""

    def __init__(self, limiter: Limiter, key: str, lease_id: str) -> None:
        self.limiter = limiter
        self.key = key
        self.id = lease_id

    def release(self) -> None:
        self.limiter.storage.release(self.key, self.id)

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<Lease key={self.key!r}>"


class AsyncLease:
    """A concurrency slot taken through :class:`AsyncLimiter`."""

    def __init__(self, limiter: AsyncLimiter, key: str, lease_id: str) -> None:
        self.limiter = limiter
        self.key = key
        self.id = lease_id

    async def release(self) -> None:
        await self.limiter.storage.release(self.key, self.id)

    async def __aenter__(self) -> AsyncLease:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.release()

    def __repr__(self) -> str:
        return f"<AsyncLease key={self.key!r}>"
