"""Redis URLs: the time budget, the fallback, Sentinel and Cluster forms, and their errors."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio

from bisman_ratelimit import InvalidArgument, Limiter, StorageUnavailable
from bisman_ratelimit.backends import (
    DEFAULT_BUDGET,
    AsyncFallbackStorage,
    AsyncRedisStorage,
    FallbackStorage,
    MemoryStorage,
    RedisStorage,
    masked_url,
    redis_from_url,
    storage_from_url,
)
from bisman_ratelimit.core import CircuitBreaker, OutagePolicy
from bisman_ratelimit.testing import RedisServer, free_port


def connection_kwargs(storage: RedisStorage | AsyncRedisStorage) -> dict[str, object]:
    return dict(storage.client.connection_pool.connection_kwargs)


def test_a_plain_url_gets_a_short_budget_and_a_bounded_pool() -> None:
    storage = storage_from_url("redis://127.0.0.1:1/0")
    assert isinstance(storage, RedisStorage)
    assert storage.budget == DEFAULT_BUDGET == 0.05
    pool = storage.client.connection_pool
    assert isinstance(pool, redis.BlockingConnectionPool)
    # A check waits in line for a connection longer than its budget: a busy pool is not a Redis fault.
    assert (pool.max_connections, pool.timeout) == (64, 2.0)
    kwargs = connection_kwargs(storage)
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (0.05, 0.05)
    # redis-py retries nothing itself: the storage retries within the budget.
    assert kwargs["retry"]._retries == 0  # type: ignore[attr-defined]
    assert storage.blocked is not None
    storage.close()


@pytest.mark.parametrize(("text", "seconds"), [("50ms", 0.05), ("0.2", 0.2), ("1s", 1.0), ("2.5ms", 0.0025)])
def test_timeout_forms(text: str, seconds: float) -> None:
    storage = storage_from_url(f"redis://127.0.0.1:1/0?timeout={text}")
    assert storage.budget == seconds
    assert connection_kwargs(storage)["socket_timeout"] == seconds
    storage.close()


def test_redis_py_settings_in_the_url_win_over_the_budget() -> None:
    storage = storage_from_url("redis://127.0.0.1:1/0?timeout=0.1&socket_timeout=2&max_connections=3")
    assert connection_kwargs(storage)["socket_timeout"] == 2.0
    assert connection_kwargs(storage)["socket_connect_timeout"] == 0.1
    assert storage.client.connection_pool.max_connections == 3
    storage.close()


def test_the_budget_in_code() -> None:
    storage = storage_from_url("redis://127.0.0.1:1/0", timeout=0.3)
    assert storage.budget == 0.3 and connection_kwargs(storage)["socket_timeout"] == 0.3
    storage.close()


def test_fallback_from_the_url() -> None:
    url = (
        "redis://127.0.0.1:1/0?fallback=memory&on_outage=open&on_outage.login=closed&instances=3"
        "&breaker_failures=7&breaker_window=30s&breaker_min_calls=40&breaker_open=500ms&breaker_probes=2"
        "&prefix=app"
    )
    storage = storage_from_url(url)
    assert isinstance(storage, FallbackStorage)
    assert isinstance(storage.primary, RedisStorage) and storage.primary.prefix == "app"
    assert storage.instances == 3
    breaker = storage.breaker
    assert (
        breaker.failure_threshold,
        breaker.failure_window,
        breaker.min_calls,
        breaker.open_for,
        breaker.probes,
    ) == (7, 30.0, 40, 0.5, 2)
    assert storage.policy == OutagePolicy(default="open", by_namespace={"login": "closed"})
    assert storage.policy.reaction("login:alice") == "closed"
    assert storage.policy.reaction("login") == "closed"
    assert storage.policy.reaction("loginx") == "open"
    storage.close()


def test_fallback_from_code() -> None:
    breaker = CircuitBreaker(failure_threshold=2)
    local = MemoryStorage(max_keys=100)
    storage = storage_from_url(
        "redis://127.0.0.1:1/0", fallback=local, breaker=breaker, on_outage_by_prefix={"health": "open"}
    )
    assert isinstance(storage, FallbackStorage)
    assert storage.breaker is breaker and storage.local is local
    assert storage.policy == OutagePolicy(default="fallback", by_namespace={"health": "open"})
    storage.close()


async def test_async_fallback_from_the_url() -> None:
    storage = storage_from_url("redis://127.0.0.1:1/0?fallback=memory&timeout=20ms", asyncio=True)
    assert isinstance(storage, AsyncFallbackStorage)
    assert isinstance(storage.primary, AsyncRedisStorage) and storage.primary.budget == 0.02
    assert isinstance(storage.primary.client.connection_pool, redis.asyncio.BlockingConnectionPool)
    await storage.aclose()


def test_sentinel_url_is_parsed_without_connecting() -> None:
    url = (
        "redis+sentinel://user:pw%40x@10.0.0.1:26379,10.0.0.2,[::1]:26380/cache/3"
        "?sentinel_password=sp&timeout=0.2&health_check_interval=5"
    )
    storage = storage_from_url(url)
    assert isinstance(storage, RedisStorage)
    sentinels = storage._closing
    assert [s.connection_pool.connection_kwargs["host"] for s in sentinels] == ["10.0.0.1", "10.0.0.2", "::1"]
    assert [s.connection_pool.connection_kwargs["port"] for s in sentinels] == [26379, 26379, 26380]
    assert sentinels[0].connection_pool.connection_kwargs["password"] == "sp"
    pool = storage.client.connection_pool
    assert pool.service_name == "cache"
    kwargs = pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("user", "pw@x", 3)
    assert (kwargs["socket_timeout"], kwargs["health_check_interval"]) == (0.2, 5)
    storage.close()


def test_cluster_url_that_cannot_be_reached_is_named() -> None:
    port = free_port()
    with pytest.raises(
        StorageUnavailable, match=rf"Redis Cluster at 'redis\+cluster://:\*\*\*@127.0.0.1:{port}'"
    ):
        storage_from_url(f"redis+cluster://:secret@127.0.0.1:{port}")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "redis://h/0?timeout=fast",
            "timeout must be a positive duration such as 0.05, 50ms or 1s, got 'fast'",
        ),
        ("redis://h/0?timeout=0", "timeout must be a positive duration"),
        ("redis://h/0?fallback=disk", "fallback must be 'memory' or absent, got 'disk'"),
        ("redis://h/0?instances=2&on_outage=open", "instances, on_outage only apply with fallback=memory"),
        ("redis://h/0?fallback=memory&instances=0", "instances must be a whole number >= 1, got '0'"),
        (
            "redis://h/0?fallback=memory&breaker_probes=x",
            "breaker_probes must be a whole number >= 1, got 'x'",
        ),
        (
            "redis://h/0?fallback=memory&on_outage=deny",
            "on_outage must be one of fallback, open, closed, got 'deny'",
        ),
        ("redis://h/0?blocked_cache=maybe", "blocked_cache must be on or off, got 'maybe'"),
        ("redis://h:port/0", "the port must be a number"),
        (
            "redis+sentinel://h:26379",
            "expected redis+sentinel://host:port[,host:port...]/<service name>[/<db>]",
        ),
        ("redis+sentinel://h:26379/svc/zero", "expected redis+sentinel://host:port"),
        ("redis+sentinel://h:x/svc", "expected host:port[,host:port...], got 'h:x'"),
        ("redis+cluster://h:1/2", "Redis Cluster has only database 0"),
    ],
)
def test_bad_urls_are_named(url: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        storage_from_url(url)
    assert message in str(info.value)


def test_passwords_are_masked_in_errors() -> None:
    with pytest.raises(InvalidArgument) as info:
        storage_from_url("redis+sentinel://:hunter2@h:26379")
    assert "hunter2" not in str(info.value) and ":***@h:26379" in str(info.value)


def test_breaker_given_twice_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="give breaker=CircuitBreaker"):
        storage_from_url("redis://h/0?fallback=memory&breaker_open=1", breaker=CircuitBreaker())


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:hunter2@h:1/0", "redis://:***@h:1/0"),
        ("redis://ops:p@ss@h:1/0", "redis://ops:***@h:1/0"),  # redis-py splits at the last @
        ("redis://ops:a/b#c@h:1/0", "redis://ops:***@h:1/0"),
        ("redis://h:1/0?password=hunter2&db=1", "redis://h:1/0?password=***&db=1"),
        (
            "redis+sentinel://:pw@s1:26379,s2/cache?sentinel_password=hunter2&timeout=1s",
            "redis+sentinel://:***@s1:26379,s2/cache?sentinel_password=***&timeout=1s",
        ),
        ("rediss://h/0?ssl_password=hunter2", "rediss://h/0?ssl_password=***"),
        ("redis://h/0?client_name=me@host", "redis://h/0?client_name=me@host"),
        ("redis://user@h/0", "redis://user@h/0"),
        ("unix:///run/redis.sock?password=hunter2", "unix:///run/redis.sock?password=***"),
    ],
)
def test_masked_url_hides_every_password(url: str, masked: str) -> None:
    assert masked_url(url) == masked


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "redis://:pw@h/0?socket_timout=1",
            "bad storage URL 'redis://:***@h/0?socket_timout=1': unknown query parameter 'socket_timout' "
            "(did you mean socket_timeout?); accepted: blocked_cache, breaker_failures,",
        ),
        ("redis://h/0?foo=bar", "unknown query parameter 'foo'; accepted: "),
        (
            "redis://h/0?ssl_ca_certs=/ca.pem",
            "ssl_ca_certs is a TLS setting: it applies to rediss:// URLs only",
        ),
        ("unix:///run/redis.sock?prefx=a", "unknown query parameter 'prefx' (did you mean prefix?)"),
        ("redis+cluster://h:1?ssl=maybe", "ssl must be on or off, got 'maybe'"),
        (
            "redis://:pw@[::1:6390/0",
            "bad storage URL 'redis://:***@[::1:6390/0': it cannot be read (Invalid IPv6 URL): "
            "an IPv6 address goes in brackets, e.g. redis://[::1]:6380/0",
        ),
    ],
)
def test_unknown_and_unreadable_url_parts_are_refused(url: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        storage_from_url(url)
    assert message in str(info.value)
    assert "pw" not in str(info.value).replace("password", "")


def test_every_documented_parameter_is_accepted() -> None:
    storage = storage_from_url(
        "redis://127.0.0.1:1/0?timeout=1s&prefix=app&blocked_cache=off&coalesce=on&fallback=memory"
        "&on_outage=open&on_outage.auth=closed&instances=2&breaker_failures=3&breaker_window=10"
        "&breaker_min_calls=5&breaker_open=2&breaker_probes=1&socket_timeout=2&max_connections=3"
        "&health_check_interval=5&client_name=app&db=0"
    )
    storage.close()
    storage = storage_from_url("rediss://127.0.0.1:1/0?ssl_cert_reqs=none&ssl_check_hostname=false")
    storage.close()


@pytest.fixture(scope="module")
def unix_socket() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "redis.sock")
        with RedisServer(args=("--unixsocket", path, "--unixsocketperm", "700")):
            yield path


@pytest.mark.redis
def test_a_unix_socket_url_reaches_the_server(unix_socket: str) -> None:
    url = f"unix://{unix_socket}?db=3&timeout=1s"
    opened = redis_from_url(url, asyncio=False)
    assert opened.client.ping() is True
    assert opened.client.connection_pool.connection_kwargs["path"] == unix_socket
    opened.client.close()
    with Limiter.from_url(url) as limiter:
        assert limiter.hit("rl:ip:{203.0.113.9}:api:/login", "1/minute").allowed
        assert not limiter.hit("rl:ip:{203.0.113.9}:api:/login", "1/minute").allowed
    with redis.Redis(unix_socket_path=unix_socket, db=3) as client:
        assert client.keys("*") == [b"rl:ip:{203.0.113.9}:api:/login:s1m"]
