"""What docs/RUNBOOK.md promises of every command: the one storage URL variable, exit codes,
every URL form the library takes, a server's password, and progress and audits that tell the truth."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from bisman_ratelimit import __version__
from bisman_ratelimit.ops import (
    NamespaceGrouper,
    audit_hotkeys,
    flush_namespace,
    inspect_key,
    sample_keyspace,
)
from bisman_ratelimit.ops._runbook import scan_share
from bisman_ratelimit.ops.cli import main
from bisman_ratelimit.ops.cli._ops_cmd import render_cardinality, render_hotkeys
from bisman_ratelimit.testing import RedisServer, free_port

pytest_plugins = ["cluster_fixtures"]

SCRIPT = Path(sys.executable).parent / "bisman-ratelimit"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The last stderr line of a command that argparse refused (exit 2)."""
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    assert exc.value.code == 2
    return capsys.readouterr().err.splitlines()[-1]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("BISMAN_"):
            monkeypatch.delenv(name)
    return monkeypatch


# --- one name for the storage URL -----------------------------------------------------------------------


def test_commands_read_the_storage_url_variable_and_warn_on_a_near_miss(
    redis_client: redis.Redis,
    redis_url: str,
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    redis_client.set("auth:sess:user:1", "x", ex=100)
    clean_env.setenv("BISMAN_RATELIMIT_STORAGE_URL", redis_url)
    clean_env.setenv("BISMAN_RATELIMIT_URL", "redis://127.0.0.1:1/0")
    code, out, err = run(capsys, "inspect", "auth:sess:user:1")
    assert code == 0
    assert out.startswith("key        auth:sess:user:1\ntype       string (embstr)\n")
    assert err == (
        "bisman-ratelimit: warning: the environment variable BISMAN_RATELIMIT_URL is not read; "
        "did you mean BISMAN_RATELIMIT_STORAGE_URL?\n"
    )
    assert run(capsys, "flags", "list") == (0, "", err)


def test_a_near_miss_alone_warns_and_names_the_variable(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("BISMAN_REDIS_URL", "redis://127.0.0.1:1/0")
    assert run(capsys, "flags", "list") == (
        2,
        "",
        "bisman-ratelimit: warning: the environment variable BISMAN_REDIS_URL is not read; "
        "did you mean BISMAN_RATELIMIT_STORAGE_URL?\n"
        "bisman-ratelimit: error: give --url redis://host:port/db (or set BISMAN_RATELIMIT_STORAGE_URL)\n",
    )


# --- exit codes -----------------------------------------------------------------------------------------


def test_bad_arguments_exit_2_everywhere(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "doctor", "--url", "http://x") == (
        2,
        "",
        "bisman-ratelimit: error: --url: bad storage URL 'http://x': expected one of redis://, rediss://, "
        "unix://, redis+sentinel://, redis+cluster://\n",
    )
    assert run(capsys, "flags", "list") == (
        2,
        "",
        "bisman-ratelimit: error: give --url redis://host:port/db (or set BISMAN_RATELIMIT_STORAGE_URL)\n",
    )
    assert run(capsys, "inspect", "k", "--url", "memory://") == (
        2,
        "",
        "bisman-ratelimit: error: inspect needs a Redis URL: memory:// is storage inside one app's process, "
        "which no command can reach\n",
    )
    assert run(capsys, "flush", "--namespace", "rl", "--url", "redis+cluster://127.0.0.1:7000") == (
        2,
        "",
        "bisman-ratelimit: error: flush works on one server at a time: give each primary of the cluster in "
        "turn as redis://host:port (got redis+cluster://127.0.0.1:7000)\n",
    )
    # --batch 0 and --batch abc: the same exit code, the same kind of message.
    assert usage_error(capsys, "flush", "--namespace", "rl", "--batch", "0") == (
        "bisman-ratelimit flush: error: argument --batch: bad number '0': expected a whole number >= 1"
    )
    assert usage_error(capsys, "flush", "--namespace", "rl", "--batch", "abc") == (
        "bisman-ratelimit flush: error: argument --batch: bad number 'abc': expected a whole number >= 1"
    )


def test_a_failed_check_exits_1(
    redis_client: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    redis_client.set("chat:ctx:thread:1", "no ttl")
    code, out, _ = run(capsys, "audit", "cardinality", "--url", redis_url)
    assert code == 1
    assert "POLICY VIOLATION: 1 keys without a TTL in ephemeral namespaces, e.g.:\n  chat:ctx:thread:1" in out


@pytest.fixture
def hotkeys_run(redis_client: redis.Redis, redis_url: str) -> Iterator[subprocess.Popen[str]]:
    """``audit hotkeys`` in its own process, caught while MONITOR runs."""
    redis_client.config_set("notify-keyspace-events", "")
    process = subprocess.Popen(
        [str(SCRIPT), "audit", "hotkeys", "--url", redis_url, "--duration", "120s", "--baseline", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={name: value for name, value in os.environ.items() if not name.startswith("BISMAN_")},
    )
    try:
        deadline = time.monotonic() + 30
        while not any("O" in entry["flags"] for entry in redis_client.client_list()):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the audit never started MONITOR"
            time.sleep(0.02)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_audit_reports_and_exits_128_plus_the_signal(
    hotkeys_run: subprocess.Popen[str], redis_client: redis.Redis, signum: int, code: int
) -> None:
    hotkeys_run.send_signal(signum)
    out, err = hotkeys_run.communicate(timeout=60)
    assert hotkeys_run.returncode == code, err
    assert " key operations (interrupted)\n" in out
    assert out.endswith("notify-keyspace-events restored to ''\n")
    assert redis_client.config_get("notify-keyspace-events") == {"notify-keyspace-events": ""}


# --- every URL form; passwords; --version ---------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"bisman-ratelimit {__version__}\n"


def test_failover_on_a_plain_redis_says_it_needs_a_sentinel(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "failover", "--url", redis_url, "--master", "cache") == (
        2,
        "",
        f"bisman-ratelimit: error: failover needs a Sentinel, and {redis_url} is a Redis server "
        "(standalone), not a Sentinel: give --url redis+sentinel://SENTINEL-HOST:26379/cache "
        "(or --url redis://SENTINEL-HOST:26379 --master cache)\n",
    )
    assert run(capsys, "failover", "--url", redis_url) == (
        2,
        "",
        "bisman-ratelimit: error: failover needs the master's name: give --master NAME, "
        "or --url redis+sentinel://host:26379/NAME\n",
    )


def test_inspect_takes_a_cluster_url(redis_cluster: Any, capsys: pytest.CaptureFixture[str]) -> None:
    with redis_cluster.client() as client:
        client.set("auth:sess:{s3}", "x", ex=100)
    code, out, _ = run(capsys, "inspect", "auth:sess:{s3}", "--url", redis_cluster.url)
    assert code == 0
    assert out.startswith("key        auth:sess:{s3}\ntype       string (embstr)\nttl        ")
    assert out.endswith("namespace  auth:sess\npolicy     follows its namespace's TTL policy\n")


def test_a_sentinel_that_does_not_answer_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"redis+sentinel://127.0.0.1:{free_port()}/cache"
    assert run(capsys, "inspect", "k", "--url", url) == (
        1,
        "",
        f"bisman-ratelimit: error: no Sentinel of {url} answered with a master named 'cache': "
        "check that the Sentinels run and that the name after the hosts is the master's\n",
    )


@pytest.fixture(scope="module")
def locked_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        with redis.Redis(port=server.port) as client:
            client.config_set("requirepass", "s3cret")
        yield server


@pytest.mark.redis
def test_a_server_that_needs_a_password_says_where_it_goes(
    locked_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    port = locked_server.port
    for argv in (["inspect", "k"], ["doctor", "--memory-limit", "1Gi"], ["flags", "list"]):
        assert run(capsys, *argv, "--url", f"redis://127.0.0.1:{port}/0") == (
            2,
            "",
            f"bisman-ratelimit: error: the server at redis://127.0.0.1:{port}/0 needs a password: put it in "
            f"the URL, redis://:PASSWORD@127.0.0.1:{port}/0 (or redis://USERNAME:PASSWORD@127.0.0.1:{port}/0 "
            "for an ACL user)\n",
        )
    assert run(capsys, "inspect", "k", "--url", f"redis://:wrong@127.0.0.1:{port}/0") == (
        2,
        "",
        f"bisman-ratelimit: error: the server at redis://:***@127.0.0.1:{port}/0 refused the user name and "
        f"password in the URL: check them (redis://USERNAME:PASSWORD@127.0.0.1:{port}/0, or "
        f"redis://:PASSWORD@127.0.0.1:{port}/0 for the default user)\n",
    )
    code, out, err = run(capsys, "inspect", "k", "--url", f"redis://:s3cret@127.0.0.1:{port}/0")
    assert (code, out) == (1, "")
    assert err == f"bisman-ratelimit: no such key 'k' on redis://:***@127.0.0.1:{port}/0\n"


# --- progress and audits that tell the truth ------------------------------------------------------------


def test_scan_share_reads_the_cursor_backwards() -> None:
    # A table of 8 buckets walked in SCAN's order: 0, 4, 2, 6, 1, 5, 3, 7.
    assert [scan_share(cursor) for cursor in (4, 2, 6, 1, 5, 3, 7)] == [
        1 / 8, 2 / 8, 3 / 8, 4 / 8, 5 / 8, 6 / 8, 7 / 8,
    ]  # fmt: skip
    assert scan_share(0) == 0.0


def test_flush_counting_progress_moves_towards_dbsize(redis_client: redis.Redis) -> None:
    pipe = redis_client.pipeline(transaction=False)
    for index in range(20_000):
        pipe.set(f"rl:user:{index}" if index % 2 else f"chat:ctx:thread:{index}", 1)
    pipe.execute()
    seen: list[tuple[float, float]] = []
    result = flush_namespace(
        redis_client, "rl:", dry_run=True, batch=500, progress=lambda done, total: seen.append((done, total))
    )
    assert result.matched == 10_000
    # Out of DBSIZE all along, and never 100% before the walk ends.
    assert {total for _, total in seen} == {20_000}
    assert all(done < total for done, total in seen[:-1])
    assert seen[-1] == (20_000, 20_000)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert len(seen) > 10 and seen[len(seen) // 2][0] < 20_000 * 0.9


def test_cardinality_finds_the_biggest_key_by_default(
    redis_client: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pipe = redis_client.pipeline(transaction=False)
    for index in range(100_000):
        pipe.set(f"chat:ctx:thread:{index}", "m", ex=120)
        if index % 10_000 == 0:
            pipe.execute()
    pipe.set("chat:ctx:thread:big", "x" * 2_000_000, ex=120)
    pipe.execute()
    code, out, _ = run(capsys, "audit", "cardinality", "--url", redis_url, "--top", "1")
    assert code == 0
    assert out.startswith(f"{redis_url}: scanned all 100001 keys\n")
    biggest = out[out.index("Biggest keys") :].splitlines()
    assert biggest[1].split() == ["key", "memory"]
    # The allocator rounds the 2 MB value up to its size class: 1.9 or 2.0 MiB.
    assert biggest[3].startswith("chat:ctx:thread:big  ") and biggest[3].endswith(" MiB")
    assert len(biggest) == 4


def test_cardinality_says_when_the_time_limit_cut_it_short(redis_client: redis.Redis) -> None:
    pipe = redis_client.pipeline(transaction=False)
    for index in range(5_000):
        pipe.set(f"chat:ctx:thread:{index}", "m", ex=120)
    pipe.execute()
    ticks = iter(range(1_000))
    sample = sample_keyspace(
        redis_client,
        max_keys=None,
        memory_samples=None,
        batch=100,
        time_limit=2.5,
        clock=lambda: float(next(ticks)),
    )
    # The clock reads 0 at the start, then 1, 2, 3 after each batch: three batches.
    assert next(ticks) == 4
    assert sample.stopped == "time_limit" and not sample.complete
    assert 0 < sample.scanned < 5_000
    assert render_cardinality(sample, "here").splitlines()[0] == (
        f"here: stopped at the time limit (--time-limit) after {sample.scanned} of 5000 keys; "
        "figures scaled to the whole, biggest keys only among those scanned"
    )


def test_monitor_cost_on_a_small_sample_is_too_small_to_judge(redis_client: redis.Redis) -> None:
    report = audit_hotkeys(redis_client, duration=0.2, baseline=0.2, grouper=NamespaceGrouper())
    cost = report.cost
    assert cost is not None and cost.too_small and cost.overhead is None
    assert cost.monitor_commands < 1000
    lines = render_hotkeys(report, "here").splitlines()
    line = next(line for line in lines if line.startswith("Cost of MONITOR"))
    assert line == (
        f"Cost of MONITOR: too few commands to judge ({cost.monitor_commands} while sampling, "
        f"{cost.baseline_commands} before; it takes at least 1000 in each)"
    )


# --- namespace TTL policy -------------------------------------------------------------------------------


def test_config_check_warns_when_a_window_outlives_its_namespace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "limits.toml"
    path.write_text(
        '[defaults]\nlimits = "100/hour"\nkey = "ip"\n\n'
        '[global]\nlimits = "1000/minute"\n\n'
        '[[routes]]\npath = "/api/calls"\nlimits = ["5/minute", "20/hour"]\nkey = "user"\n',
        encoding="utf-8",
    )
    code, out, err = run(capsys, "config", "check", str(path))
    assert (code, err) == (0, "")
    assert out.splitlines()[1:] == [
        "warning: routes[0] (/api/calls): the window of 20/hour (3600 s) outlives the TTL of its namespace "
        "rl:user (300 s); the window wins: the limiter sets each key's TTL from its window, so these keys "
        "live longer than rl:user's policy says"
    ]


def test_inspect_and_cardinality_report_keys_above_their_namespace_ttl(
    redis_client: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Keys as the limiter lays them out: the namespace first, the identity hash-tagged.
    redis_client.set("rl:user:{u14}:api:/calls", 1, ex=4508)
    redis_client.set("rl:user:{u15}:api:/calls", 1, ex=200)
    redis_client.set("auth:sess:{s9}", 1, ex=7200)
    assert policy_of(redis_client, "rl:user:{u14}:api:/calls") == (
        "TTL ABOVE POLICY: expires in 4508 s, longer than rl:user's TTL of 300 s: "
        "a rate limit's key lives as long as its window needs, and the window wins over the namespace TTL"
    )
    assert policy_of(redis_client, "rl:user:{u15}:api:/calls") == "follows its namespace's TTL policy"
    assert policy_of(redis_client, "auth:sess:{s9}") == (
        "TTL ABOVE POLICY: expires in 7200 s, longer than auth:sess's TTL of 1800 s: "
        "its writer gave a TTL longer than the namespace's"
    )

    code, out, _ = run(capsys, "audit", "cardinality", "--url", redis_url)
    assert code == 0
    lines = out.splitlines()
    assert lines[2].split()[-6:] == ["no", "TTL", "TTL", ">", "policy", "ephemeral"]
    rows = {line.split()[0]: line.split() for line in lines[4:6]}
    assert rows["rl:user"][-3:] == ["0", "1", "yes"]
    assert rows["auth:sess"][-3:] == ["0", "1", "yes"]
    tail = out[out.index("TTL ABOVE POLICY") :].splitlines()
    assert tail[0] == "TTL ABOVE POLICY: 2 keys outlive their namespace's TTL, e.g.:"
    assert sorted(tail[1:3]) == [
        "  auth:sess:{s9}: 7200 s (namespace TTL 1800 s)",
        "  rl:user:{u14}:api:/calls: 4508 s (namespace TTL 300 s)",
    ]
    # Why, worded for each namespace: the window wins only for rate limits.
    assert tail[3:5] == [
        "  auth:sess: its writer gave a TTL longer than the namespace's",
        "  rl:user: a rate limit's key lives as long as its window needs, and the window wins over the "
        "namespace TTL",
    ]


def policy_of(client: redis.Redis, key: str) -> str:
    report = inspect_key(client, key)
    assert report is not None
    return report.policy
