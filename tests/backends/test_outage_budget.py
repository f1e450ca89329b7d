"""An outage hands no fresh budget to a client Redis had just refused.

The server is killed or demoted to a replica under the fallback; the
client over its limit must stay refused as Redis would refuse it. Time
runs on a manual clock shared by Redis's scripts, the blocked-keys cache,
the breaker and the local counters, so the figures are exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis
from support import ManualClock

from bisman_ratelimit import AsyncLimiter, Limiter
from bisman_ratelimit.backends import FallbackStorage, MemoryStorage, RedisStorage
from bisman_ratelimit.core import CircuitBreaker
from bisman_ratelimit.testing import RedisServer

# Every test here starts its own servers.
pytestmark = pytest.mark.redis

# A request as the web plugins make it: the server-wide limit and the client's own, all or nothing.
GLOBAL = ("global", "10000/minute", "fixed_window")


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as started:
        yield started


@pytest.fixture
def other_server() -> Iterator[RedisServer]:
    with RedisServer() as started:
        yield started


def limiter_on(server: RedisServer, clock: ManualClock) -> Limiter:
    primary = RedisStorage(
        redis.Redis(port=server.port, socket_timeout=0.5), budget=0.5, blocked_cache=True, clock=clock
    )
    guard = CircuitBreaker(failure_threshold=1, min_calls=1, open_for=60.0, clock=clock)
    return Limiter(FallbackStorage(primary, breaker=guard, local=MemoryStorage(clock=clock)))


def request(limiter: Limiter, client: str) -> bool:
    return limiter.hit_many([GLOBAL, (f"ip:{client}", "5/minute", "sliding_window")]).allowed


def test_a_client_over_its_limit_stays_refused_when_redis_dies(
    server: RedisServer, other_server: RedisServer, clock: ManualClock
) -> None:
    dying = limiter_on(server, clock)
    # The same traffic on a server that stays up says what Redis would have answered.
    control = limiter_on(other_server, clock)
    before = [(request(dying, "abuser"), request(control, "abuser")) for _ in range(8)]
    assert before == [(True, True)] * 5 + [(False, False)] * 3
    denied = dying.hit_many([GLOBAL, ("ip:abuser", "5/minute", "sliding_window")])
    assert denied.decisions[1].retry_after == 72.0
    server.kill()
    outage: list[bool] = []
    expected: list[bool] = []
    for _ in range(120):  # 2 minutes, a hit a second
        clock.advance(1.0)
        outage.append(request(dying, "abuser"))
        expected.append(request(control, "abuser"))
    assert dying.storage.breaker.state == "open"  # type: ignore[attr-defined]
    # Nothing until retry_after (72 s: 71 hits), then what the limit refills, as on Redis.
    assert outage[:71] == [False] * 71
    assert outage == expected
    assert sum(outage) == 5
    # A client Redis never refused still gets its whole local budget.
    assert [request(dying, "newcomer") for _ in range(6)] == [True] * 5 + [False]
    dying.close()
    control.close()


def test_a_read_only_server_still_refuses_a_client_over_its_limit(
    server: RedisServer, other_server: RedisServer, clock: ManualClock
) -> None:
    url = f"{server.url}?fallback=memory&blocked_cache=off"
    guard = CircuitBreaker(failure_threshold=1, min_calls=1, open_for=60.0, clock=clock)
    limiter = Limiter.from_url(url, breaker=guard)
    abuser = [("ip:abuser", "5/minute", "sliding_window"), GLOBAL]
    assert [limiter.hit_many(abuser).allowed for _ in range(6)] == [True] * 5 + [False]
    fail_over(server, other_server)
    newcomers = [limiter.hit_many([(f"ip:{n}", "5/minute", "sliding_window"), GLOBAL]) for n in range(100)]
    refused = [limiter.hit_many(abuser) for _ in range(100)]
    # The newcomers need writes: READONLY opened the breaker and the local counters took them.
    assert guard.state == "open"
    assert sum(decision.allowed for decision in newcomers) == 100
    # The abuser needs none: the replica still says no, each time.
    assert sum(decision.allowed for decision in refused) == 0
    assert {decision.decisions[0].remaining for decision in refused} == {0}
    limiter.close()


def fail_over(old: RedisServer, new: RedisServer) -> None:
    """``new`` takes ``old``'s data over and ``old`` becomes its replica, refusing writes."""
    demoted = redis.Redis(port=old.port, socket_timeout=10)
    promoted = redis.Redis(port=new.port, socket_timeout=10)
    promoted.replicaof("127.0.0.1", old.port)
    assert demoted.wait(1, 10_000) == 1
    promoted.replicaof("NO", "ONE")
    demoted.replicaof("127.0.0.1", new.port)
    assert promoted.wait(1, 10_000) == 1
    assert demoted.dbsize() == promoted.dbsize() > 0
    demoted.close()
    promoted.close()


async def test_a_read_only_server_still_refuses_under_many_tasks(
    server: RedisServer, other_server: RedisServer, clock: ManualClock
) -> None:
    guard = CircuitBreaker(failure_threshold=1, min_calls=1, open_for=60.0, clock=clock)
    url = f"{server.url}?fallback=memory&blocked_cache=off&timeout=1s&max_connections=256"
    limiter = AsyncLimiter.from_url(url, breaker=guard)
    abuser = [("ip:abuser", "5/minute", "sliding_window"), GLOBAL]
    assert [(await limiter.hit_many(abuser)).allowed for _ in range(6)] == [True] * 5 + [False]
    fail_over(server, other_server)
    newcomers = [[(f"ip:{n}", "5/minute", "sliding_window"), GLOBAL] for n in range(200)]
    # The first newcomers' writes fail with READONLY and open the breaker...
    first = await asyncio.gather(*(limiter.hit_many(entries) for entries in newcomers[:100]))
    assert guard.state == "open"
    # ...then the abuser's hits come mixed with more of theirs.
    answers = await asyncio.gather(
        *(limiter.hit_many(entries) for entries in [*newcomers[100:], *[abuser] * 100])
    )
    assert sum(multi.allowed for multi in [*first, *answers[:100]]) == 200
    assert sum(multi.allowed for multi in answers[100:]) == 0
    await limiter.aclose()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_primary_without_its_replicas_still_refuses_a_client_over_its_limit(
    server: RedisServer, clock: ManualClock, mode: str
) -> None:
    """NOREPLICAS (min-replicas-to-write, as the old primary answers once its replica is promoted)
    is a primary refusing writes, as READONLY is: the fallback takes the writes, the primary still
    says no to a client over its limit, and the error names the cause."""
    guard = CircuitBreaker(failure_threshold=1, min_calls=1, open_for=60.0, clock=clock)
    opened: list[str] = []
    guard.add_listener(lambda change: opened.append(change.reason))
    url = f"{server.url}?fallback=memory&blocked_cache=off"
    sync = mode == "sync"
    limiter = Limiter.from_url(url, breaker=guard) if sync else AsyncLimiter.from_url(url, breaker=guard)

    def hit_many(entries: list[tuple[str, str, str]]) -> bool:
        if sync:
            return limiter.hit_many(entries).allowed  # type: ignore[union-attr]
        return asyncio.run(limiter.hit_many(entries)).allowed  # type: ignore[arg-type]

    abuser = [("ip:abuser", "5/minute", "sliding_window"), GLOBAL]
    assert [hit_many(abuser) for _ in range(6)] == [True] * 5 + [False]
    with redis.Redis(port=server.port) as admin:
        admin.config_set("min-replicas-to-write", 1)
        with pytest.raises(redis.ResponseError, match="^NOREPLICAS"):
            admin.set("x", 1)
    newcomers = [hit_many([(f"ip:{n}", "5/minute", "sliding_window"), GLOBAL]) for n in range(20)]
    refused = [hit_many(abuser) for _ in range(20)]
    assert guard.state == "open"
    assert newcomers == [True] * 20
    assert refused == [False] * 20
    assert len(opened) == 1
    assert "Redis refuses writes (fewer replicas than min-replicas-to-write): NOREPLICAS" in opened[0]
    if sync:
        limiter.close()  # type: ignore[union-attr]
