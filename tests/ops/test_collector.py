"""RedisCollector: figures read from INFO at scrape time, bounded namespace samples."""

from __future__ import annotations

import pytest
import redis
from prometheus_client import CollectorRegistry

from bisman_ratelimit import InvalidArgument, Limiter
from bisman_ratelimit.ops import RedisCollector
from bisman_ratelimit.testing import RedisServer, free_port


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for metric in registry.collect()
        for sample in metric.samples
    }


def scrape(collector: RedisCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    return samples(registry)


def test_figures_match_info(redis_client: redis.Redis) -> None:
    for i in range(40):
        redis_client.set(f"rl:user:{i}:api:calls", i, ex=300)
    redis_client.get("rl:user:1:api:calls")
    redis_client.get("missing")
    got = scrape(RedisCollector(redis_client))
    info = redis_client.info()
    assert got[("redis_up", ())] == 1
    assert got[("redis_memory_max_bytes", ())] == info["maxmemory"]
    # Counters only grow; the scrape happened before the INFO above, so they are at most INFO's figure.
    for name, field in (
        ("redis_commands_processed_total", "total_commands_processed"),
        ("redis_keyspace_hits_total", "keyspace_hits"),
        ("redis_keyspace_misses_total", "keyspace_misses"),
    ):
        assert 0 < got[(name, ())] <= info[field]
    assert got[("redis_keyspace_hits_total", ())] >= 1
    assert got[("redis_keyspace_misses_total", ())] >= 1
    assert got[("redis_connected_clients", ())] == info["connected_clients"]
    assert abs(got[("redis_memory_bytes", ())] - info["used_memory"]) < 256 * 1024
    assert got[("redis_db_keys", (("db", "db0"),))] == 40
    assert got[("redis_namespace_keys", (("namespace", "rl:user"),))] == 40
    assert got[("redis_namespace_sample_complete", ())] == 1
    assert got[("redis_namespace_memory_bytes", (("namespace", "rl:user"),))] > 40 * 8


def test_hits_counter_follows_info_between_scrapes(redis_client: redis.Redis) -> None:
    collector = RedisCollector(redis_client, sample_keys=0)
    before = scrape(collector)[("redis_keyspace_hits_total", ())]
    redis_client.set("k", 1)
    for _ in range(5):
        redis_client.get("k")
    after = scrape(collector)[("redis_keyspace_hits_total", ())]
    assert after - before == 5
    # sample_keys=0: no SCAN, no namespace series.
    assert not any(name.startswith("redis_namespace") for name, _ in scrape(collector))


def test_namespace_counts_from_a_bounded_sample(redis_client: redis.Redis) -> None:
    pipe = redis_client.pipeline(transaction=False)
    for i in range(1500):
        pipe.set(f"rl:user:{i}:api:calls", 1, ex=300)
    for i in range(500):
        pipe.set(f"chat:ctx:thread:{i}", "[]", ex=120)
    pipe.execute()
    got = scrape(RedisCollector(redis_client, sample_keys=400, memory_samples=5))
    assert got[("redis_namespace_sample_keys", ())] == 400
    assert got[("redis_namespace_sample_complete", ())] == 0
    users = got[("redis_namespace_keys", (("namespace", "rl:user"),))]
    chats = got[("redis_namespace_keys", (("namespace", "chat:ctx"),))]
    # Scaled to DBSIZE: the two add up to it, and each is near its true count.
    assert abs(users + chats - 2000) <= 2
    assert 1300 <= users <= 1700
    assert 300 <= chats <= 700


def test_limiter_keys_and_strangers_get_bounded_labels(redis_client: redis.Redis) -> None:
    limiter = Limiter(redis_client)
    for i in range(50):
        limiter.hit(f"rl:client:{{{i}}}", "10/minute")
    for i in range(300):
        redis_client.set(f"tenant{i}:cache:{i}", 1, ex=60)
    collector = RedisCollector(redis_client)
    got = scrape(collector)
    namespaces = {dict(labels)["namespace"] for name, labels in got if name == "redis_namespace_keys"}
    assert namespaces == {"rl", "other"}
    assert got[("redis_namespace_keys", (("namespace", "rl"),))] == 50
    assert got[("redis_namespace_keys", (("namespace", "other"),))] == 300
    assert namespaces <= set(collector.namespace_labels())


def test_unreachable_server_scrapes_as_down() -> None:
    client = redis.Redis(port=free_port(), socket_connect_timeout=0.5, socket_timeout=0.5)
    collector = RedisCollector(client)
    registry = CollectorRegistry()
    # Registering only describes: it must not need the server.
    registry.register(collector)
    assert samples(registry) == {("redis_up", ()): 0.0}


@pytest.mark.redis
def test_server_going_away_and_back() -> None:
    with RedisServer() as server:
        collector = RedisCollector.from_url(server.url, timeout=0.5)
        assert scrape(collector)[("redis_up", ())] == 1
        server.stop()
        assert scrape(collector) == {("redis_up", ()): 0.0}
        server.start()
        assert scrape(collector)[("redis_up", ())] == 1
        collector.client.close()


def test_arguments_are_checked(redis_client: redis.Redis) -> None:
    with pytest.raises(
        InvalidArgument, match=r"sample_keys must be a whole number >= 0 \(0: no SCAN\), got -1"
    ):
        RedisCollector(redis_client, sample_keys=-1)
    with pytest.raises(InvalidArgument, match=r"memory_samples must be a whole number >= 0, got 1.5"):
        RedisCollector(redis_client, memory_samples=1.5)  # type: ignore[arg-type]
