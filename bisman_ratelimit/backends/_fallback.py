"""A backend that outlives its primary: Redis first, this process when Redis fails.

Every call asks a :class:`~bisman_ratelimit.core._breaker.CircuitBreaker` whether
to try the primary. A call that fails (any
:class:`~bisman_ratelimit.core._errors.StorageError`: unreachable, timed out,
answered with an error) counts against the breaker and is answered by the
outage reaction; so is every call while the breaker is open. No exception
from the primary reaches the caller. A call that found no free connection
in time (:class:`~bisman_ratelimit.core._errors.StorageBusy`) never reached
Redis: it is answered by the reaction too, and the breaker does not count it.

The reaction is the :class:`~bisman_ratelimit.core._outage.OutagePolicy`
answer for the key (``on_outage``: one reaction, or a policy by key
namespace; ``on_outage_by_prefix`` adds namespaces to a single reaction),
the same policy the web plugins ask:

``"fallback"``
    local counters in this process decide (the default). With
    ``instances=N`` each process allows ``amount // N`` (at least 1), so N
    processes together stay within the limit; a cost larger than the local
    capacity is capped to it.
``"open"``
    allowed.
``"closed"``
    denied, with ``retry_after`` the time until Redis is tried again (at
    least the breaker's ``open_for``).

An outage is no fresh budget for a client Redis had just refused: a key
in the primary's blocked-keys cache stays denied until its
``retry_after``, and its local counter starts as used up as Redis left it,
so it refills at the limit's own pace afterwards.

A primary that answers but refuses writes (``READONLY``: demoted to a
replica; ``NOREPLICAS``: cut off from its replicas) can still say no: while
it does, a hit is first peeked there, and only one that it would allow goes
to the local counters.

Local counters never reach Redis: when the breaker closes, decisions come
from Redis's own counters, which the outage did not touch, and the local
ones age out. The breaker's state changes are logged once each (WARNING
when it opens, INFO otherwise), never each request.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar, cast

from bisman_ratelimit.backends._base import (
    AsyncRefundable,
    AsyncStorage,
    BatchResult,
    Check,
    GroupResult,
    Refundable,
    Spec,
    Storage,
)
from bisman_ratelimit.backends._blocked import BlockedKeys
from bisman_ratelimit.backends._memory import MemoryStorage
from bisman_ratelimit.core import (
    CircuitBreaker,
    Decision,
    InvalidArgument,
    OutagePolicy,
    OutageReaction,
    StorageBusy,
    StorageError,
    StorageReadOnly,
    Transition,
    make_decision,
)

T = TypeVar("T")

_log = logging.getLogger("bisman_ratelimit.fallback")


def outage_policy(
    on_outage: OutageReaction | OutagePolicy = "fallback",
    by_prefix: Mapping[str, OutageReaction] | None = None,
) -> OutagePolicy:
    """The policy of the two ways of saying it: ``on_outage``, and namespaces added to a single reaction."""
    if not by_prefix:
        return OutagePolicy.of(on_outage)
    if isinstance(on_outage, OutagePolicy):
        raise InvalidArgument("give on_outage as an OutagePolicy or on_outage_by_prefix, not both")
    return OutagePolicy(default=on_outage, by_namespace=by_prefix)


class _FallbackBase:
    """Breaker bookkeeping and the local answers: everything that does no I/O on the primary."""

    def __init__(
        self,
        primary: Any,
        *,
        local: MemoryStorage | None = None,
        breaker: CircuitBreaker | None = None,
        on_outage: OutageReaction | OutagePolicy = "fallback",
        on_outage_by_prefix: Mapping[str, OutageReaction] | None = None,
        instances: int = 1,
        logger: logging.Logger | None = None,
    ) -> None:
        if isinstance(instances, bool) or not isinstance(instances, int) or instances < 1:
            raise InvalidArgument(f"instances must be a whole number >= 1, got {instances!r}")
        if local is not None and not isinstance(local, MemoryStorage):
            raise InvalidArgument(f"the local fallback must be a MemoryStorage, got {local!r}")
        self.primary = primary
        self.local = local if local is not None else MemoryStorage()
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        self.instances = instances
        self.policy = outage_policy(on_outage, on_outage_by_prefix)
        self._logger = logger or _log
        self.breaker.add_listener(self._log_transition)
        # Calls answered without the primary, for metrics.
        self.answered_locally = 0
        # Either protocol: they only differ in whether the methods are awaited.
        self._timed = isinstance(primary, Refundable)
        # The primary's blocked-keys cache answers without Redis, so it is
        # asked before the breaker: such answers must not count as probes.
        cached = getattr(primary, "cached", None)
        self._cached: Callable[[list[Check]], BatchResult | None] = cached if callable(cached) else _no_cache
        # Keys Redis denied last: they stay denied when the local counters take over.
        blocked = getattr(primary, "blocked", None)
        self._blocked: BlockedKeys | None = blocked if isinstance(blocked, BlockedKeys) else None
        # The last failure was READONLY: the primary can still read, so it still denies.
        # Set and cleared by the failures of calls the breaker let through, cleared when it closes.
        self._read_only = False

    def _log_transition(self, change: Transition) -> None:
        if change.new == "closed":
            # Writes work again; a denial the replica answered meanwhile proved nothing either way.
            self._read_only = False
        if change.new == "open":
            self._logger.warning(
                "rate-limit storage unavailable (%s); deciding limits without it for %g s, then probing",
                change.reason,
                self.breaker.open_for,
            )
        elif change.new == "half_open":
            self._logger.info("probing the rate-limit storage again (%s)", change.reason)
        else:
            self._logger.info("rate-limit storage answers again (%s); deciding limits on it", change.reason)

    def local_spec(self, spec: Spec) -> Spec:
        """``spec`` as this process enforces it alone during an outage."""
        n = self.instances
        if n == 1:
            return spec
        return Spec(spec.algorithm, max(1, spec.amount // n), spec.period_us, max(1, spec.capacity // n))

    def _failed(self, exc: StorageError) -> None:
        self._read_only = isinstance(exc, StorageReadOnly)

    def _carried_over(self, key: str, spec: Spec, scaled: Spec, cost: int) -> Decision | None:
        """Redis's recent denial of ``key``, if any, with the local counter made to agree with it."""
        blocked = self._blocked
        denial = blocked.over_limit(key, spec, cost) if blocked else None
        if denial is None:
            return None
        # Used up locally as in Redis: once the denial runs out, the client gets what
        # its limit refills since, not a fresh budget.
        target = denial.remaining * scaled.capacity // spec.capacity
        spare = self.local.check(key, scaled, 1, False).remaining - target
        if spare > 0:
            self.local.check(key, scaled, spare, True)
        return denial

    def _local(self, checks: list[Check], commit: bool) -> BatchResult:
        self.answered_locally += 1
        policy = self.policy
        reactions = [policy.reaction(key) for key, _, _ in checks]
        closed = "closed" in reactions
        local_checks = []
        carried: list[Decision | None] = []
        for (key, spec, cost), reaction in zip(checks, reactions, strict=True):
            if reaction == "fallback":
                scaled = self.local_spec(spec)
                local_checks.append((key, scaled, min(cost, scaled.capacity)))
                carried.append(self._carried_over(key, spec, scaled, cost))
        denied = closed or any(denial is not None for denial in carried)
        ok, local_decisions = (
            self.local.check_many(local_checks, commit and not denied) if local_checks else (True, [])
        )
        answers = iter(zip(local_decisions, carried, strict=True))
        retry_us = round(max(self.breaker.retry_after(), self.breaker.open_for) * 1_000_000)
        decisions = []
        for (key, spec, cost), reaction in zip(checks, reactions, strict=True):
            if reaction == "fallback":
                answer, denial = next(answers)
                decisions.append(answer if denial is None else denial)
            elif reaction == "open":
                decisions.append(
                    make_decision(
                        True, spec.capacity, max(0, spec.capacity - cost), 0, 0, key, spec.algorithm
                    )
                )
            else:
                decisions.append(
                    make_decision(False, spec.capacity, 0, retry_us, retry_us, key, spec.algorithm)
                )
        return ok and not denied, decisions

    def _local_acquire(self, key: str, lease_id: str, max_in_flight: int, ttl_us: int) -> bool:
        self.answered_locally += 1
        reaction = self.policy.reaction(key)
        if reaction != "fallback":
            return reaction == "open"
        return self.local.acquire(key, lease_id, max(1, max_in_flight // self.instances), ttl_us)

    def _local_reset(self, key: str, spec: Spec) -> None:
        self.local.reset(key, self.local_spec(spec))


def _nothing() -> None:
    return None


async def _anothing() -> None:
    return None


async def _ready(value: T) -> T:
    return value


def _no_cache(checks: list[Check]) -> BatchResult | None:
    return None


class FallbackStorage(_FallbackBase):
    """A synchronous primary (a :class:`~.redis.RedisStorage`) with local answers when it fails."""

    primary: Storage

    @property
    def _refundable(self) -> Refundable:
        return cast(Refundable, self.primary)

    def __init__(self, primary: Storage, **options: Any) -> None:
        if not isinstance(primary, Storage) or _is_async(primary):
            raise InvalidArgument(f"FallbackStorage needs a synchronous storage, got {primary!r}")
        super().__init__(primary, **options)

    def _guard(self, call: Callable[[], T], local: Callable[[], T]) -> T:
        ticket = self.breaker.begin()
        if ticket is not None:
            try:
                result = call()
            except StorageBusy:
                self.breaker.abandon(ticket)
            except StorageError as exc:
                self.breaker.failure(ticket, exc)
                self._failed(exc)
            else:
                self.breaker.success(ticket)
                return result
        return local()

    def _outage(self, checks: list[Check], commit: bool) -> BatchResult:
        """The answer without the primary's writes: its own denial while it can read, else local."""
        if commit and self._read_only:
            try:
                peeked = self.primary.check_many(checks, False)
            except StorageError:
                # Busy or gone: this hit is decided locally; the next probe tells which.
                pass
            else:
                if not peeked[0]:
                    return peeked
        return self._local(checks, commit)

    def check(self, key: str, spec: Spec, cost: int, commit: bool) -> Decision:
        cached = self._cached([(key, spec, cost)])
        if cached is not None:
            return cached[1][0]
        return self._guard(
            lambda: self.primary.check(key, spec, cost, commit),
            lambda: self._outage([(key, spec, cost)], commit)[1][0],
        )

    def check_many(self, checks: list[Check], commit: bool) -> BatchResult:
        cached = self._cached(checks)
        if cached is not None:
            return cached
        return self._guard(
            lambda: self.primary.check_many(checks, commit), lambda: self._outage(checks, commit)
        )

    def check_timed(self, checks: list[Check], commit: bool) -> GroupResult:
        """:meth:`check_many` that can be refunded; hits counted locally cannot."""
        if not self._timed:
            ok, decisions = self.check_many(checks, commit)
            return ok, decisions, None
        cached = self._cached(checks)
        if cached is not None:
            return cached[0], cached[1], None
        return self._guard(
            lambda: self._refundable.check_timed(checks, commit),
            lambda: (*self._outage(checks, commit), None),
        )

    def refund(self, checks: list[Check], at: int | None) -> list[Decision]:
        if at is None or not self._timed:
            return self.check_many(checks, False)[1]
        return self._guard(lambda: self._refundable.refund(checks, at), lambda: self._local(checks, False)[1])

    def reset(self, key: str, spec: Spec) -> None:
        self._guard(lambda: self.primary.reset(key, spec), _nothing)
        self._local_reset(key, spec)

    def acquire(self, key: str, lease_id: str, max_in_flight: int, ttl_us: int) -> bool:
        return self._guard(
            lambda: self.primary.acquire(key, lease_id, max_in_flight, ttl_us),
            lambda: self._local_acquire(key, lease_id, max_in_flight, ttl_us),
        )

    def release(self, key: str, lease_id: str) -> None:
        self._guard(lambda: self.primary.release(key, lease_id), _nothing)
        self.local.release(key, lease_id)

    def warm(self, connections: int | None = None) -> None:
        """Open connections to the primary now, if it has any to open."""
        warm = getattr(self.primary, "warm", None)
        if warm is not None:
            warm(connections)

    def close(self) -> None:
        with contextlib.suppress(StorageError):
            self.primary.close()
        self.local.close()


class AsyncFallbackStorage(_FallbackBase):
    """An asynchronous primary (an :class:`~.redis.AsyncRedisStorage`) with local answers when it fails."""

    primary: AsyncStorage

    @property
    def _refundable(self) -> AsyncRefundable:
        return cast(AsyncRefundable, self.primary)

    def __init__(self, primary: AsyncStorage, **options: Any) -> None:
        if not _is_async(primary):
            raise InvalidArgument(f"AsyncFallbackStorage needs an asynchronous storage, got {primary!r}")
        super().__init__(primary, **options)

    async def _guard(self, call: Callable[[], Awaitable[T]], local: Callable[[], Awaitable[T]]) -> T:
        ticket = self.breaker.begin()
        if ticket is not None:
            try:
                result = await call()
            except StorageBusy:
                self.breaker.abandon(ticket)
            except StorageError as exc:
                self.breaker.failure(ticket, exc)
                self._failed(exc)
            else:
                self.breaker.success(ticket)
                return result
        return await local()

    async def _outage(self, checks: list[Check], commit: bool) -> BatchResult:
        """The answer without the primary's writes: its own denial while it can read, else local."""
        if commit and self._read_only:
            try:
                peeked = await self.primary.check_many(checks, False)
            except StorageError:
                # Busy or gone: this hit is decided locally; the next probe tells which.
                pass
            else:
                if not peeked[0]:
                    return peeked
        return self._local(checks, commit)

    async def _outage_one(self, key: str, spec: Spec, cost: int, commit: bool) -> Decision:
        return (await self._outage([(key, spec, cost)], commit))[1][0]

    async def _outage_timed(self, checks: list[Check], commit: bool) -> GroupResult:
        ok, decisions = await self._outage(checks, commit)
        return ok, decisions, None

    async def check(self, key: str, spec: Spec, cost: int, commit: bool) -> Decision:
        cached = self._cached([(key, spec, cost)])
        if cached is not None:
            return cached[1][0]
        return await self._guard(
            lambda: self.primary.check(key, spec, cost, commit),
            lambda: self._outage_one(key, spec, cost, commit),
        )

    async def check_many(self, checks: list[Check], commit: bool) -> BatchResult:
        cached = self._cached(checks)
        if cached is not None:
            return cached
        return await self._guard(
            lambda: self.primary.check_many(checks, commit), lambda: self._outage(checks, commit)
        )

    async def check_timed(self, checks: list[Check], commit: bool) -> GroupResult:
        if not self._timed:
            ok, decisions = await self.check_many(checks, commit)
            return ok, decisions, None
        cached = self._cached(checks)
        if cached is not None:
            return cached[0], cached[1], None
        return await self._guard(
            lambda: self._refundable.check_timed(checks, commit), lambda: self._outage_timed(checks, commit)
        )

    async def refund(self, checks: list[Check], at: int | None) -> list[Decision]:
        if at is None or not self._timed:
            return (await self.check_many(checks, False))[1]
        return await self._guard(
            lambda: self._refundable.refund(checks, at), lambda: _ready(self._local(checks, False)[1])
        )

    async def reset(self, key: str, spec: Spec) -> None:
        await self._guard(lambda: self.primary.reset(key, spec), _anothing)
        self._local_reset(key, spec)

    async def acquire(self, key: str, lease_id: str, max_in_flight: int, ttl_us: int) -> bool:
        return await self._guard(
            lambda: self.primary.acquire(key, lease_id, max_in_flight, ttl_us),
            lambda: _ready(self._local_acquire(key, lease_id, max_in_flight, ttl_us)),
        )

    async def release(self, key: str, lease_id: str) -> None:
        await self._guard(lambda: self.primary.release(key, lease_id), _anothing)
        self.local.release(key, lease_id)

    async def warm(self, connections: int | None = None) -> None:
        """Open connections to the primary now, if it has any to open."""
        warm = getattr(self.primary, "warm", None)
        if warm is not None:
            await warm(connections)

    async def aclose(self) -> None:
        with contextlib.suppress(StorageError):
            await self.primary.aclose()
        self.local.close()


def _is_async(storage: object) -> bool:
    return isinstance(storage, AsyncStorage) and inspect.iscoroutinefunction(storage.check)
