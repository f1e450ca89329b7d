"""What a type checker sees of the public API.

mypy checks this file (``[tool.mypy] files`` in pyproject.toml) and pytest
runs it. A ``# type: ignore[...]`` line holds a type error in place: mypy
reports an unused ignore (``warn_unused_ignores``, part of strict) as soon
as the error goes away, and the test checks that the call fails at run time
too.
"""

from __future__ import annotations

import sys

import pytest

from bisman_ratelimit import AsyncLimiter, Decision, InvalidArgument, Limiter, MultiDecision
from bisman_ratelimit.backends import AsyncAdapter, AsyncStorage, MemoryStorage, Storage, storage_from_url

if sys.version_info >= (3, 11):
    from typing import assert_type
else:  # pragma: no cover - exercised on Python 3.10 only
    from typing_extensions import assert_type


def test_limiter_hit_returns_a_decision() -> None:
    limiter = Limiter()
    decision = limiter.hit("user:1", "2/minute")
    assert_type(decision, Decision)
    assert decision.allowed
    assert_type(limiter.peek("user:1", "2/minute"), Decision)
    assert_type(limiter.hit_many([("user:1", "2/minute")]), MultiDecision)


async def test_async_limiter_hit_returns_an_awaitable_decision() -> None:
    limiter = AsyncLimiter()
    decision = await limiter.hit("user:1", "2/minute")
    assert_type(decision, Decision)
    assert decision.allowed
    assert_type(await limiter.peek("user:1", "2/minute"), Decision)
    assert_type(await limiter.hit_many([("user:1", "2/minute")]), MultiDecision)


def test_algorithm_takes_the_algorithm_names() -> None:
    limiter = Limiter()
    assert limiter.hit("user:1", "2/minute", algorithm="token_bucket").allowed
    with pytest.raises(InvalidArgument, match="unknown algorithm 'leaky_bucket'"):
        limiter.hit("user:1", "2/minute", algorithm="leaky_bucket")  # type: ignore[arg-type]


async def test_async_algorithm_takes_the_algorithm_names() -> None:
    limiter = AsyncLimiter()
    assert (await limiter.hit("user:1", "2/minute", algorithm="gcra")).allowed
    with pytest.raises(InvalidArgument, match="unknown algorithm 'leaky_bucket'"):
        await limiter.hit("user:1", "2/minute", algorithm="leaky_bucket")  # type: ignore[arg-type]


def test_limiters_keep_the_storage_type() -> None:
    memory = MemoryStorage()
    assert_type(Limiter(memory).storage, Storage)
    assert Limiter(memory).storage is memory
    assert_type(AsyncLimiter(memory).storage, AsyncStorage)
    assert_type(Limiter.from_url("memory://"), Limiter)
    assert_type(AsyncLimiter.from_url("memory://"), AsyncLimiter)


def test_limiter_refuses_an_async_storage() -> None:
    with pytest.raises(InvalidArgument, match="Limiter needs a synchronous client or storage"):
        Limiter(AsyncAdapter(MemoryStorage()))  # type: ignore[arg-type]


def test_storage_from_url_types_follow_asyncio() -> None:
    sync = storage_from_url("memory://")
    assert_type(sync, Storage)
    assert isinstance(sync, MemoryStorage)
    async_ = storage_from_url("memory://", asyncio=True)
    assert_type(async_, AsyncStorage)
    assert isinstance(async_, AsyncAdapter)
    flag = bool(sys.argv)
    assert_type(storage_from_url("memory://", asyncio=flag), Storage | AsyncStorage)
