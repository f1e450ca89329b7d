"""What every store shares, on every backend: the ``env`` fixture and key/TTL rules.

``env`` gives each test a backend (memory on the manual clock, a flushed
Redis/Valkey server, or the flushed three-primary Redis Cluster of
``cluster_fixtures``) and a mode (the sync store, or the async store run to
completion on a private loop), so each store's suite is written once.
``env.wait()`` moves the manual clock on memory and sleeps for real on
Redis, where the tests use windows well under a second.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from support import ManualClock

from bisman_ratelimit import InvalidArgument, TTLPolicyError
from bisman_ratelimit.stores import (
    AsyncChatContext,
    AsyncFlagAdmin,
    AsyncPresence,
    AsyncSessionStore,
    ChatContext,
    FlagAdmin,
    MemoryBackend,
    Namespace,
    NamespaceRegistry,
    Presence,
    SessionStore,
)
from bisman_ratelimit.testing import RedisServer, find_server_binary

# The redis_cluster fixture.
pytest_plugins = ["cluster_fixtures"]


class Synced:
    """An async store whose coroutine methods run to completion on a private loop."""

    def __init__(self, store: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._store = store
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._loop.run_until_complete(attribute(*args, **kwargs))

        return call


class Env:
    """One backend and one mode for a test."""

    def __init__(self, kind: str, mode: str, url: str | None, clock: ManualClock) -> None:
        self.kind = kind
        self.mode = mode
        self.url = url
        self.clock = clock
        self.memory = MemoryBackend(clock=clock) if kind == "memory" else None
        self.loop = asyncio.new_event_loop() if mode == "async" else None
        self._opened: list[Any] = []
        self.redis: Any = self.client(asyncio=False) if url else None

    def client(self, *, asyncio: bool) -> Any:
        """A new client of this env's server (or cluster), as an app would build it."""
        assert self.url is not None
        if self.kind == "cluster":
            return (redis.asyncio.cluster.RedisCluster if asyncio else redis.cluster.RedisCluster).from_url(
                self.url
            )
        return (redis.asyncio.Redis if asyncio else redis.Redis).from_url(self.url)

    def make(self, sync_class: type, async_class: type, **options: Any) -> Any:
        """The store under test, over this env's backend."""
        if self.mode == "sync":
            store = sync_class(self.memory or self.client(asyncio=False), **options)
            self._opened.append(store)
            return store
        assert self.loop is not None
        store = async_class(self.memory or self.client(asyncio=True), **options)
        self._opened.append(store)
        return Synced(store, self.loop)

    def wait(self, seconds: float) -> None:
        if self.memory is not None:
            self.clock.advance(seconds)
        else:
            time.sleep(seconds)

    def ttls(self) -> dict[str, int]:
        """Every key and its TTL in ms (-1: none)."""
        if self.memory is not None:
            return {key: self.memory.ttl(key) for key in self.memory.live_keys()}
        assert self.redis is not None
        return {key.decode(): int(self.redis.pttl(key)) for key in self.redis.scan_iter()}

    def close(self) -> None:
        for store in self._opened:
            # The store first (a flags reader's subscription), then the client it was given.
            if self.mode == "async":
                assert self.loop is not None
                self.loop.run_until_complete(store.aclose())
            else:
                store.close()
            client = getattr(store, "backend", None)
            if isinstance(client, (redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster)):
                assert self.loop is not None
                self.loop.run_until_complete(client.aclose())
            elif isinstance(client, (redis.Redis, redis.cluster.RedisCluster)):
                client.close()
        if self.loop is not None:
            self.loop.close()
        if self.redis is not None:
            self.redis.close()


# conftest's backends (tests/django has a conftest too: the name cannot be imported), and Cluster.
STORE_BACKENDS = ["memory", *(kind for kind in ("redis", "valkey") if find_server_binary(kind)), "cluster"]


@pytest.fixture(name="backend", params=STORE_BACKENDS)
def backend_fixture(
    request: pytest.FixtureRequest, server_pool: dict[str, RedisServer]
) -> tuple[str, str | None]:
    """conftest's ``backend``, and the Redis Cluster: ("cluster", the URL of one of its nodes)."""
    kind = request.param
    if kind == "memory":
        return "memory", None
    if kind == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        host, port = cluster.nodes[0]
        return "cluster", f"redis://{host}:{port}"
    server = server_pool.get(kind)
    if server is None or server.process is None or server.process.poll() is not None:
        server = server_pool[kind] = RedisServer(find_server_binary(kind)).start()
    with redis.Redis.from_url(server.url) as client:
        client.flushall()
    return kind, server.url


@pytest.fixture(name="env", params=["sync", "async"])
def env_fixture(
    request: pytest.FixtureRequest, backend: tuple[str, str | None], clock: ManualClock
) -> Iterator[Env]:
    made = Env(backend[0], request.param, backend[1], clock)
    yield made
    made.close()


STORES: dict[str, Callable[[Env], Any]] = {
    "sessions": lambda env: env.make(SessionStore, AsyncSessionStore),
    "chat": lambda env: env.make(ChatContext, AsyncChatContext, keep=3, window_size=2),
    "presence": lambda env: env.make(Presence, AsyncPresence),
    "flags": lambda env: env.make(FlagAdmin, AsyncFlagAdmin),
}


def test_every_ephemeral_key_has_a_ttl_and_flags_have_none(env: Env) -> None:
    sessions, chat = STORES["sessions"](env), STORES["chat"](env)
    presence, flags = STORES["presence"](env), STORES["flags"](env)
    first = sessions.create({"cart": [1]}, user_id="u:1")
    second = sessions.create({"x": 1})
    sessions.set_fields(second.id, {"y": 2})
    sessions.rotate(second.id, user_id="u:2")
    for i in range(7):
        chat.append("thread 9", {"n": i})
    presence.join("room/1", "alice")
    presence.heartbeat("room/1", "alice")
    flags.set("darkMode", True)

    ttls = env.ttls()
    assert ttls.pop("flags:config") == -1
    assert ttls.pop("flags:config:history:{flags:config}") == -1
    expected = {
        f"auth:sess:{{{first.id}}}": 1_800_000,
        "auth:sess:user:{u%3A1}": 43_200_000,
        "auth:sess:user:{u%3A2}": 43_200_000,
        "chat:ctx:thread:{thread%209}:seq": 120_000,
        "chat:ctx:thread:{thread%209}:w:2": 120_000,
        "chat:ctx:thread:{thread%209}:w:3": 120_000,
        "call:room:room/1:participants": 60_000,
    }
    rotated = sessions.user_sessions("u:2")
    assert len(rotated) == 1
    expected[f"auth:sess:{{{rotated[0]}}}"] = 1_800_000
    expected[f"auth:sess:{{{second.id}}}"] = 60_000  # the forward a rotation leaves
    assert set(ttls) == set(expected)
    for key, ttl in ttls.items():
        # Redis counts down while the test runs.
        assert expected[key] - 1000 < ttl <= expected[key], key


def test_keys_escape_user_input(env: Env) -> None:
    chat = STORES["chat"](env)
    presence = STORES["presence"](env)
    chat.append("a:b*", "hi")
    presence.join("r:{1}", "bob")
    chat.append("}{", "hi")
    assert set(env.ttls()) == {
        "chat:ctx:thread:{a%3Ab%2A}:seq",
        "chat:ctx:thread:{a%3Ab%2A}:w:0",
        # Braces from users are escaped: the hash tag is the whole id and nothing else.
        "chat:ctx:thread:{%7D%7B}:seq",
        "chat:ctx:thread:{%7D%7B}:w:0",
        "call:room:r%3A%7B1%7D:participants",
    }


def test_lone_surrogates_are_stored_as_json_escapes_and_refused_in_names(env: Env) -> None:
    # "\ud800" is valid JSON (json.loads gives it) but no UTF-8: a client's JSON body can carry it.
    sessions, chat = STORES["sessions"](env), STORES["chat"](env)
    presence, flags = STORES["presence"](env), STORES["flags"](env)
    session = sessions.create({"name": "\ud800", "ok": "é"})
    assert sessions.set_fields(session.id, {"more": ["\udfff x"]}) is True
    loaded = sessions.load(session.id)
    assert loaded is not None
    assert loaded.data == {"name": "\ud800", "ok": "é", "more": ["\udfff x"]}
    chat.extend("t", ["\ud800", "ü"])
    assert chat.last("t") == ["\ud800", "ü"]
    flags.set("motd", "\ud83d")
    assert flags.get("motd").value == "\ud83d"

    with pytest.raises(InvalidArgument) as caught:
        sessions.set_fields(session.id, {"a\ud800": 1})
    assert str(caught.value) == (
        "a session field name must be UTF-8 text, got 'a\\ud800' (a lone surrogate at index 1)"
    )
    with pytest.raises(InvalidArgument, match=r"^user_id must be UTF-8 text, got '\\udc80'"):
        sessions.create({}, user_id="\udc80")
    with pytest.raises(InvalidArgument, match=r"^a participant id must be UTF-8 text, got '\\ud800'"):
        presence.join("room", "\ud800")
    # Nothing half-written by the refusals.
    assert sessions.load(session.id).data == loaded.data
    assert presence.participants("room") == []


def test_a_policy_without_ttl_is_refused_at_construction() -> None:
    registry = NamespaceRegistry([Namespace("auth:sess", None, ephemeral=False)])
    with pytest.raises(TTLPolicyError, match="namespace 'auth:sess' is persistent and takes no TTL"):
        SessionStore(MemoryBackend(), registry=registry)
    registry = NamespaceRegistry([Namespace("flags:config", 60)])
    with pytest.raises(TTLPolicyError, match="feature flags in 'flags:config' are persistent"):
        FlagAdmin(MemoryBackend(), registry=registry)


def test_store_ttls_follow_the_registry() -> None:
    registry = NamespaceRegistry([Namespace("call:room", None), Namespace("chat:ctx", 5)])
    clock = ManualClock()
    memory = MemoryBackend(clock=clock)
    Presence(memory, room_ttl=7, registry=registry).join("r", "a")
    ChatContext(memory, ttl=9, registry=registry).append("t", "m")
    assert memory.ttl("call:room:r:participants") == 7000
    assert memory.ttl("chat:ctx:thread:{t}:w:0") == 9000


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: SessionStore(MemoryBackend(), idle_ttl=0),
            "idle_ttl must be a positive number of seconds, got 0",
        ),
        (lambda: ChatContext(MemoryBackend(), keep=0), "keep must be a whole number >= 1, got 0"),
        (
            lambda: Presence(MemoryBackend(), room_ttl=-1),
            "room_ttl must be a positive number of seconds, got -1",
        ),
        (lambda: SessionStore(MemoryBackend(), prefix="auth:*"), "prefix must look like 'domain:subdomain'"),
        (
            lambda: SessionStore("postgres://x"),
            "bad store URL 'postgres://x': expected memory:// or redis://",
        ),
        (
            lambda: SessionStore(redis.asyncio.Redis()),
            "this store is synchronous: give it a redis.Redis client",
        ),
        (
            lambda: AsyncSessionStore(redis.Redis()),
            "this store is asynchronous: give it a redis.asyncio.Redis",
        ),
        (
            lambda: SessionStore(42),
            "a store needs a URL, a redis.Redis client or a MemoryBackend, got builtins.int",
        ),
        (lambda: MemoryBackend(max_keys=2), "max_keys must be a whole number >= 8, got 2"),
    ],
)
def test_bad_configuration_is_reported_clearly(make: Callable[[], Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("*", r"\*")):
        make()


def test_stores_from_urls_close_their_clients(redis_url: str) -> None:
    with SessionStore(redis_url) as store:
        session = store.create({"a": 1})
        assert store.load(session.id) is not None
    with SessionStore("memory://") as store:
        assert store.load(store.create().id) is not None


def test_memory_backend_stays_bounded(clock: ManualClock) -> None:
    memory = MemoryBackend(clock=clock, max_keys=8)
    chat = ChatContext(memory)
    for i in range(20):
        chat.append(f"t{i}", "m")
    assert len(memory.live_keys()) <= 8
    # The newest threads are kept.
    assert chat.last("t19") == ["m"]


@pytest.mark.redis
def test_unreachable_server_raises_storage_unavailable() -> None:
    from bisman_ratelimit import StorageUnavailable
    from bisman_ratelimit.testing import RedisServer

    with RedisServer() as server:
        client = redis.Redis.from_url(server.url, retry=None, socket_timeout=0.5)
        sessions, chat = SessionStore(client), ChatContext(client)
        presence, flags = Presence(client), FlagAdmin(client)
        session = sessions.create({"a": 1})
        server.kill()
        calls: list[Callable[[], Any]] = [
            lambda: sessions.load(session.id),
            lambda: sessions.create({"a": 1}),
            lambda: sessions.set_fields(session.id, {"a": 2}),
            lambda: sessions.rotate(session.id),
            lambda: sessions.delete_user_sessions("u"),
            lambda: chat.append("t", "m"),
            lambda: chat.last("t"),
            lambda: presence.join("r", "a"),
            lambda: presence.count("r"),
            lambda: flags.set("f", True),
        ]
        for call in calls:
            with pytest.raises(StorageUnavailable, match=r"^Redis is unavailable: ") as caught:
                call()
            assert isinstance(caught.value.__cause__, redis.ConnectionError)
        client.close()


@pytest.mark.redis
async def test_unreachable_server_raises_storage_unavailable_async() -> None:
    from bisman_ratelimit import StorageUnavailable
    from bisman_ratelimit.testing import RedisServer

    with RedisServer() as server:
        client = redis.asyncio.Redis.from_url(server.url, retry=None, socket_timeout=0.5)
        store = AsyncSessionStore(client)
        session = await store.create({"a": 1})
        server.kill()
        with pytest.raises(StorageUnavailable, match=r"^Redis is unavailable: "):
            await store.load(session.id)
        with pytest.raises(StorageUnavailable, match=r"^Redis is unavailable: "):
            await AsyncChatContext(client).append("t", "m")
        await client.aclose()


def test_scripts_are_reloaded_after_script_flush(redis_client: redis.Redis) -> None:
    store = SessionStore(redis_client)
    session = store.create({"a": 1})
    redis_client.script_flush()
    loaded = store.load(session.id)
    assert loaded is not None and loaded.data == {"a": 1}
