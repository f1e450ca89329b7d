"""Feature flags: the admin API on every backend, and the cached reader."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import pytest
import redis
import redis.asyncio
from support import ManualClock
from test_store_conformance import Env, backend_fixture, env_fixture  # noqa: F401 - the env fixture

from bisman_ratelimit import InvalidArgument, StorageUnavailable
from bisman_ratelimit.stores import (
    AsyncFlagAdmin,
    AsyncFlags,
    Flag,
    FlagAdmin,
    FlagChange,
    Flags,
    MemoryBackend,
    parse_flag_value,
)

# The redis_cluster fixture, for env's Cluster backend.
pytest_plugins = ["cluster_fixtures"]


def admin_for(env: Env) -> FlagAdmin:
    admin: FlagAdmin = env.make(FlagAdmin, AsyncFlagAdmin)
    return admin


def reader_for(env: Env, **options: object) -> Flags:
    reader: Flags = env.make(Flags, AsyncFlags, **options)
    return reader


def eventually(check: Callable[[], bool], within: float = 1.0) -> float:
    """Seconds until ``check()`` held; fails after ``within``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > within:
            pytest.fail(f"not true within {within} s")
        time.sleep(0.002)
    return time.monotonic() - start


def test_typed_values(env: Env) -> None:
    admin = admin_for(env)
    assert admin.set("darkMode", True)
    assert admin.set("theme", "blue")
    assert admin.set("limits", {"max": 3, "tiers": ["a", "b"]})
    assert admin.set("count", 3)
    assert admin.set("as_json_text", "x", "json")
    assert not admin.set("darkMode", True)  # unchanged
    assert admin.all() == {
        "as_json_text": Flag("as_json_text", "json", "x"),
        "count": Flag("count", "json", 3),
        "darkMode": Flag("darkMode", "bool", True),
        "limits": Flag("limits", "json", {"max": 3, "tiers": ["a", "b"]}),
        "theme": Flag("theme", "str", "blue"),
    }
    assert admin.get("theme") == Flag("theme", "str", "blue")
    assert admin.delete("theme")
    assert not admin.delete("theme")
    assert admin.get("theme") is None
    assert env.ttls()["flags:config"] == -1


def test_every_change_is_in_the_bounded_history(env: Env) -> None:
    admin = env.make(FlagAdmin, AsyncFlagAdmin, history_size=3)
    before = time.time() if env.memory is None else env.clock()
    assert admin.set("darkMode", True, by="alice")
    assert not admin.set("darkMode", True, by="bob")  # no change, no entry
    assert admin.set("darkMode", False)
    assert admin.set("theme", "blue", by="carol")
    assert admin.delete("darkMode", by="dave")
    assert not admin.delete("darkMode", by="erin")
    after = time.time() if env.memory is None else env.clock()
    history = admin.history()
    assert [(c.name, c.by, c.old, c.new) for c in history] == [
        ("darkMode", "dave", Flag("darkMode", "bool", False), None),
        ("theme", "carol", None, Flag("theme", "str", "blue")),
        ("darkMode", "api", Flag("darkMode", "bool", True), Flag("darkMode", "bool", False)),
    ]
    assert all(isinstance(c, FlagChange) and before - 1 <= c.at <= after + 1 for c in history)
    assert [c.by for c in admin.history(limit=1)] == ["dave"]
    assert env.ttls()["flags:config:history:{flags:config}"] == -1
    with pytest.raises(InvalidArgument, match=r"who changes a flag \(by=\) must be 1 to 200"):
        admin.set("darkMode", True, by="")


def test_bad_flags_are_refused(env: Env) -> None:
    admin = admin_for(env)
    with pytest.raises(InvalidArgument, match="flag 'x' is a bool flag, got 'yes'"):
        admin.set("x", "yes", "bool")
    with pytest.raises(InvalidArgument, match="flag 'x' is a str flag, got 1"):
        admin.set("x", 1, "str")
    with pytest.raises(InvalidArgument, match="unknown flag type 'int': expected one of bool, str, json"):
        admin.set("x", 1, "int")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="a flag name must be 1 to 200 printable characters, got ''"):
        admin.set("", True)
    with pytest.raises(InvalidArgument, match=r"flag 'x': the value cannot be stored as JSON"):
        admin.set("x", float("nan"))
    assert env.ttls() == {}


@pytest.mark.parametrize(
    ("raw", "flag_type", "value"),
    [
        ("true", "bool", True),
        ("OFF", "bool", False),
        ("1", "bool", True),
        ("no", "bool", False),
        ("hello", "str", "hello"),
        ("[1, 2]", "json", [1, 2]),
        ('"s"', "json", "s"),
    ],
)
def test_parse_flag_value(raw: str, flag_type: str, value: object) -> None:
    assert parse_flag_value(raw, flag_type) == value


def test_parse_flag_value_errors() -> None:
    with pytest.raises(
        InvalidArgument, match="bad bool flag value 'maybe': use true/false, on/off, yes/no or 1/0"
    ):
        parse_flag_value("maybe", "bool")
    with pytest.raises(InvalidArgument, match="bad JSON flag value '{': Expecting property name"):
        parse_flag_value("{", "json")


def test_reader_sees_admin_changes(env: Env) -> None:
    admin, reader = admin_for(env), reader_for(env)
    assert reader.get("darkMode") is None
    assert reader.get("darkMode", "unset") == "unset"
    assert reader.is_enabled("darkMode") is False
    assert reader.is_enabled("darkMode", default=True) is True
    admin.set("darkMode", True)
    admin.set("theme", "blue")
    eventually(lambda: reader.is_enabled("darkMode"))
    assert reader.get("theme") == "blue"
    assert reader.flag("theme") == Flag("theme", "str", "blue")
    with pytest.raises(InvalidArgument, match="flag 'theme' is a str flag, not a bool flag"):
        reader.is_enabled("theme")
    admin.delete("darkMode")
    eventually(lambda: reader.get("darkMode") is None)
    assert set(reader.all()) == {"theme"}


def test_reads_are_served_from_the_cache(redis_client: redis.Redis) -> None:
    reader = Flags(redis_client)
    admin = FlagAdmin(redis_client)
    admin.set("a", True)
    eventually(lambda: reader.is_enabled("a"))
    before = redis_client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    for _ in range(200):
        assert reader.is_enabled("a")
    after = redis_client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    assert after == before
    # A write that bypasses the admin API publishes nothing, so it is not seen...
    redis_client.hset("flags:config", "a", '{"type":"bool","value":false}')
    time.sleep(0.05)
    assert reader.is_enabled("a")
    # ...until the next published change reloads the snapshot.
    admin.set("b", "x")
    eventually(lambda: not reader.is_enabled("a"))
    reader.close()


def test_max_age_bounds_staleness_without_messages(redis_client: redis.Redis) -> None:
    clock = ManualClock()
    reader = Flags(redis_client, max_age=30, clock=clock)
    assert reader.get("a") is None
    redis_client.hset("flags:config", "a", '{"type":"str","value":"v"}')
    clock.advance(29.999)
    assert reader.get("a") is None
    clock.advance(0.001)
    assert reader.get("a") == "v"
    reader.close()


def test_a_reconnected_subscription_reloads(redis_client: redis.Redis) -> None:
    reader = Flags(redis_client)
    assert reader.get("a") is None
    # A change made while the subscription is down publishes to nobody.
    redis_client.client_kill_filter(_type="pubsub")
    redis_client.hset("flags:config", "a", '{"type":"bool","value":true}')
    eventually(lambda: reader.get("a") is True)
    reader.close()


def test_memory_backend_invalidates_at_once(clock: ManualClock) -> None:
    memory = MemoryBackend(clock=clock)
    reader, admin = Flags(memory), FlagAdmin(memory)
    assert reader.get("a") is None
    admin.set("a", "one")
    assert reader.get("a") == "one"
    admin.set("a", "two")
    assert reader.get("a") == "two"
    reader.close()
    admin.set("a", "three")
    assert memory._subscriptions["flags:config"] == []


async def test_async_reader(redis_url: str) -> None:
    admin = FlagAdmin(redis_url)
    async with AsyncFlags(redis_url) as reader:
        assert await reader.get("x") is None
        admin.set("x", {"on": True})
        start = time.monotonic()
        while await reader.get("x") != {"on": True}:
            assert time.monotonic() - start < 1.0
        assert await reader.all() == {"x": Flag("x", "json", {"on": True})}
    admin.close()


def test_a_foreign_field_is_skipped_and_logged_once(
    redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    # The plain-value style the seed suggests, written by hand beside our flags.
    admin = FlagAdmin(redis_client)
    admin.set("beta", True)
    redis_client.hset("flags:config", "darkMode", "true")
    reader = Flags(redis_client)
    with caplog.at_level(logging.WARNING, logger="bisman_ratelimit.flags"):
        assert admin.all() == {"beta": Flag("beta", "bool", True)}
        assert admin.foreign() == {"darkMode": "true"}
        assert admin.get("darkMode") is None
        assert reader.is_enabled("beta") is True
        assert reader.get("darkMode", "default") == "default"
        admin.set("gamma", True)  # published: the reader loads every field again
        eventually(lambda: reader.get("gamma") is True)
        assert admin.foreign() == {"darkMode": "true"}
    reader.close()
    warnings = [r.getMessage() for r in caplog.records if r.name == "bisman_ratelimit.flags"]
    assert (
        warnings.count(
            "flag 'darkMode' holds a value not written by this library: b'true'; flag readers skip it"
        )
        == 2
    )  # once for the admin, once for the reader: once per process each


@pytest.mark.redis
def test_unreachable_redis_serves_the_last_snapshot() -> None:
    from bisman_ratelimit.testing import RedisServer

    with RedisServer() as server:
        client = redis.Redis.from_url(server.url, retry=None, socket_timeout=0.5)
        clock = ManualClock()
        admin, reader = FlagAdmin(client), Flags(client, retry_interval=1.0, clock=clock)
        admin.set("a", True)
        assert reader.is_enabled("a")
        server.kill()
        with pytest.raises(StorageUnavailable, match="Redis is unavailable"):
            admin.set("a", False)
        clock.advance(31)  # past max_age: a reload is due, but Redis is gone
        assert reader.is_enabled("a")
        assert reader.cache.failed_at is not None
        fresh = Flags(redis.Redis.from_url(server.url, retry=None), clock=clock)
        with pytest.raises(StorageUnavailable, match="Redis is unavailable"):
            fresh.get("a")
        # Within retry_interval the dead server is not tried again.
        with pytest.raises(StorageUnavailable, match="feature flags cannot be read: Redis was unreachable"):
            fresh.get("a")
        server.stop()  # reaps the killed process
        server.start()
        clock.advance(1.0)
        admin.set("a", False)
        assert reader.is_enabled("a") is False
        assert fresh.get("a") is False
        reader.close()
        fresh.close()
        fresh.backend.close()
        client.close()


async def test_concurrent_first_reads_open_one_subscription(redis_client: redis.Redis) -> None:
    FlagAdmin(redis_client).set("dark", True)
    kwargs = redis_client.get_connection_kwargs()
    client = redis.asyncio.Redis(host=kwargs["host"], port=kwargs["port"])
    reader = AsyncFlags(client)
    try:
        results = await asyncio.gather(*[reader.is_enabled("dark") for _ in range(50)])
        assert results == [True] * 50
        assert redis_client.pubsub_numsub("flags:config") == [(b"flags:config", 1)]
    finally:
        await reader.aclose()
        await client.aclose()
    # The server drops the subscription when it reads the closed socket: moments later, not at once.
    eventually(lambda: redis_client.pubsub_numsub("flags:config") == [(b"flags:config", 0)], within=2.0)


@pytest.mark.redis
async def test_readers_follow_a_failover_of_the_cluster_node_of_the_flags() -> None:
    from cluster_fixtures import RedisClusterServers

    cluster = RedisClusterServers(replicas=3, node_timeout_ms=1000).start()
    try:
        url = cluster.url + "?timeout=500ms"
        admin = FlagAdmin(url)
        admin.set("v", 0, "json")
        options = {"max_age": 2.0, "retry_interval": 0.2}
        readers = Flags(url, **options), AsyncFlags(url, **options)
        assert readers[0].get("v") == 0 and await readers[1].get("v") == 0

        failed = cluster.primary_of("flags:config")
        failed.kill()
        # The replica takes over: the slot is served again, from another node.
        deadline = time.monotonic() + 30
        while True:
            try:
                if cluster.primary_of("flags:config") is not failed and admin.set("v", 1, "json"):
                    break
            except (redis.RedisError, StorageUnavailable, RuntimeError):
                pass
            assert time.monotonic() < deadline, "no replica took over the slot of flags:config"
            time.sleep(0.05)
        changed = time.monotonic()

        # Seen within max_age, by a reader that knew only the failed node for the channel.
        seen: dict[str, float] = {}
        while len(seen) < 2 and time.monotonic() - changed < 6:
            values = []
            for name, reader in zip(("sync", "async"), readers, strict=True):
                try:
                    value = reader.get("v") if name == "sync" else await reader.get("v")
                except StorageUnavailable:
                    value = None
                values.append(value)
                if value == 1 and name not in seen:
                    seen[name] = time.monotonic() - changed
            await asyncio.sleep(0.02)
        assert set(seen) == {"sync", "async"}, f"still serving the old value 6 s later: {values}"
        assert max(seen.values()) < 2.0 + 0.5
        readers[0].close()
        await readers[1].aclose()
        admin.close()
    finally:
        cluster.stop()


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_reader_refused_the_channel_reads_every_retry_interval(
    redis_url: str, redis_client: redis.Redis, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An ACL user without the channel cannot subscribe: the flags still read, refreshed every
    retry_interval, and the log says why once."""
    redis_client.execute_command("ACL", "SETUSER", "flagreader", "on", ">pw", "~*", "+@all", "resetchannels")
    try:
        admin = FlagAdmin(redis_client)
        admin.set("beta", True)
        clock = ManualClock()
        url = redis_url.replace("redis://", "redis://flagreader:pw@", 1)
        sync = mode == "sync"
        reader: Flags | AsyncFlags = (Flags if sync else AsyncFlags)(url, retry_interval=1.0, clock=clock)

        async def get() -> object:
            value = reader.get("beta")
            return value if sync else await value  # type: ignore[misc]

        caplog.set_level(logging.WARNING, "bisman_ratelimit.flags")
        assert await get() is True
        admin.set("beta", False)
        assert await get() is True  # no message heard: the snapshot stands
        clock.advance(1.0)
        assert await get() is False  # read again after retry_interval
        assert await get() is False
        refusals = [r.getMessage() for r in caplog.records if "refused the subscription" in r.getMessage()]
        assert len(refusals) == 1
        assert "grant the channel: ACL SETUSER <user> &flags:config" in refusals[0]
        if sync:
            reader.close()  # type: ignore[union-attr]
        else:
            await reader.aclose()  # type: ignore[union-attr]
    finally:
        redis_client.execute_command("ACL", "DELUSER", "flagreader")
