"""The conformance suite on Redis with the blocked-keys cache on, as URLs and clients have it.

Repeated denials in the suite are answered from the cache, so its figures
are held to the same exact values as Redis's.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
from support import ManualClock, SyncFacade
from test_conformance import *  # noqa: F403 - the suite, run again here

from bisman_ratelimit import AsyncLimiter, Limiter
from bisman_ratelimit.backends import AsyncRedisStorage, RedisStorage


@pytest.fixture(params=["sync", "async"])
def limiter(request: pytest.FixtureRequest, redis_url: str, clock: ManualClock) -> Iterator[Any]:
    if request.param == "sync":
        sync = Limiter(RedisStorage(redis.Redis.from_url(redis_url), clock=clock, blocked_cache=True))
        yield sync
        sync.close()
    else:
        facade = SyncFacade(
            AsyncLimiter(
                AsyncRedisStorage(redis.asyncio.Redis.from_url(redis_url), clock=clock, blocked_cache=True)
            )
        )
        yield facade
        facade.shutdown()
