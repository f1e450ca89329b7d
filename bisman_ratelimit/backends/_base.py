"""What a storage backend provides, sync and async.

The limiter turns every limit into a :class:`Spec` once; a check is a key,
a spec and a cost, and a backend answers it with a
:class:`~bisman_ratelimit.core._decision.Decision`. Backends see no rate-limit
strings, only whole numbers.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, cast, runtime_checkable

from bisman_ratelimit.core import Decision


class Spec(NamedTuple):
    """One limit under one algorithm, in whole numbers.

    ``capacity`` is the most hits the key can hold: the burst for the bucket
    algorithms, else the amount.
    """

    algorithm: str
    amount: int
    period_us: int
    capacity: int


# (key, spec, cost)
Check = tuple[str, Spec, int]
# (all allowed, decisions)
BatchResult = tuple[bool, list[Decision]]
# (all allowed, decisions, when the hits were consumed: the storage's time
# in microseconds, or None when they cannot be refunded)
GroupResult = tuple[bool, list[Decision], int | None]


@runtime_checkable
class Storage(Protocol):
    """A synchronous backend."""

    def check(self, key: str, spec: Spec, cost: int, commit: bool) -> Decision:
        """Decide one check; consume it if allowed and ``commit``."""

    def check_many(self, checks: list[Check], commit: bool) -> tuple[bool, list[Decision]]:
        """Decide all checks; consume them all if all are allowed and ``commit``."""

    def reset(self, key: str, spec: Spec) -> None: ...

    def acquire(self, key: str, lease_id: str, max_in_flight: int, ttl_us: int) -> bool: ...

    def release(self, key: str, lease_id: str) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class AsyncStorage(Protocol):
    """An asynchronous backend: the methods of :class:`Storage`, awaitable."""

    async def check(self, key: str, spec: Spec, cost: int, commit: bool) -> Decision: ...

    async def check_many(self, checks: list[Check], commit: bool) -> tuple[bool, list[Decision]]: ...

    async def reset(self, key: str, spec: Spec) -> None: ...

    async def acquire(self, key: str, lease_id: str, max_in_flight: int, ttl_us: int) -> bool: ...

    async def release(self, key: str, lease_id: str) -> None: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Refundable(Protocol):
    """A storage whose consumption can be given back (memory, Redis, the fallback in front of it)."""

    def check_timed(self, checks: list[Check], commit: bool) -> GroupResult:
        """``check_many`` that also says when the hits were consumed."""
        ...

    def refund(self, checks: list[Check], at: int | None) -> list[Decision]:
        """Give back hits consumed at ``at``, then look; with ``None``, only look."""
        ...


@runtime_checkable
class AsyncRefundable(Protocol):
    """:class:`Refundable`, awaitable."""

    async def check_timed(self, checks: list[Check], commit: bool) -> GroupResult: ...

    async def refund(self, checks: list[Check], at: int | None) -> list[Decision]: ...


class AsyncAdapter:
    """Serves a non-blocking sync backend (memory) to async code."""

    def __init__(self, storage: Storage) -> None:
        self.sync = storage
        # A runtime Protocol check walks the protocol's members: once here, not per request.
        self._refundable = isinstance(storage, Refundable)

    async def check(self, key: str, spec: Spec, cost: int, commit: bool) -> Decision:
        return self.sync.check(key, spec, cost, commit)

    async def check_many(self, checks: list[Check], commit: bool) -> tuple[bool, list[Decision]]:
        return self.sync.check_many(checks, commit)

    async def reset(self, key: str, spec: Spec) -> None:
        self.sync.reset(key, spec)

    async def acquire(self, key: str, lease_id: str, max_in_flight: int, ttl_us: int) -> bool:
        return self.sync.acquire(key, lease_id, max_in_flight, ttl_us)

    async def release(self, key: str, lease_id: str) -> None:
        self.sync.release(key, lease_id)

    async def check_timed(self, checks: list[Check], commit: bool) -> GroupResult:
        if self._refundable:
            return cast(Refundable, self.sync).check_timed(checks, commit)
        ok, decisions = self.sync.check_many(checks, commit)
        return ok, decisions, None

    async def refund(self, checks: list[Check], at: int | None) -> list[Decision]:
        if self._refundable:
            return cast(Refundable, self.sync).refund(checks, at)
        return self.sync.check_many(checks, False)[1]

    async def aclose(self) -> None:
        self.sync.close()
