"""Stores built from URLs, by the parser the rate limits use: the time budget,
TLS and pool options, Sentinel, and Redis Cluster."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster

from bisman_ratelimit import InvalidArgument, StorageUnavailable
from bisman_ratelimit.backends import DEFAULT_BUDGET, Script
from bisman_ratelimit.stores import (
    AsyncChatContext,
    AsyncFlagAdmin,
    AsyncFlags,
    AsyncPresence,
    AsyncSessionStore,
    ChatContext,
    FlagAdmin,
    Flags,
    MemoryBackend,
    Presence,
    SessionStore,
    backend_from_url,
)
from bisman_ratelimit.stores._backend import AsyncUrlRunner, RedisRunner
from bisman_ratelimit.stores._chat import APPEND
from bisman_ratelimit.stores._sessions import LOAD
from bisman_ratelimit.testing import RedisServer

if TYPE_CHECKING:
    from cluster_fixtures import RedisClusterServers
    from sentinel_fixtures import SentinelSetup

# The sentinel_setup and redis_cluster fixtures.
pytest_plugins = ["sentinel_fixtures", "cluster_fixtures"]

# Well above any budget used here, well below what an unbounded wait takes.
MARGIN = 0.4
TIMED_OUT = "^Redis is unavailable: Timeout reading from"


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    """A server of this module's own, which the tests stop and resume."""
    with RedisServer() as running:
        yield running


@contextmanager
def stopped(server: RedisServer) -> Iterator[None]:
    """The server frozen (SIGSTOP): it accepts connections, but answers nothing."""
    assert server.process is not None
    server.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        server.process.send_signal(signal.SIGCONT)


def pool_of(store: Any) -> Any:
    return store.backend.connection_pool


def test_a_store_url_gets_the_budget_and_the_bounded_pool_of_limits() -> None:
    with SessionStore("redis://127.0.0.1:1/0") as store:
        pool = pool_of(store)
        assert isinstance(pool, redis.BlockingConnectionPool)
        assert (pool.max_connections, pool.timeout) == (64, DEFAULT_BUDGET)
        kwargs = pool.connection_kwargs
        assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (0.05, 0.05)
        assert kwargs["retry"]._retries == 0


async def test_an_async_store_url_takes_the_timeout_and_pool_options() -> None:
    store = AsyncSessionStore("redis://127.0.0.1:1/0?timeout=200ms&max_connections=3")
    pool = pool_of(store)
    assert isinstance(pool, redis.asyncio.BlockingConnectionPool)
    assert (pool.max_connections, pool.timeout) == (3, 0.2)
    assert pool.connection_kwargs["socket_timeout"] == 0.2
    await store.aclose()


def test_a_rediss_url_gives_a_store_tls_connections() -> None:
    with Presence("rediss://127.0.0.1:1/0?ssl_cert_reqs=none") as store:
        assert pool_of(store).connection_class is redis.SSLConnection


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("fallback=memory", "fallback is a setting"),
        ("prefix=x&blocked_cache=off", "blocked_cache, prefix are settings"),
        ("on_outage.auth=open", "on_outage.auth is a setting"),
    ],
)
def test_settings_of_rate_limits_are_refused_for_a_store(query: str, names: str) -> None:
    with pytest.raises(
        InvalidArgument,
        match=re.escape(
            f"bad storage URL 'redis://127.0.0.1:1/0?{query}': "
            f"{names} of rate limit storage, not of ChatContext"
        ),
    ):
        ChatContext(f"redis://127.0.0.1:1/0?{query}")


def test_bad_store_urls_are_named() -> None:
    with pytest.raises(
        InvalidArgument, match=r"bad storage URL 'redis://:\*\*\*@h:x/0': the port must be a number"
    ):
        SessionStore("redis://:secret@h:x/0")
    with pytest.raises(InvalidArgument, match="timeout must be a positive duration such as 0.05, 50ms or 1s"):
        SessionStore("redis://127.0.0.1:1/0?timeout=0")
    with pytest.raises(
        InvalidArgument,
        match=re.escape(
            "bad store URL 'mysql://u:***@x': expected memory:// or redis://, rediss://, unix://, "
            "redis+sentinel://, redis+cluster://"
        ),
    ):
        backend_from_url("mysql://u:pw@x", use_async=False)


def test_a_memory_url_takes_max_keys_as_for_limits() -> None:
    backend = backend_from_url("memory://?max_keys=64", use_async=False)
    assert isinstance(backend, MemoryBackend) and backend.max_keys == 64
    with pytest.raises(
        InvalidArgument,
        match=re.escape("bad store URL 'memory://?max_keys=lots': max_keys must be a whole number"),
    ):
        SessionStore("memory://?max_keys=lots")
    with pytest.raises(
        InvalidArgument,
        match=re.escape("bad store URL 'memory://here': memory:// takes no host or path, only ?max_keys=N"),
    ):
        AsyncSessionStore("memory://here")


STORE_CALLS: dict[str, Callable[[str], tuple[Any, Callable[[], object]]]] = {
    "sessions": lambda url: (store := SessionStore(url), lambda: store.load(store.create({"a": 1}).id)),
    "chat": lambda url: (store := ChatContext(url), lambda: store.append("t", "m")),
    "presence": lambda url: (store := Presence(url), lambda: store.join("r", "ann")),
    "flags": lambda url: (store := FlagAdmin(url), lambda: store.set("f", True)),
}


@pytest.mark.redis
@pytest.mark.parametrize("name", STORE_CALLS)
@pytest.mark.parametrize(("query", "budget"), [("", DEFAULT_BUDGET), ("?timeout=0.2", 0.2)])
def test_a_stopped_server_fails_a_store_call_within_the_budget(
    server: RedisServer, name: str, query: str, budget: float
) -> None:
    store, call = STORE_CALLS[name](server.url + query)
    with store:
        call()  # connected, scripts loaded
        with stopped(server):
            started = time.perf_counter()
            with pytest.raises(StorageUnavailable, match=TIMED_OUT) as caught:
                call()
            elapsed = time.perf_counter() - started
        assert isinstance(caught.value.__cause__, redis.TimeoutError)
        assert budget <= elapsed < budget + MARGIN, elapsed
        call()  # resumed: the next call is served


ASYNC_STORE_CALLS: dict[str, Callable[[str], tuple[Any, Callable[[], Awaitable[object]]]]] = {
    "sessions": lambda url: (store := AsyncSessionStore(url), lambda: store.create({"a": 1})),
    "chat": lambda url: (store := AsyncChatContext(url), lambda: store.append("t", "m")),
    "presence": lambda url: (store := AsyncPresence(url), lambda: store.join("r", "ann")),
    "flags": lambda url: (store := AsyncFlagAdmin(url), lambda: store.set("f", True)),
}


@pytest.mark.redis
@pytest.mark.parametrize("name", ASYNC_STORE_CALLS)
async def test_a_stopped_server_fails_an_async_store_call_within_the_budget(
    server: RedisServer, name: str
) -> None:
    store, call = ASYNC_STORE_CALLS[name](server.url)
    async with store:
        await call()
        with stopped(server):
            started = time.perf_counter()
            with pytest.raises(StorageUnavailable, match=TIMED_OUT):
                await call()
            elapsed = time.perf_counter() - started
        assert DEFAULT_BUDGET <= elapsed < DEFAULT_BUDGET + MARGIN, elapsed
        await call()


def test_stores_run_the_engines_scripts_loader() -> None:
    assert isinstance(LOAD.script, Script) and isinstance(APPEND.script, Script)
    assert LOAD.script.source.startswith(Script("ratelimit.lua").source[:200])


def test_a_store_from_a_sentinel_url_reaches_the_primary(sentinel_setup: SentinelSetup) -> None:
    sentinel_setup.flush()
    with SessionStore(sentinel_setup.url + "&timeout=0.5") as store:
        runner = store._runner
        assert isinstance(runner, RedisRunner)
        assert pool_of(store).connection_kwargs["socket_timeout"] == 0.5
        session = store.create({"cart": [1]}, user_id=7)
        loaded = store.load(session.id)
        assert loaded is not None and loaded.data == {"cart": [1]}
        sentinels = runner._closing
        assert sorted(s.connection_pool.connection_kwargs["port"] for s in sentinels) == sorted(
            port for _, port in sentinel_setup.sentinel_addresses
        )
    with sentinel_setup.client_for(sentinel_setup.primary_port()) as client:
        assert client.exists(f"auth:sess:{{{session.id}}}", "auth:sess:user:{7}") == 2
    # Closing the store closed the sentinels' clients too.
    for sentinel in sentinels:
        pool = sentinel.connection_pool
        assert [conn for conn in pool._available_connections if conn._sock is not None] == []


async def test_an_async_store_from_a_sentinel_url_reaches_the_primary(sentinel_setup: SentinelSetup) -> None:
    sentinel_setup.flush()
    async with AsyncPresence(sentinel_setup.url) as presence:
        assert (await presence.join("room", "ann")).participants == 1
        assert await presence.count("room") == 1
        # The running loop's client, with the sentinels' clients to close along with it.
        runner = presence._runner
        assert isinstance(runner, AsyncUrlRunner)
        assert len(runner._clients[asyncio.get_running_loop()].connection.closing) == 3
    with sentinel_setup.client_for(sentinel_setup.primary_port()) as client:
        assert client.exists("call:room:room:participants") == 1


def test_presence_and_flag_admin_run_on_a_cluster(redis_cluster: RedisClusterServers) -> None:
    with Presence(redis_cluster.url) as presence, FlagAdmin(redis_cluster.url) as admin:
        rooms = [f"room{i}" for i in range(6)]
        for room in rooms:
            presence.join(room, "ann")
        presence.join("room0", "bob")
        assert [presence.count(room) for room in rooms] == [2, 1, 1, 1, 1, 1]
        client = presence.backend
        assert isinstance(client, redis.cluster.RedisCluster)
        nodes = {client.get_node_from_key(f"call:room:{room}:participants").port for room in rooms}
        assert len(nodes) > 1  # the rooms are spread over the primaries
        assert admin.set("beta", True) and admin.get("beta") is not None


async def test_async_presence_runs_on_a_cluster(redis_cluster: RedisClusterServers) -> None:
    async with AsyncPresence(redis_cluster.url) as presence:
        assert (await presence.join("room", "ann")).participants == 1
        assert [p.id for p in await presence.participants("room")] == ["ann"]


def test_sessions_chat_and_flags_run_on_a_cluster_url(redis_cluster: RedisClusterServers) -> None:
    with (
        SessionStore(redis_cluster.url + "?timeout=1") as sessions,
        ChatContext(redis_cluster.url + "?timeout=1", keep=5, window_size=2) as chat,
        FlagAdmin(redis_cluster.url) as admin,
        Flags(redis_cluster.url, max_age=3600) as flags,
    ):
        client = sessions.backend
        assert isinstance(client, redis.cluster.RedisCluster)
        made = [sessions.create({"n": i}, user_id="alice") for i in range(12)]
        ids = sorted(session.id for session in made)
        # One user's sessions are spread over the primaries (all 12 on one: odds of 1 in 177 147).
        ports = {client.get_node_from_key(f"auth:sess:{{{sid}}}").port for sid in ids}
        assert len(ports) > 1
        assert sessions.user_sessions("alice") == ids
        rotated = sessions.rotate(ids[0], user_id="alice")
        assert rotated is not None and sessions.load(ids[0]) is None
        assert sessions.user_sessions("alice") == sorted([rotated, *ids[1:]])
        assert sessions.delete_user_sessions("alice") == sorted([rotated, *ids[1:]])
        assert [sessions.load(sid) for sid in [rotated, *ids]] == [None] * 13
        assert sessions.user_sessions("alice") == []

        chat.extend("thread 1", list(range(9)))
        assert chat.last("thread 1") == [4, 5, 6, 7, 8]
        windows = [key.decode() for key in client.scan_iter(match="chat:ctx:thread:*")]
        assert sorted(windows) == [
            "chat:ctx:thread:{thread%201}:seq",
            "chat:ctx:thread:{thread%201}:w:2",
            "chat:ctx:thread:{thread%201}:w:3",
            "chat:ctx:thread:{thread%201}:w:4",
        ]
        assert len({client.keyslot(key) for key in windows}) == 1

        assert flags.get("beta") is None
        admin.set("beta", True)
        # max_age is an hour: only the change message can make the reader reload.
        deadline = time.monotonic() + 2
        while flags.get("beta") is not True:
            assert time.monotonic() < deadline, "the flags reader missed the change on the cluster"
            time.sleep(0.005)


async def test_async_sessions_chat_and_flags_run_on_a_cluster_url(redis_cluster: RedisClusterServers) -> None:
    async with (
        AsyncSessionStore(redis_cluster.url + "?timeout=1") as sessions,
        AsyncChatContext(redis_cluster.url + "?timeout=1") as chat,
        AsyncFlagAdmin(redis_cluster.url) as admin,
        AsyncFlags(redis_cluster.url, max_age=3600) as flags,
    ):
        made = await asyncio.gather(*(sessions.create({"n": i}, user_id=7) for i in range(30)))
        ids = sorted(session.id for session in made)
        assert await sessions.user_sessions(7) == ids
        assert await sessions.delete_user_sessions(7) == ids
        assert await sessions.user_sessions(7) == []
        assert await chat.append("t", "hi") == 1 and await chat.last("t") == ["hi"]
        assert await flags.get("beta") is None
        await admin.set("beta", "on")
        deadline = time.monotonic() + 2
        while await flags.get("beta") != "on":
            assert time.monotonic() < deadline, "the async flags reader missed the change on the cluster"
            await asyncio.sleep(0.005)
