"""doctor: verdicts for good and bad servers, and its exit code."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from bisman_ratelimit import InvalidArgument
from bisman_ratelimit.ops._doctor import (
    MemoryLimit,
    ServerFacts,
    cgroup_memory_limit,
    evaluate,
    exit_code,
    parse_size,
)
from bisman_ratelimit.ops.cli import main
from bisman_ratelimit.testing import RedisServer

MiB = 2**20

GOOD = ServerFacts(
    maxmemory=70 * MiB,
    used_memory=10 * MiB,
    policy="allkeys-lru",
    save="3600 1",
    appendonly=False,
    rdb_last_bgsave_status="ok",
    aof_last_write_status="ok",
    notify_keyspace_events="",
    namespaces=frozenset({"rl:user", "rl"}),
    sampled_keys=100,
    version="7.0.15",
)
LIMIT = MemoryLimit(100 * MiB, "--memory-limit")


def verdicts(facts: ServerFacts, limit: MemoryLimit | None = LIMIT) -> dict[str, str]:
    return {result.name: result.verdict for result in evaluate(facts, limit)}


def reason(facts: ServerFacts, name: str, limit: MemoryLimit | None = LIMIT) -> str:
    return next(result.reason for result in evaluate(facts, limit) if result.name == name)


def test_a_good_server_passes_everything() -> None:
    assert set(verdicts(GOOD).values()) == {"pass"}
    assert exit_code(evaluate(GOOD, LIMIT)) == 0


@pytest.mark.parametrize(
    ("maxmemory", "verdict", "text"),
    [
        (
            0,
            "fail",
            "maxmemory is not set: Redis grows until the container is killed; set it to 65.0 MiB-75.0 MiB",
        ),
        (65 * MiB, "pass", "maxmemory 65.0 MiB is 65% of 100.0 MiB (--memory-limit): within 65%-75%"),
        (75 * MiB, "pass", "is 75% of"),
        (50 * MiB, "warn", "below 65%, memory the container pays for sits idle"),
        (80 * MiB, "warn", "above the 65%-75% guardrail"),
        (95 * MiB, "fail", "no room for the BGSAVE fork"),
    ],
)
def test_maxmemory_share_of_the_container(maxmemory: int, verdict: str, text: str) -> None:
    facts = replace(GOOD, maxmemory=maxmemory, used_memory=1)
    assert verdicts(facts)["maxmemory"] == verdict
    assert text in reason(facts, "maxmemory")


def test_maxmemory_without_a_known_limit_warns() -> None:
    assert verdicts(GOOD, None)["maxmemory"] == "warn"
    assert "give --memory-limit" in reason(GOOD, "maxmemory", None)


def test_allkeys_policy_with_flags_or_sessions_fails() -> None:
    for namespace in ("flags:config", "auth:sess"):
        facts = replace(GOOD, namespaces=frozenset({"rl:user", namespace}))
        assert verdicts(facts)["eviction policy"] == "fail"
        assert f"allkeys-lru can evict {namespace} keys" in reason(facts, "eviction policy")
        assert "split into two instances" in reason(facts, "eviction policy")


def test_eviction_policy_verdicts() -> None:
    mixed = replace(GOOD, policy="volatile-lru", namespaces=frozenset({"auth:sess", "rl:user"}))
    assert verdicts(mixed)["eviction policy"] == "warn"
    assert "sessions compete with rl:user for memory" in reason(mixed, "eviction policy")
    ephemeral_noeviction = replace(GOOD, policy="noeviction")
    assert verdicts(ephemeral_noeviction)["eviction policy"] == "warn"
    assert "every write fails" in reason(ephemeral_noeviction, "eviction policy")
    sessions_alone = replace(GOOD, policy="noeviction", namespaces=frozenset({"auth:sess", "flags:config"}))
    assert verdicts(sessions_alone)["eviction policy"] == "pass"


@pytest.mark.parametrize(("used", "verdict"), [(50, "pass"), (76, "warn"), (85, "fail"), (99, "fail")])
def test_memory_against_the_85_percent_alert(used: int, verdict: str) -> None:
    facts = replace(GOOD, maxmemory=100 * MiB, used_memory=used * MiB)
    assert verdicts(facts, MemoryLimit(140 * MiB, "x"))["memory"] == verdict


def test_persistence_and_notifications() -> None:
    failed = replace(GOOD, rdb_last_bgsave_status="err")
    assert verdicts(failed)["persistence"] == "fail"
    assert "the last BGSAVE failed (rdb_last_bgsave_status=err)" in reason(failed, "persistence")
    assert verdicts(replace(GOOD, save=""))["persistence"] == "warn"
    assert verdicts(replace(GOOD, save="", appendonly=True))["persistence"] == "pass"
    noisy = replace(GOOD, notify_keyspace_events="AKE")
    assert verdicts(noisy)["keyspace notifications"] == "warn"
    assert exit_code(evaluate(noisy, LIMIT)) == 0


def test_parse_size() -> None:
    assert parse_size("512Mi") == 512 * MiB
    assert parse_size("2GiB") == 2 * 2**30
    assert parse_size("1gb") == 2**30
    assert parse_size("750m") == 750_000_000
    assert parse_size("1048576") == MiB
    with pytest.raises(InvalidArgument, match="bad memory size '2 pints': expected e.g. 512Mi"):
        parse_size("2 pints")


def test_cgroup_limits(tmp_path: Path) -> None:
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text("104857600\n")
    assert cgroup_memory_limit(v2) == MemoryLimit(100 * MiB, f"cgroup {v2 / 'memory.max'}")
    (v2 / "memory.max").write_text("max\n")
    assert cgroup_memory_limit(v2) is None
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert cgroup_memory_limit(v1) is None
    (v1 / "memory" / "memory.limit_in_bytes").write_text("536870912\n")
    assert cgroup_memory_limit(v1) == MemoryLimit(
        512 * MiB, f"cgroup {v1 / 'memory' / 'memory.limit_in_bytes'}"
    )
    assert cgroup_memory_limit(tmp_path / "none") is None


@pytest.mark.parametrize(
    ("product", "version", "verdict", "text"),
    [
        ("Redis", "7.0.15", "pass", "Redis 7.0.15"),
        ("Redis", "6.0.0", "pass", "Redis 6.0.0"),
        (
            "Redis",
            "5.0.14",
            "fail",
            "Redis 5.0.14 is too old: rate limits need Redis 6.0 or later (SET ... KEEPTTL); "
            "every check would fail with 'ERR syntax error'",
        ),
        ("Valkey", "8.1.8", "pass", "Valkey 8.1.8"),
        ("Redis", "", "warn", "unknown Redis version ''"),
    ],
)
def test_server_version(product: str, version: str, verdict: str, text: str) -> None:
    facts = replace(GOOD, product=product, version=version)
    assert verdicts(facts)["server version"] == verdict
    assert reason(facts, "server version") == text


# --- real servers ---------------------------------------------------------------------------------------


@pytest.fixture
def good_server() -> Iterator[RedisServer]:
    args = ("--maxmemory", "70mb", "--maxmemory-policy", "allkeys-lru", "--save", "3600 1")
    with RedisServer(args=args) as server:
        client = redis.Redis.from_url(server.url)
        for i in range(50):
            client.set(f"rl:user:{i}:api:calls", 1, ex=300)
        client.close()
        yield server


@pytest.mark.redis
def test_doctor_on_a_good_server(good_server: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["doctor", "--url", good_server.url, "--memory-limit", "100Mi"])
    out = capsys.readouterr().out
    assert code == 0
    assert "PASS  maxmemory: maxmemory 70.0 MiB is 70% of 100.0 MiB (--memory-limit): within 65%-75%" in out
    assert "PASS  eviction policy: allkeys-lru suits this instance (found rl:user in 50 sampled keys)" in out
    assert "PASS  persistence: RDB save '3600 1'; last BGSAVE ok" in out
    assert "PASS  keyspace notifications: off" in out
    assert "PASS  server version: Redis " in out or "PASS  server version: Valkey " in out
    assert out.rstrip().endswith("0 fail, 0 warn, 6 pass")


@pytest.mark.redis
def test_doctor_on_a_bad_server(capsys: pytest.CaptureFixture[str]) -> None:
    with RedisServer(args=("--maxmemory-policy", "allkeys-lru", "--notify-keyspace-events", "KEA")) as server:
        client = redis.Redis.from_url(server.url)
        client.set("flags:config:darkMode", "on")
        client.set("rl:user:1:api:calls", 1, ex=300)
        client.close()
        code = main(["doctor", "--url", server.url, "--memory-limit", "1Gi"])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL  maxmemory: maxmemory is not set: Redis grows until the container is killed" in out
    assert "FAIL  eviction policy: allkeys-lru can evict flags:config keys" in out
    assert "WARN  persistence: no RDB snapshots and no AOF" in out
    assert "WARN  keyspace notifications: on ('AKE')" in out
    assert "2 fail, 3 warn, 1 pass" in out


@pytest.mark.redis
def test_doctor_sees_memory_past_the_alert(
    good_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    client = redis.Redis.from_url(good_server.url)
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", str(int(used / 0.9)))
    client.config_set("maxmemory-policy", "volatile-lru")
    client.close()
    code = main(["doctor", "--url", good_server.url, "--memory-limit", str(int(used / 0.9 / 0.7))])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL  memory:" in out
    assert "past the 85% alert; find what grew with `bisman-ratelimit audit cardinality`" in out


@pytest.mark.redis
def test_doctor_cannot_reach_the_server(capsys: pytest.CaptureFixture[str]) -> None:
    with RedisServer() as server:
        url = server.url
    code = main(["doctor", "--url", url, "--memory-limit", "1Gi"])
    assert code == 1
    assert "bisman-ratelimit: error: Redis is unavailable" in capsys.readouterr().err
