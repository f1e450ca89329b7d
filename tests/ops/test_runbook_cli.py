"""Runbook commands: flush, inspect, backup and a Sentinel failover, through the CLI."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest
import redis

from bisman_ratelimit import InvalidArgument
from bisman_ratelimit.ops import flush_namespace, namespace_prefix, sample_keyspace
from bisman_ratelimit.ops.cli import main
from bisman_ratelimit.ops.cli._ops_cmd import display_url, format_table, parse_duration
from bisman_ratelimit.stores import FlagAdmin, default_registry
from bisman_ratelimit.testing import RedisServer, find_server_binary, free_port

OTHERS = [
    b"rlx:user:1",  # shares the letters, not the namespace
    b"r*:user:1",
    b"rl*",
    b"chat:ctx:thread:1",
    b"auth:sess:user:rl:1",
    b"flags:config:rl:*",
]
RL_KEYS = [
    b"rl:user:1:api:calls",
    b"rl:user:a*b:api:calls",  # ids with glob characters
    b"rl:user:[x]:api:?",
    b"rl:global:minute:1",
    b"rl:\\*:weird",
    b"rl:{user:1}:sw:1:2:3",
    b"rl",  # the key named by the namespace is in it, as flags:config is
]


@pytest.fixture
def keys(redis_client: redis.Redis) -> redis.Redis:
    pipe = redis_client.pipeline(transaction=False)
    for key in OTHERS + RL_KEYS:
        pipe.set(key, 1)
    pipe.execute()
    return redis_client


def remaining(client: redis.Redis) -> set[bytes]:
    return set(client.keys())


def test_flush_removes_exactly_one_namespace(
    keys: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["flush", "--url", redis_url, "--namespace", "rl:", "--yes", "--batch", "2"])
    out = capsys.readouterr().out
    assert code == 0
    assert f"7 keys under 'rl:' on {redis_url} (the key rl and SCAN MATCH rl:*)" in out
    assert "deleted 7 keys under 'rl:'" in out
    assert remaining(keys) == set(OTHERS)


def test_a_bare_name_flushes_the_namespace_not_the_prefix(keys: redis.Redis) -> None:
    result = flush_namespace(keys, "rl")
    assert (result.prefix, result.matched, result.deleted, result.own_key) == ("rl:", 7, 7, True)
    assert b"rlx:user:1" in remaining(keys)


def test_glob_characters_in_the_namespace_match_only_themselves(keys: redis.Redis) -> None:
    result = flush_namespace(keys, "r*:")
    assert (result.pattern, result.deleted) == ("r\\*:*", 1)
    assert remaining(keys) == set(OTHERS + RL_KEYS) - {b"r*:user:1"}
    result = flush_namespace(keys, "rl:user:a*b")
    assert result.deleted == 1
    assert b"rl:user:1:api:calls" in remaining(keys)


def test_dry_run_counts_and_deletes_nothing(
    keys: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["flush", "--url", redis_url, "--namespace", "rl:", "--dry-run"]) == 0
    assert "7 keys under 'rl:'" in capsys.readouterr().out
    assert remaining(keys) == set(OTHERS + RL_KEYS)


def test_flush_asks_first(
    keys: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    assert main(["flush", "--url", redis_url, "--namespace", "rl:"]) == 1
    out = capsys.readouterr().out
    assert f"Delete 7 keys under 'rl:' on {redis_url}? [y/N] " in out
    assert "aborted: nothing deleted" in out
    assert remaining(keys) == set(OTHERS + RL_KEYS)

    # No answer at all (stdin closed) is a no.
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["flush", "--url", redis_url, "--namespace", "rl:"]) == 1
    assert remaining(keys) == set(OTHERS + RL_KEYS)

    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    assert main(["flush", "--url", redis_url, "--namespace", "rl:"]) == 0
    assert remaining(keys) == set(OTHERS)


@pytest.fixture
def flags(redis_client: redis.Redis) -> redis.Redis:
    """Two flags, their hash and history (the flags:config namespace), and keys beside it."""
    admin = FlagAdmin(redis_client)
    admin.set("darkMode", True)
    admin.set("theme", "blue")
    redis_client.set("flags:configuration", 1)  # shares the letters, not the namespace
    redis_client.set("chat:ctx:thread:{1}:seq", 1, ex=120)
    return redis_client


def test_flush_counts_the_key_a_namespace_is_made_of(
    flags: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["flush", "--url", redis_url, "--namespace", "flags:config", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out == (
        f"2 keys under 'flags:config:' on {redis_url} (the key flags:config and SCAN MATCH flags:config:*)\n"
    )
    assert remaining(flags) == {
        b"flags:config",
        b"flags:config:history:{flags:config}",
        b"flags:configuration",
        b"chat:ctx:thread:{1}:seq",
    }
    result = flush_namespace(flags, "flags:config", dry_run=True)
    assert (result.matched, result.deleted, result.own_key) == (2, 0, True)


@pytest.mark.parametrize("namespace", ["flags:config", "flags:config:", "flags"])
def test_flushing_a_persistent_namespace_must_be_typed_out(
    flags: redis.Redis,
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    namespace: str,
) -> None:
    prefix = namespace_prefix(namespace)
    head = prefix[:-1]
    warning = (
        "flags:config is persistent: its keys never expire and nothing writes them back once deleted. "
        "Back up first: bisman-ratelimit backup\n"
    )
    question = f"Type {head} to delete {3 if head == 'flags' else 2} keys under {prefix!r} on {redis_url}: "
    # "y" is not enough for keys that do not come back.
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    assert main(["flush", "--url", redis_url, "--namespace", namespace]) == 1
    out = capsys.readouterr().out
    assert warning + question + "aborted: nothing deleted\n" in out
    assert flags.exists("flags:config") == 1

    monkeypatch.setattr("sys.stdin", io.StringIO(head + "\n"))
    assert main(["flush", "--url", redis_url, "--namespace", namespace]) == 0
    assert warning + question in capsys.readouterr().out
    kept = {b"chat:ctx:thread:{1}:seq"} | (set() if head == "flags" else {b"flags:configuration"})
    assert remaining(flags) == kept


def test_inspect_and_audit_place_the_flags_key_in_its_namespace(
    flags: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect", "--url", redis_url, "flags:config"]) == 0
    lines = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert (lines["type"].split()[0], lines["ttl"], lines["size"]) == (
        "hash",
        "none (never expires)",
        "2 fields",
    )
    assert (lines["namespace"], lines["policy"]) == ("flags:config", "follows its namespace's TTL policy")
    sample = sample_keyspace(flags)
    stats = sample.namespace("flags:config")
    assert stats is not None and (stats.keys_scanned, stats.no_ttl) == (2, 0)
    assert default_registry.persistent_within("flags:config:") == [default_registry.get("flags:config")]
    assert default_registry.persistent_within("flags") == [default_registry.get("flags:config")]
    assert default_registry.persistent_within("flags:config:x") == [default_registry.get("flags:config")]
    assert default_registry.persistent_within("chat:ctx") == []


def test_flush_refuses_an_empty_namespace(
    keys: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for namespace in ("", ":", "  "):
        # A bad argument: exit 2, as argparse's own errors.
        assert main(["flush", "--url", redis_url, "--namespace", namespace, "--yes"]) == 2
        assert capsys.readouterr().err == (
            "bisman-ratelimit: error: --namespace: flush needs a namespace such as 'rl:' "
            f"(got {namespace!r}); it never deletes every key\n"
        )
    assert remaining(keys) == set(OTHERS + RL_KEYS)
    with pytest.raises(InvalidArgument, match="it never deletes every key"):
        namespace_prefix("")


def test_flush_of_many_keys_in_batches(redis_client: redis.Redis, redis_url: str) -> None:
    pipe = redis_client.pipeline(transaction=False)
    for i in range(2500):
        pipe.set(f"chat:ctx:thread:{i}", "x", ex=120)
        pipe.set(f"auth:sess:user:{i}", "x", ex=1800)
    pipe.execute()
    assert main(["flush", "--url", redis_url, "--namespace", "chat:ctx", "--yes", "--batch", "300"]) == 0
    assert redis_client.dbsize() == 2500
    assert not list(redis_client.scan_iter(match="chat:*"))


def test_inspect(redis_client: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    redis_client.rpush("chat:ctx:thread:9", "a", "b", "c")
    redis_client.expire("chat:ctx:thread:9", 120)
    assert main(["inspect", "--url", redis_url, "chat:ctx:thread:9"]) == 0
    lines = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert lines["key"] == "chat:ctx:thread:9"
    assert lines["type"].startswith("list (")
    assert 119 <= float(lines["ttl"].removesuffix(" s")) <= 120
    assert int(lines["memory"].removesuffix(" bytes")) > 0
    assert lines["size"] == "3 elements"
    assert (lines["namespace"], lines["policy"]) == ("chat:ctx", "follows its namespace's TTL policy")

    redis_client.hset("auth:sess:{s1}", mapping={"uid": "1", "role": "admin"})
    assert main(["inspect", "--url", redis_url, "auth:sess:{s1}"]) == 0
    lines = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert (lines["ttl"], lines["size"]) == ("none (never expires)", "2 fields")
    assert lines["policy"] == (
        "VIOLATION: auth:sess is ephemeral but this key never expires; set a TTL (default 1800 s)"
    )

    assert main(["inspect", "--url", redis_url, "nope"]) == 1
    assert f"no such key 'nope' on {redis_url}" in capsys.readouterr().err


@pytest.mark.redis
def test_backup_waits_for_the_snapshot(capsys: pytest.CaptureFixture[str]) -> None:
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        client.set("flags:config:darkMode", "on")
        before = client.lastsave()
        assert main(["backup", "--url", server.url]) == 0
        out = capsys.readouterr().out
        path = os.path.join(server.dir, "dump.rdb")
        assert f"snapshot: {path} (" in out
        assert "BGSAVE finished in" in out
        with open(path, "rb") as snapshot:
            assert snapshot.read(5) in (b"REDIS", b"VALKE")
        # Two backups within one second: LASTSAVE cannot tell them apart, the save counter can.
        client.set("flags:config:other", "x")
        assert main(["backup", "--url", server.url]) == 0
        assert client.info("persistence")["rdb_changes_since_last_save"] == 0
        assert client.lastsave() >= before
        client.close()


@pytest.mark.redis
def test_backup_reports_a_failed_save(capsys: pytest.CaptureFixture[str]) -> None:
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        shutil.rmtree(server.dir)  # the dir the snapshot goes to is gone
        code = main(["backup", "--url", server.url, "--timeout", "10s"])
        client.close()
        os.makedirs(server.dir)
    assert code == 1
    assert "BGSAVE failed (rdb_last_bgsave_status=err)" in capsys.readouterr().err


def test_cli_helpers() -> None:
    assert parse_duration("10s") == 10
    assert parse_duration("500ms") == 0.5
    assert parse_duration("2m") == 120
    assert display_url("redis://:hunter2@cache:6380/1") == "redis://:***@cache:6380/1"
    assert display_url("redis://app:hunter2@cache/0") == "redis://app:***@cache/0"
    assert format_table(("name", "n"), [("a", 1), ("bbb", 22)]).splitlines() == [
        "name   n",
        "----  --",
        "a      1",
        "bbb   22",
    ]


def test_bad_duration_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["audit", "hotkeys", "--duration", "soon"])
    assert exc.value.code == 2
    assert "bad duration 'soon': expected e.g. 10s, 500ms, 2m" in capsys.readouterr().err


# --- Sentinel -------------------------------------------------------------------------------------------


class Sentinel:
    """A redis-server in sentinel mode on a free port, watching one master."""

    def __init__(self, master: RedisServer, name: str) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="bisman-sentinel-")
        self.config = os.path.join(self.dir, "sentinel.conf")
        with open(self.config, "w") as config:
            config.write(
                f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"sentinel monitor {name} 127.0.0.1 {master.port} 1\n"
                f"sentinel down-after-milliseconds {name} 1000\n"
                f"sentinel failover-timeout {name} 10000\n"
            )
        binary = find_server_binary()
        assert binary is not None
        self.process = subprocess.Popen(
            [binary, self.config, "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def wait(self, check: object, what: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if check():  # type: ignore[operator]
                    return
            except redis.RedisError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"sentinel test setup: {what} did not happen within {timeout} s")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def sentinel_setup() -> Iterator[tuple[RedisServer, RedisServer, Sentinel]]:
    with (
        RedisServer() as primary,
        RedisServer(args=("--replicaof", "127.0.0.1", str(primary.port))) as replica,
    ):
        sentinel = Sentinel(primary, "cache")
        client = redis.Redis(port=sentinel.port)
        try:
            sentinel.wait(lambda: client.ping(), "the sentinel answering")
            sentinel.wait(
                lambda: any(
                    r["port"] == replica.port
                    and r["master-link-status"] == "ok"
                    and "s_down" not in r["flags"]
                    for r in client.sentinel_slaves("cache")
                ),
                "the sentinel finding the replica",
            )
            yield primary, replica, sentinel
        finally:
            client.close()
            sentinel.stop()


def test_commands_take_a_sentinel_url(
    sentinel_setup: tuple[RedisServer, RedisServer, Sentinel], capsys: pytest.CaptureFixture[str]
) -> None:
    primary, _, sentinel = sentinel_setup
    with redis.Redis(port=primary.port) as client:
        client.set("auth:sess:user:7", "x", ex=100)
    url = f"redis+sentinel://127.0.0.1:{sentinel.port}/cache"
    code = main(["inspect", "auth:sess:user:7", "--url", url])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("key        auth:sess:user:7\ntype       string (embstr)\n")
    # The master's name comes from the URL; a name the Sentinel does not know is a failed check.
    assert main(["failover", "--url", f"redis+sentinel://127.0.0.1:{sentinel.port}/nope"]) == 1
    assert capsys.readouterr().err == (
        "bisman-ratelimit: error: the Sentinel knows no master named 'nope': check --master\n"
    )


def test_failover_through_the_cli(
    sentinel_setup: tuple[RedisServer, RedisServer, Sentinel], capsys: pytest.CaptureFixture[str]
) -> None:
    primary, replica, sentinel = sentinel_setup
    # A redis+sentinel:// URL names the Sentinels and the master at once.
    url = f"redis+sentinel://127.0.0.1:{sentinel.port}/cache"
    code = main(["failover", "--url", url, "--timeout", "30s"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"primary 127.0.0.1:{primary.port} -> 127.0.0.1:{replica.port}" in out
    promoted = redis.Redis(port=replica.port)
    assert promoted.execute_command("ROLE")[0] == b"master"
    promoted.close()


def test_failover_of_an_unknown_master(
    sentinel_setup: tuple[RedisServer, RedisServer, Sentinel], capsys: pytest.CaptureFixture[str]
) -> None:
    sentinel = sentinel_setup[2]
    assert main(["failover", "--url", sentinel.url, "--master", "nope"]) == 1
    assert "the Sentinel knows no master named 'nope': check --master" in capsys.readouterr().err
