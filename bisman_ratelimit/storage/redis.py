"""The Redis backend, sync and async.

Each check is one Lua script call (``storage/lua/*.lua``), run by SHA and
loaded again when the server answers NOSCRIPT (after ``SCRIPT FLUSH`` or a
restart). Time comes from the server's ``TIME``, so app hosts with skewed
clocks agree. Every key of one identity carries the same hash tag, so the
scripts are valid on Redis Cluster.

``RedisStorage`` and ``AsyncRedisStorage`` share everything but the calls
that touch the network.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from importlib import resources
from types import TracebackType
from typing import Any

import redis
import redis.asyncio
from redis.exceptions import NoScriptError

from ..decision import Decision, make_decision
from ..errors import StorageError, StorageResponseError, StorageUnavailable
from ..keys import hash_tag
from .base import Check, Spec

__all__ = ["AsyncRedisStorage", "RedisStorage", "Script"]

_CODES = {
    "fixed_window": "fw",
    "sliding_window": "sw",
    "sliding_log": "sl",
    "token_bucket": "tb",
    "gcra": "gc",
}


class Script:
    """A Lua script shipped in the package, with the shared head prepended."""

    def __init__(self, name: str) -> None:
        folder = resources.files(__package__).joinpath("lua")
        self.name = name
        self.source = folder.joinpath("common.lua").read_text() + folder.joinpath(name).read_text()
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()


RATELIMIT = Script("ratelimit.lua")
LEASE = Script("lease.lua")


class translate_errors:
    """The one place where redis-py exceptions become ours."""

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None or not isinstance(exc, redis.RedisError):
            return
        if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
            raise StorageUnavailable(f"Redis is unavailable: {exc}") from exc
        if isinstance(exc, redis.ResponseError):
            raise StorageResponseError(f"Redis answered with an error: {exc}") from exc
        raise StorageError(f"Redis call failed: {exc}") from exc


_translate = translate_errors()


class _RedisBase:
    """Keys, arguments and decoding: everything that does no I/O."""

    def __init__(self, client: Any, *, prefix: str = "rl", clock: Callable[[], float] | None = None) -> None:
        self.client = client
        self.prefix = prefix
        # For tests only: a time source standing in for the server's TIME.
        self._clock = clock

    def key_for(self, key: str, spec: Spec) -> str:
        return f"{self.prefix}:{hash_tag(key)}:{_CODES[spec[0]]}:{spec[1]}:{spec[2]}:{spec[3]}"

    def lease_key(self, key: str) -> str:
        return f"{self.prefix}:{hash_tag(key)}:lease"

    def _now(self) -> str:
        return "" if self._clock is None else str(int(self._clock() * 1_000_000))

    def _check_args(self, checks: list[Check], commit: bool) -> tuple[list[str], list[Any]]:
        keys = [self.key_for(key, spec) for key, spec, _ in checks]
        args: list[Any] = [self._now(), "1" if commit else "0"]
        for _, spec, cost in checks:
            args += (*spec, cost)
        return keys, args

    def _one_args(self, spec: Spec, cost: int, commit: bool) -> list[Any]:
        return [self._now(), "1" if commit else "0", *spec, cost]

    @staticmethod
    def _decode_one(key: str, spec: Spec, raw: list[int]) -> Decision:
        return make_decision(raw[1] == 1, spec[3], raw[2], raw[3], raw[4], key, spec[0])

    @staticmethod
    def _decode(checks: list[Check], raw: list[int]) -> tuple[bool, list[Decision]]:
        decisions = [
            make_decision(
                raw[i * 4 + 1] == 1,
                spec.capacity,
                raw[i * 4 + 2],
                raw[i * 4 + 3],
                raw[i * 4 + 4],
                key,
                spec.algorithm,
            )
            for i, (key, spec, _) in enumerate(checks)
        ]
        return raw[0] == 1, decisions

    def _lease_args(self, key: str, lease_id: str, max_in_flight: int, ttl_us: int) -> tuple[str, list[Any]]:
        return self.lease_key(key), [self._now(), lease_id, max_in_flight, ttl_us]


class RedisStorage(_RedisBase):
    """Synchronous backend on a ``redis.Redis`` (or cluster) client."""

    def _eval(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        with _translate:
            try:
                return self.client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            except NoScriptError:
                self.client.script_load(script.source)
                return self.client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)

    def check(self, key: str, spec: Spec, cost: int, commit: bool) -> Decision:
        raw = self._eval(RATELIMIT, [self.key_for(key, spec)], self._one_args(spec, cost, commit))
        return self._decode_one(key, spec, raw)

    def check_many(self, checks: list[Check], commit: bool) -> tuple[bool, list[Decision]]:
        keys, args = self._check_args(checks, commit)
        return self._decode(checks, self._eval(RATELIMIT, keys, args))

    def reset(self, key: str, spec: Spec) -> None:
        with _translate:
            self.client.delete(self.key_for(key, spec))

    def acquire(self, key: str, lease_id: str, max_in_flight: int, ttl_us: int) -> bool:
        lease_key, args = self._lease_args(key, lease_id, max_in_flight, ttl_us)
        return bool(self._eval(LEASE, [lease_key], args)[0])

    def release(self, key: str, lease_id: str) -> None:
        with _translate:
            self.client.zrem(self.lease_key(key), lease_id)

    def close(self) -> None:
        self.client.close()


class AsyncRedisStorage(_RedisBase):
    """Asynchronous backend on a ``redis.asyncio.Redis`` (or cluster) client."""

    async def _eval(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        with _translate:
            try:
                return await self.client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            except NoScriptError:
                await self.client.script_load(script.source)
                return await self.client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)

    async def check(self, key: str, spec: Spec, cost: int, commit: bool) -> Decision:
        raw = await self._eval(RATELIMIT, [self.key_for(key, spec)], self._one_args(spec, cost, commit))
        return self._decode_one(key, spec, raw)

    async def check_many(self, checks: list[Check], commit: bool) -> tuple[bool, list[Decision]]:
        keys, args = self._check_args(checks, commit)
        return self._decode(checks, await self._eval(RATELIMIT, keys, args))

    async def reset(self, key: str, spec: Spec) -> None:
        with _translate:
            await self.client.delete(self.key_for(key, spec))

    async def acquire(self, key: str, lease_id: str, max_in_flight: int, ttl_us: int) -> bool:
        lease_key, args = self._lease_args(key, lease_id, max_in_flight, ttl_us)
        return bool((await self._eval(LEASE, [lease_key], args))[0])

    async def release(self, key: str, lease_id: str) -> None:
        with _translate:
            await self.client.zrem(self.lease_key(key), lease_id)

    async def close(self) -> None:
        await self.client.aclose()


def is_sync_client(client: object) -> bool:
    return isinstance(client, redis.Redis)


def is_async_client(client: object) -> bool:
    return isinstance(client, redis.asyncio.Redis)
