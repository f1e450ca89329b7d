"""Feature flags under ``flags:config``: persistent, typed, cached per process.

All flags live in one hash, flag name -> typed value (no TTL)::

    flags:config             hash: <name> -> {"type": "bool"|"str"|"json", "value": ...}
    flags:config:history:{flags:config}
                             list, newest first: {"name", "by", "at", "old", "new"}

Writes go only through :class:`FlagAdmin` (and the ``bisman-ratelimit
flags`` command and the admin panel); each write that changes a flag
records who made it, when, and the old and new values in the history,
which keeps the last ``history_size`` changes, and publishes the flag's
name on the ``flags:config`` channel. Request code reads through :class:`Flags`,
which serves a snapshot of every flag from process memory and reloads it
when a change is published, when its subscription reconnects (a message
may have been missed), and at least every ``max_age`` seconds. A change is
thus seen by every process at its next read after the message arrives,
and never later than ``max_age``.

A field of the hash that this library did not write (``HSET flags:config
darkMode true``, say) is skipped by readers, logged once per process, and
listed by :meth:`FlagAdmin.foreign` and ``flags list``; the other flags
keep working.

If Redis cannot be reached, :class:`Flags` keeps serving the last
snapshot it loaded and tries again every ``retry_interval`` seconds; with
no snapshot yet it raises :class:`~bisman_ratelimit.core._errors.StorageUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar, cast, get_args

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

from bisman_ratelimit.backends import is_cluster_client, translate_errors
from bisman_ratelimit.core import InvalidArgument, StorageResponseError, StorageUnavailable, TTLPolicyError
from bisman_ratelimit.stores._backend import (
    AsyncClient,
    AsyncMemoryRunner,
    AsyncStoreShell,
    Call,
    Flow,
    MemoryBackend,
    MemorySubscription,
    Op,
    ShellBase,
    StoreShell,
    SyncClient,
    store_script,
)
from bisman_ratelimit.stores._common import encode_json, positive_int, positive_seconds, text, valid_prefix
from bisman_ratelimit.stores._namespaces import NamespaceRegistry, default_registry

FlagType = Literal["bool", "str", "json"]
FLAG_TYPES: tuple[str, ...] = get_args(FlagType)

Sub = TypeVar("Sub")

DEFAULT_HISTORY_SIZE = 100

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclass(frozen=True)
class Flag:
    """A feature flag's name, type and value."""

    name: str
    type: FlagType
    value: Any


@dataclass(frozen=True)
class FlagChange:
    """One change in the flags' history: ``old`` is ``None`` for a new flag, ``new`` for a deletion.

    ``at`` is the server's time, in seconds since the epoch. A value this
    library did not write reads as ``None``.
    """

    name: str
    by: str
    at: float
    old: Flag | None
    new: Flag | None


def parse_flag_value(raw: str, flag_type: str) -> Any:
    """The value written as text (as on the command line) for ``flag_type``."""
    if flag_type == "bool":
        lowered = raw.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise InvalidArgument(f"bad bool flag value {raw!r}: use true/false, on/off, yes/no or 1/0")
    if flag_type == "str":
        return raw
    if flag_type == "json":
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise InvalidArgument(f"bad JSON flag value {raw!r}: {exc}") from None
    raise InvalidArgument(f"unknown flag type {flag_type!r}: expected one of {', '.join(FLAG_TYPES)}")


def _name(name: object) -> str:
    if not isinstance(name, str) or not name or len(name) > 200 or not name.isprintable():
        raise InvalidArgument(f"a flag name must be 1 to 200 printable characters, got {name!r}")
    return name


def _by(by: object) -> str:
    if not isinstance(by, str) or not by or len(by) > 200 or not by.isprintable():
        raise InvalidArgument(f"who changes a flag (by=) must be 1 to 200 printable characters, got {by!r}")
    return by


def _infer(value: Any) -> FlagType:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "str"
    return "json"


_log = logging.getLogger("bisman_ratelimit.flags")


class FlagsCore:
    """Keys, arguments and decoding for feature flags; no I/O."""

    def __init__(
        self,
        *,
        key: str = "flags:config",
        registry: NamespaceRegistry = default_registry,
        history_size: int = DEFAULT_HISTORY_SIZE,
    ) -> None:
        self.key = valid_prefix("key", key)
        # Under the flags' namespace (the namespace tools count, flush and
        # back it up with the flags) and tagged with the flags' key: on a
        # Cluster both are in one slot, for the one script that writes them.
        self.history_key = self.key + ":history:{" + self.key + "}"
        self.history_size = positive_int("history_size", history_size)
        self.channel = self.key
        self.registry = registry
        self._check_policy()
        self._reported: set[str] = set()

    def _check_policy(self) -> None:
        if self.registry.ttl_for(self.key) is not None:
            raise TTLPolicyError(
                f"feature flags in {self.key!r} are persistent, but the namespace policy gives them a TTL"
            )

    @staticmethod
    def encode(flag: Flag) -> str:
        return encode_json({"type": flag.type, "value": flag.value}, f"flag {flag.name!r}")

    @staticmethod
    def decode(name: str, raw: Any) -> Flag:
        try:
            body = json.loads(text(raw))
            flag_type, value = body["type"], body["value"]
        except (ValueError, KeyError, TypeError):
            raise InvalidArgument(
                f"flag {name!r} holds a value not written by this library: {raw!r}"
            ) from None
        if flag_type not in FLAG_TYPES or (flag_type == "bool") != isinstance(value, bool):
            raise InvalidArgument(f"flag {name!r} holds a value of unknown type: {raw!r}")
        return Flag(name, flag_type, value)

    def make_flag(self, name: str, value: Any, flag_type: str | None) -> Flag:
        kind = _infer(value) if flag_type is None else flag_type
        if kind not in FLAG_TYPES:
            raise InvalidArgument(f"unknown flag type {flag_type!r}: expected one of {', '.join(FLAG_TYPES)}")
        if kind == "bool" and not isinstance(value, bool):
            raise InvalidArgument(f"flag {name!r} is a bool flag, got {value!r}")
        if kind == "str" and not isinstance(value, str):
            raise InvalidArgument(f"flag {name!r} is a str flag, got {value!r}")
        return Flag(_name(name), kind, value)  # type: ignore[arg-type]

    def set(self, flag: Flag, by: str) -> Flow[bool]:
        self._check_policy()
        changed = yield Call(
            WRITE,
            (self.key, self.history_key),
            ("set", flag.name, self.encode(flag), self.channel, _by(by), self.history_size),
        )
        return bool(changed)

    def delete(self, name: str, by: str) -> Flow[bool]:
        self._check_policy()
        changed = yield Call(
            WRITE,
            (self.key, self.history_key),
            ("del", _name(name), "", self.channel, _by(by), self.history_size),
        )
        return bool(changed)

    def _value(self, name: str, raw: str) -> Flag | None:
        if not raw:
            return None
        try:
            return self.decode(name, raw)
        except InvalidArgument:
            return None

    def history(self, limit: int | None) -> Flow[list[FlagChange]]:
        """The latest changes, newest first (at most ``limit``, else the whole history)."""
        count = self.history_size if limit is None else positive_int("limit", limit)
        raw = yield Call(HISTORY, (self.history_key,), (count,))
        changes = []
        for item in raw:
            entry = json.loads(text(item))
            name = str(entry["name"])
            changes.append(
                FlagChange(
                    name=name,
                    by=str(entry["by"]),
                    at=int(entry["at"]) / 1000,
                    old=self._value(name, entry["old"]),
                    new=self._value(name, entry["new"]),
                )
            )
        return changes

    def read_fields(self) -> Flow[tuple[dict[str, Flag], dict[str, str]]]:
        """Every flag by name, and every field this library did not write (raw text by name)."""
        raw = yield Call(READ, (self.key,))
        flags = {}
        foreign = {}
        for i in range(0, len(raw), 2):
            name = text(raw[i])
            try:
                flags[name] = self.decode(name, raw[i + 1])
            except InvalidArgument as exc:
                foreign[name] = text(raw[i + 1])
                if name not in self._reported:
                    self._reported.add(name)
                    _log.warning("%s; flag readers skip it", exc)
        return dict(sorted(flags.items())), dict(sorted(foreign.items()))

    def read_all(self) -> Flow[dict[str, Flag]]:
        flags, _ = yield from self.read_fields()
        return flags


class _FlagAdminShell(ShellBase):
    """The constructor :class:`FlagAdmin` and :class:`AsyncFlagAdmin` share."""

    def __init__(
        self,
        backend: object,
        *,
        key: str = "flags:config",
        registry: NamespaceRegistry = default_registry,
        history_size: int = DEFAULT_HISTORY_SIZE,
    ) -> None:
        super().__init__(backend)
        self.core = FlagsCore(key=key, registry=registry, history_size=history_size)


class FlagAdmin(_FlagAdminShell, StoreShell):
    """The only way to change flags (besides the CLI). Not for request code."""

    def set(self, name: str, value: Any, flag_type: FlagType | None = None, *, by: str = "api") -> bool:
        """Set a flag; ``flag_type`` defaults to bool for bools, str for strings, else json.

        ``by`` names who made the change, in the history.
        """
        return self._run(self.core.set(self.core.make_flag(name, value, flag_type), by))

    def delete(self, name: str, *, by: str = "api") -> bool:
        """Delete a flag; ``False`` if there was none."""
        return self._run(self.core.delete(name, by))

    def history(self, limit: int | None = None) -> list[FlagChange]:
        """The latest changes, newest first."""
        return self._run(self.core.history(limit))

    def get(self, name: str) -> Flag | None:
        """The flag as stored now (no cache)."""
        return self.all().get(_name(name))

    def all(self) -> dict[str, Flag]:
        """Every flag as stored now (no cache), by name."""
        return self._run(self.core.read_all())

    def foreign(self) -> dict[str, str]:
        """Fields of the flags hash not written by this library, raw, by name; readers skip them."""
        return self._run(self.core.read_fields())[1]


class AsyncFlagAdmin(_FlagAdminShell, AsyncStoreShell):
    """:class:`FlagAdmin` for asyncio."""

    async def set(self, name: str, value: Any, flag_type: FlagType | None = None, *, by: str = "api") -> bool:
        """Set a flag; ``flag_type`` defaults to bool for bools, str for strings, else json.

        ``by`` names who made the change, in the history.
        """
        return await self._run(self.core.set(self.core.make_flag(name, value, flag_type), by))

    async def delete(self, name: str, *, by: str = "api") -> bool:
        """Delete a flag; ``False`` if there was none."""
        return await self._run(self.core.delete(name, by))

    async def history(self, limit: int | None = None) -> list[FlagChange]:
        """The latest changes, newest first."""
        return await self._run(self.core.history(limit))

    async def get(self, name: str) -> Flag | None:
        """The flag as stored now (no cache)."""
        return (await self.all()).get(_name(name))

    async def all(self) -> dict[str, Flag]:
        """Every flag as stored now (no cache), by name."""
        return await self._run(self.core.read_all())

    async def foreign(self) -> dict[str, str]:
        """Fields of the flags hash not written by this library, raw, by name; readers skip them."""
        return (await self._run(self.core.read_fields()))[1]


class FlagCache:
    """The snapshot a reader serves, and when to reload it or listen again; no I/O."""

    def __init__(self, *, max_age: float, retry_interval: float, clock: Callable[[], float]) -> None:
        self.max_age = positive_seconds("max_age", max_age)
        self.retry_interval = positive_seconds("retry_interval", retry_interval)
        self.clock = clock
        self.snapshot: dict[str, Flag] | None = None
        self.loaded_at = 0.0
        self.failed_at: float | None = None
        self.deaf_since: float | None = None

    def invalidate(self) -> None:
        self.loaded_at = -float("inf")

    def backing_off(self) -> bool:
        """Whether Redis failed less than ``retry_interval`` ago."""
        return self.failed_at is not None and self.clock() - self.failed_at < self.retry_interval

    def needs_load(self) -> bool:
        return self.snapshot is None or self.clock() - self.loaded_at >= self.max_age

    def loaded(self, snapshot: dict[str, Flag], started: float) -> None:
        self.snapshot = snapshot
        self.loaded_at = started
        self.failed_at = None

    def failed(self, exc: StorageUnavailable) -> dict[str, Flag]:
        self.failed_at = self.clock()
        if self.snapshot is None:
            raise exc
        return self.snapshot

    def stale(self) -> dict[str, Flag]:
        if self.snapshot is None:
            raise StorageUnavailable("feature flags cannot be read: Redis was unreachable moments ago")
        return self.snapshot

    def may_listen(self) -> bool:
        """Whether to try subscribing: not since a failed attempt less than ``retry_interval`` ago."""
        return self.deaf_since is None or self.clock() - self.deaf_since >= self.retry_interval

    def listening(self, subscribed: bool) -> None:
        """A subscription was opened, or could not be: either way, a change may have been missed."""
        self.deaf_since = None if subscribed else self.clock()
        self.invalidate()

    def not_listening(self) -> None:
        """No subscription, and too soon to try again: reload at least every ``retry_interval``."""
        if self.clock() - self.loaded_at >= self.retry_interval:
            self.invalidate()


def _lookup(snapshot: dict[str, Flag], name: str, default: Any) -> Any:
    flag = snapshot.get(_name(name))
    return default if flag is None else flag.value


def _enabled(snapshot: dict[str, Flag], name: str, default: bool) -> bool:
    flag = snapshot.get(_name(name))
    if flag is None:
        return default
    if flag.type != "bool":
        raise InvalidArgument(f"flag {name!r} is a {flag.type} flag, not a bool flag")
    return bool(flag.value)


# On Redis Cluster a PUBLISH (the flags script's) reaches every node, so a
# reader listens on one plain connection to the primary serving the
# channel's slot. redis-py's ClusterPubSub would do it for the sync client,
# but redis-py 5's asyncio cluster client has no pub/sub: one way for both.
# The map of slots is read again from the cluster each time: a reader
# listens again after its node failed, and the client's map may still name
# that node (nothing else may have told it of the replica promoted since).


def _sync_listener(client: SyncClient, channel: str) -> redis.Redis:
    if is_cluster_client(client):
        cluster = cast(redis.cluster.RedisCluster, client)
        with translate_errors():
            cluster.nodes_manager.initialize()  # type: ignore[no-untyped-call, unused-ignore]
            node = cluster.get_node_from_key(channel)  # type: ignore[no-untyped-call, unused-ignore]
        return cast(redis.Redis, node.redis_connection)
    return cast(redis.Redis, client)


async def _async_listener(client: AsyncClient, channel: str) -> tuple[redis.asyncio.Redis, bool]:
    """The client to listen on, and whether it was built here (and is to be closed with the subscription)."""
    if not is_cluster_client(client):
        return cast(redis.asyncio.Redis, client), False
    cluster = cast(redis.asyncio.cluster.RedisCluster, client)
    with translate_errors():
        await cluster.initialize()
        await cluster.nodes_manager.initialize()
    node = cluster.get_node_from_key(channel)
    if node is None:
        raise StorageUnavailable(f"no Redis Cluster node serves the slot of {channel!r}")
    pool = redis.asyncio.ConnectionPool(connection_class=node.connection_class, **node.connection_kwargs)
    return redis.asyncio.Redis(connection_pool=pool), True


class _RedisSubscription:
    """Change messages on a ``redis.Redis`` pub/sub connection."""

    def __init__(self, client: SyncClient, channel: str, timeout: float) -> None:
        self.reconnected = False
        self.pubsub = _sync_listener(client, channel).pubsub()  # type: ignore[no-untyped-call, unused-ignore]
        with translate_errors():
            self.pubsub.subscribe(channel)
            # Until the server confirms, a change could be missed.
            deadline = time.monotonic() + timeout
            while True:
                message = self.pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
                if message is not None and message["type"] == "subscribe":
                    break
                if time.monotonic() >= deadline:
                    self.pubsub.close()
                    raise StorageUnavailable(f"Redis did not confirm the subscription to {channel!r}")
        assert self.pubsub.connection is not None
        self.pubsub.connection.register_connect_callback(self._on_connect)

    def _on_connect(self, connection: object) -> None:
        self.reconnected = True

    def changed(self) -> bool:
        changed = False
        with translate_errors():
            while (message := self.pubsub.get_message(timeout=0.0)) is not None:
                changed = changed or message["type"] == "message"
        # Read after draining: reading may have reconnected, and missed messages meanwhile.
        changed = changed or self.reconnected
        self.reconnected = False
        return changed

    def close(self) -> None:
        self.pubsub.close()


class _AsyncRedisSubscription:
    """Change messages on a ``redis.asyncio.Redis`` pub/sub connection."""

    def __init__(self, client: redis.asyncio.Redis, *, owned: bool) -> None:
        self.reconnected = False
        self.client = client
        self.owned = owned
        self.pubsub = client.pubsub()

    @classmethod
    async def open(cls, client: AsyncClient, channel: str, timeout: float) -> _AsyncRedisSubscription:
        listener, owned = await _async_listener(client, channel)
        subscription = cls(listener, owned=owned)
        try:
            await subscription.subscribe(channel, timeout)
        except BaseException:
            if owned:
                await listener.aclose()
            raise
        return subscription

    async def subscribe(self, channel: str, timeout: float) -> None:
        with translate_errors():
            await self.pubsub.subscribe(channel)
            deadline = time.monotonic() + timeout
            while True:
                message = await self.pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
                if message is not None and message["type"] == "subscribe":
                    break
                if time.monotonic() >= deadline:
                    await self.pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
                    raise StorageUnavailable(f"Redis did not confirm the subscription to {channel!r}")
        assert self.pubsub.connection is not None
        self.pubsub.connection.register_connect_callback(self._on_connect)

    def _on_connect(self, connection: object) -> None:
        self.reconnected = True

    async def changed(self) -> bool:
        changed = False
        with translate_errors():
            while (message := await self.pubsub.get_message(timeout=0.0)) is not None:
                changed = changed or message["type"] == "message"
        # Read after draining: reading may have reconnected, and missed messages meanwhile.
        changed = changed or self.reconnected
        self.reconnected = False
        return changed

    async def aclose(self) -> None:
        try:
            await self.pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
        finally:
            if self.owned:
                await self.client.aclose()


class _MemorySubscription:
    def __init__(self, subscription: MemorySubscription) -> None:
        self.subscription = subscription

    def changed(self) -> bool:
        return bool(self.subscription.poll())

    def close(self) -> None:
        self.subscription.close()


class _FlagsShell(ShellBase, Generic[Sub]):
    """The constructor :class:`Flags` and :class:`AsyncFlags` share."""

    def __init__(
        self,
        backend: object,
        *,
        key: str = "flags:config",
        max_age: float = 30.0,
        retry_interval: float = 1.0,
        subscribe_timeout: float = 2.0,
        registry: NamespaceRegistry = default_registry,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(backend)
        self.core = FlagsCore(key=key, registry=registry)
        self.cache = FlagCache(max_age=max_age, retry_interval=retry_interval, clock=clock)
        self.subscribe_timeout = positive_seconds("subscribe_timeout", subscribe_timeout)
        self._subscription: Sub | None = None
        # One reader refreshes at a time, and opens at most one subscription:
        # Flags's threads take the first, AsyncFlags's tasks (one event loop) the second.
        self._lock = threading.Lock()
        self._refreshing = asyncio.Lock()
        self._told_refused = False
        _readers.add(self)

    def _deaf(self, exc: StorageUnavailable | StorageResponseError) -> None:
        """The subscription could not be opened: read the flags every ``retry_interval`` until it can.

        Redis refusing it (an ACL user without the channel) will not pass: say so once.
        """
        if isinstance(exc, StorageResponseError) and not self._told_refused:
            self._told_refused = True
            _log.warning(
                "feature flags: Redis refused the subscription to %r (%s); reading the flags every "
                "%g s instead of on each change (grant the channel: ACL SETUSER <user> &%s)",
                self.core.channel,
                exc,
                self.cache.retry_interval,
                self.core.channel,
            )
        self.cache.listening(False)

    def _after_fork(self) -> None:
        # The parent's subscription is its socket: a child reading it too would take some of
        # the parent's (and its siblings') change messages. The child listens on its own.
        self._subscription = None
        self._lock = threading.Lock()
        self._refreshing = asyncio.Lock()
        self.cache.deaf_since = None


_readers: weakref.WeakSet[_FlagsShell[Any]] = weakref.WeakSet()


def _forget_subscriptions_after_fork() -> None:
    for reader in list(_readers):
        reader._after_fork()


os.register_at_fork(after_in_child=_forget_subscriptions_after_fork)


class Flags(_FlagsShell[_RedisSubscription | _MemorySubscription], StoreShell):
    """Read-only, cached access to feature flags for request code (thread-safe).

    ``max_age`` bounds how long a snapshot is served without a reload, even
    if no change message arrives; ``retry_interval`` is how long to wait
    before trying an unreachable Redis again.
    """

    def _subscribe(self) -> _RedisSubscription | _MemorySubscription:
        runner = self._runner
        if isinstance(runner, MemoryBackend):
            return _MemorySubscription(runner.subscribe(self.core.channel))
        return _RedisSubscription(runner.client, self.core.channel, self.subscribe_timeout)

    def _snapshot(self) -> dict[str, Flag]:
        with self._lock:
            cache = self.cache
            if cache.backing_off():
                return cache.stale()
            started = cache.clock()
            self._watch()
            try:
                if cache.needs_load():
                    cache.loaded(self._run(self.core.read_all()), started)
            except StorageUnavailable as exc:
                self._drop_subscription()
                return cache.failed(exc)
            assert cache.snapshot is not None
            return cache.snapshot

    def _watch(self) -> None:
        """Invalidate the snapshot on a change message; listen (again) when not listening.

        Failing to listen does not stop the reads: the flags are read from
        storage at once and at least every ``retry_interval`` until listening again.
        """
        cache = self.cache
        if self._subscription is not None:
            try:
                if self._subscription.changed():
                    cache.invalidate()
                return
            except StorageUnavailable:
                # Only the listening connection may be lost: listen again right away.
                self._drop_subscription()
        if not cache.may_listen():
            cache.not_listening()
            return
        try:
            self._subscription = self._subscribe()
        except (StorageUnavailable, StorageResponseError) as exc:
            self._deaf(exc)
        else:
            cache.listening(True)

    def _drop_subscription(self) -> None:
        if self._subscription is not None:
            subscription, self._subscription = self._subscription, None
            with contextlib.suppress(OSError, redis.RedisError):
                subscription.close()

    def get(self, name: str, default: Any = None) -> Any:
        """The flag's value, or ``default`` if there is no such flag."""
        return _lookup(self._snapshot(), name, default)

    def is_enabled(self, name: str, default: bool = False) -> bool:
        """A bool flag's value; ``default`` if unset. A non-bool flag is an error."""
        return _enabled(self._snapshot(), name, default)

    def flag(self, name: str) -> Flag | None:
        """The flag with its type, or ``None``."""
        return self._snapshot().get(_name(name))

    def all(self) -> dict[str, Flag]:
        """Every flag, by name."""
        return dict(self._snapshot())

    def close(self) -> None:
        """Stop listening for changes (and close the client if built from a URL)."""
        self._drop_subscription()
        super().close()


class AsyncFlags(_FlagsShell[_AsyncRedisSubscription | _MemorySubscription], AsyncStoreShell):
    """:class:`Flags` for asyncio (one event loop)."""

    async def _subscribe(self) -> _AsyncRedisSubscription | _MemorySubscription:
        runner = self._runner
        if isinstance(runner, AsyncMemoryRunner):
            return _MemorySubscription(runner.backend.subscribe(self.core.channel))
        return await _AsyncRedisSubscription.open(runner.client, self.core.channel, self.subscribe_timeout)

    async def _watch(self) -> None:
        """:meth:`Flags._watch`."""
        cache = self.cache
        subscription = self._subscription
        if subscription is not None:
            try:
                if isinstance(subscription, _MemorySubscription):
                    changed = subscription.changed()
                else:
                    changed = await subscription.changed()
                if changed:
                    cache.invalidate()
                return
            except StorageUnavailable:
                # Only the listening connection may be lost: listen again right away.
                await self._drop_subscription()
        if not cache.may_listen():
            cache.not_listening()
            return
        try:
            self._subscription = await self._subscribe()
        except (StorageUnavailable, StorageResponseError) as exc:
            self._deaf(exc)
        else:
            cache.listening(True)

    async def _snapshot(self) -> dict[str, Flag]:
        async with self._refreshing:
            cache = self.cache
            if cache.backing_off():
                return cache.stale()
            started = cache.clock()
            await self._watch()
            try:
                if cache.needs_load():
                    cache.loaded(await self._run(self.core.read_all()), started)
            except StorageUnavailable as exc:
                await self._drop_subscription()
                return cache.failed(exc)
            assert cache.snapshot is not None
            return cache.snapshot

    async def _drop_subscription(self) -> None:
        if self._subscription is not None:
            subscription, self._subscription = self._subscription, None
            with contextlib.suppress(OSError, redis.RedisError):
                if isinstance(subscription, _MemorySubscription):
                    subscription.close()
                else:
                    await subscription.aclose()

    async def get(self, name: str, default: Any = None) -> Any:
        """The flag's value, or ``default`` if there is no such flag."""
        return _lookup(await self._snapshot(), name, default)

    async def is_enabled(self, name: str, default: bool = False) -> bool:
        """A bool flag's value; ``default`` if unset. A non-bool flag is an error."""
        return _enabled(await self._snapshot(), name, default)

    async def flag(self, name: str) -> Flag | None:
        """The flag with its type, or ``None``."""
        return (await self._snapshot()).get(_name(name))

    async def all(self) -> dict[str, Flag]:
        """Every flag, by name."""
        return dict(await self._snapshot())

    async def aclose(self) -> None:
        """Stop listening for changes (and close the client if built from a URL)."""
        await self._drop_subscription()
        await super().aclose()


# The scripts in Python, for MemoryBackend (args start at ARGV[2]).


def _mem_write(m: MemoryBackend, now: int, keys: Sequence[str], args: Sequence[Any]) -> Any:
    op, name, value, channel, by, size = args
    flags: dict[str, str] = m.get(keys[0], now) or {}
    old = flags.get(name)
    if op == "set":
        changed = old != value
        flags[name] = value
        m.put(keys[0], flags, now)
    else:
        changed = flags.pop(name, None) is not None
        m.drop_if_empty(keys[0], now)
        value = ""
    if changed:
        history: list[str] = m.get(keys[1], now) or []
        entry = {"name": name, "by": by, "at": now, "old": old or "", "new": value}
        history.insert(0, json.dumps(entry))
        del history[int(size) :]
        m.put(keys[1], history, now)
    m.publish(channel, name)
    return int(changed)


def _mem_read(m: MemoryBackend, now: int, keys: Sequence[str], args: Sequence[Any]) -> Any:
    flags: dict[str, str] = m.get(keys[0], now) or {}
    return [item for pair in flags.items() for item in pair]


def _mem_history(m: MemoryBackend, now: int, keys: Sequence[str], args: Sequence[Any]) -> Any:
    history: list[str] = m.get(keys[0], now) or []
    return history[: int(args[0])]


WRITE = Op(store_script("flag_write.lua"), _mem_write)
READ = Op(store_script("flag_read.lua"), _mem_read)
HISTORY = Op(store_script("flag_history.lua"), _mem_history)
