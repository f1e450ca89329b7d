"""Namespace routing: the keys of each namespace on a backend of their own.

The seed keeps ephemeral rate-limit counters on a small Redis of their own
and sessions on another, so that an eviction storm on one cannot log users
out. :class:`RoutingStorage` sends each key to the backend of its longest
matching namespace (``auth:sess`` owns ``auth:sess`` and
``auth:sess:user:1``, not ``auth:session``), else to the default::

    storage = routed_storage(
        {"rl": "redis://limits:6379/0", "auth:sess": "redis://sessions:6379/0"},
        default="redis://limits:6379/0?fallback=memory",
    )

:class:`NamespaceRouter` is the lookup alone, for code that picks a client
by key. A ``hit_many`` whose keys live on several backends runs per backend
and refunds on denial, as across Cluster slots (see :mod:`.cluster`); on a
synchronous router the backends are asked one after another.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from functools import partial
from typing import Any, Generic, TypeVar

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
from bisman_ratelimit.backends._cluster import (
    arun_step,
    grouped_check,
    groups_by,
    run_in_turn,
    run_step,
)
from bisman_ratelimit.core import Decision, InvalidArgument, adrive, drive

T = TypeVar("T")


class NamespaceRouter(Generic[T]):
    """Longest-prefix lookup from a key's namespace to a target."""

    def __init__(self, routes: Mapping[str, T], *, default: T) -> None:
        for prefix in routes:
            if not isinstance(prefix, str) or not prefix or prefix.endswith(":") or prefix.startswith(":"):
                raise InvalidArgument(
                    f"bad namespace {prefix!r} in routes: use 'domain' or 'domain:subdomain'"
                )
        self.routes = dict(routes)
        self.default = default

    def route(self, key: str) -> T:
        routes = self.routes
        end = len(key)
        while end > 0:
            target = routes.get(key[:end])
            if target is not None:
                return target
            end = key.rfind(":", 0, end)
        return self.default


class _RoutingBase:
    def __init__(self, routes: Mapping[str, Any], default: Any, want_async: bool) -> None:
        for where, backend in [*((f"route {p!r}", b) for p, b in routes.items()), ("default", default)]:
            is_async = isinstance(backend, AsyncStorage) and inspect.iscoroutinefunction(backend.check)
            if not isinstance(backend, AsyncStorage if want_async else Storage) or is_async != want_async:
                kind = "an asynchronous" if want_async else "a synchronous"
                raise InvalidArgument(f"{where} must be {kind} storage, got {backend!r}")
        self.router: NamespaceRouter[Any] = NamespaceRouter(routes, default=default)
        # Distinct backends, each closed once.
        self.backends: list[Any] = list({id(b): b for b in [*routes.values(), default]}.values())

    def _split(self, checks: list[Check]) -> tuple[list[Any], list[list[int]]]:
        """The backend of each group, and the groups of check indexes."""
        targets = [self.router.route(key) for key, _, _ in checks]
        groups = groups_by([id(target) for target in targets])
        return [targets[group[0]] for group in groups], groups

    def _refunder(self, checks: list[Check]) -> Any:
        """The backend of all ``checks`` if they have one and it can give hits back, else None.

        Checks spread over backends were consumed at several times, so
        they are not refunded (their refund only looks).
        """
        backend = self.router.route(checks[0][0])
        if not isinstance(backend, Refundable) or any(
            self.router.route(key) is not backend for key, _, _ in checks[1:]
        ):
            return None
        return backend


class RoutingStorage(_RoutingBase):
    """Synchronous storages chosen by key namespace."""

    def __init__(self, routes: Mapping[str, Storage], *, default: Storage) -> None:
        super().__init__(routes, default, want_async=False)

    def check(self, key: str, spec: Spec, cost: int, commit: bool) -> Decision:
        backend: Storage = self.router.route(key)
        return backend.check(key, spec, cost, commit)

    def check_many(self, checks: list[Check], commit: bool) -> BatchResult:
        backends, groups = self._split(checks)
        if len(groups) == 1:
            result: BatchResult = backends[0].check_many(checks, commit)
            return result

        def check(group: int, part: list[Check], commit: bool) -> GroupResult:
            backend = backends[group]
            if isinstance(backend, Refundable):
                timed: GroupResult = backend.check_timed(part, commit)
                return timed
            ok, decisions = backend.check_many(part, commit)
            return ok, decisions, None

        def refund(group: int, part: list[Check], at: int | None) -> list[Decision]:
            backend = backends[group]
            if at is not None and isinstance(backend, Refundable):
                refunded: list[Decision] = backend.refund(part, at)
                return refunded
            looked: list[Decision] = backend.check_many(part, False)[1]
            return looked

        return drive(
            grouped_check(checks, groups, commit),
            partial(run_step, check=check, refund=refund, run_all=run_in_turn),
        )

    def check_timed(self, checks: list[Check], commit: bool) -> GroupResult:
        backend = self._refunder(checks)
        if backend is not None:
            timed: GroupResult = backend.check_timed(checks, commit)
            return timed
        ok, decisions = self.check_many(checks, commit)
        return ok, decisions, None

    def refund(self, checks: list[Check], at: int | None) -> list[Decision]:
        backend = self._refunder(checks) if at is not None else None
        if backend is not None:
            refunded: list[Decision] = backend.refund(checks, at)
            return refunded
        return self.check_many(checks, False)[1]

    def reset(self, key: str, spec: Spec) -> None:
        self.router.route(key).reset(key, spec)

    def acquire(self, key: str, lease_id: str, max_in_flight: int, ttl_us: int) -> bool:
        acquired: bool = self.router.route(key).acquire(key, lease_id, max_in_flight, ttl_us)
        return acquired

    def release(self, key: str, lease_id: str) -> None:
        self.router.route(key).release(key, lease_id)

    def close(self) -> None:
        for backend in self.backends:
            backend.close()


class AsyncRoutingStorage(_RoutingBase):
    """Asynchronous storages chosen by key namespace."""

    def __init__(self, routes: Mapping[str, AsyncStorage], *, default: AsyncStorage) -> None:
        super().__init__(routes, default, want_async=True)

    async def check(self, key: str, spec: Spec, cost: int, commit: bool) -> Decision:
        backend: AsyncStorage = self.router.route(key)
        return await backend.check(key, spec, cost, commit)

    async def check_many(self, checks: list[Check], commit: bool) -> BatchResult:
        backends, groups = self._split(checks)
        if len(groups) == 1:
            result: BatchResult = await backends[0].check_many(checks, commit)
            return result

        async def check(group: int, part: list[Check], commit: bool) -> GroupResult:
            backend = backends[group]
            if isinstance(backend, AsyncRefundable):
                timed: GroupResult = await backend.check_timed(part, commit)
                return timed
            ok, decisions = await backend.check_many(part, commit)
            return ok, decisions, None

        async def refund(group: int, part: list[Check], at: int | None) -> list[Decision]:
            backend = backends[group]
            if at is not None and isinstance(backend, AsyncRefundable):
                refunded: list[Decision] = await backend.refund(part, at)
                return refunded
            looked: list[Decision] = (await backend.check_many(part, False))[1]
            return looked

        return await adrive(
            grouped_check(checks, groups, commit), partial(arun_step, check=check, refund=refund)
        )

    async def check_timed(self, checks: list[Check], commit: bool) -> GroupResult:
        backend = self._refunder(checks)
        if backend is not None:
            timed: GroupResult = await backend.check_timed(checks, commit)
            return timed
        ok, decisions = await self.check_many(checks, commit)
        return ok, decisions, None

    async def refund(self, checks: list[Check], at: int | None) -> list[Decision]:
        backend = self._refunder(checks) if at is not None else None
        if backend is not None:
            refunded: list[Decision] = await backend.refund(checks, at)
            return refunded
        return (await self.check_many(checks, False))[1]

    async def reset(self, key: str, spec: Spec) -> None:
        await self.router.route(key).reset(key, spec)

    async def acquire(self, key: str, lease_id: str, max_in_flight: int, ttl_us: int) -> bool:
        acquired: bool = await self.router.route(key).acquire(key, lease_id, max_in_flight, ttl_us)
        return acquired

    async def release(self, key: str, lease_id: str) -> None:
        await self.router.route(key).release(key, lease_id)

    async def aclose(self) -> None:
        for backend in self.backends:
            await backend.aclose()


def routed_storage(
    routes: Mapping[str, str], *, default: str, asyncio: bool = False, **options: Any
) -> RoutingStorage | AsyncRoutingStorage:
    """A router over storages built from URLs; one storage per distinct URL.

    ``options`` go to every :func:`~bisman_ratelimit.backends._urls.storage_from_url` call.
    """
    from bisman_ratelimit.backends._urls import storage_from_url

    built: dict[str, Any] = {}

    def storage(url: str) -> Any:
        if url not in built:
            built[url] = storage_from_url(url, asyncio=asyncio, **options)
        return built[url]

    mapped = {prefix: storage(url) for prefix, url in routes.items()}
    if asyncio:
        return AsyncRoutingStorage(mapped, default=storage(default))
    return RoutingStorage(mapped, default=storage(default))
