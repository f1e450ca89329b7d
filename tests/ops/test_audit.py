"""Hot-key and cardinality audits, against real servers."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import redis

from bisman_ratelimit import InvalidArgument, Limiter
from bisman_ratelimit.backends import RedisStorage
from bisman_ratelimit.ops import HotKeyReport, NamespaceGrouper, audit_hotkeys, sample_keyspace
from bisman_ratelimit.ops._grouping import show_key
from bisman_ratelimit.ops._hotkeys import (
    KeyTally,
    command_table,
    keys_of,
    parse_monitor_line,
    suggest_split,
    summarize_hotkeys,
)
from bisman_ratelimit.ops.cli import main
from bisman_ratelimit.stores import ChatContext, Presence, SessionStore
from bisman_ratelimit.testing import RedisServer


class Load:
    """A thread sending one hot GET for every cold one, until stopped."""

    def __init__(self, url: str, hot: str, cold: int = 40) -> None:
        self.client = redis.Redis.from_url(url)
        self.hot = hot
        self.cold = cold
        self.stop = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            pipe = self.client.pipeline(transaction=False)
            for _ in range(20):
                pipe.get(self.hot)
                pipe.incr(f"rl:user:{i % self.cold}:api:calls")
                i += 1
            pipe.execute()
            self.sent += 40

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.client.close()


@pytest.fixture
def notify(redis_client: redis.Redis) -> Iterator[str]:
    """A non-default notify-keyspace-events setting that the audit must put back."""
    redis_client.config_set("notify-keyspace-events", "Ex")
    yield redis_client.config_get("notify-keyspace-events")["notify-keyspace-events"]
    redis_client.config_set("notify-keyspace-events", "")


def setting(client: redis.Redis) -> str:
    value: str = client.config_get("notify-keyspace-events")["notify-keyspace-events"]
    return value


# --- pure parts -----------------------------------------------------------------------------------------


def test_monitor_lines_are_parsed_with_their_escapes() -> None:
    line = rb'1795640433.547066 [0 127.0.0.1:49900] "EVALSHA" "4ac3" "1" "k\"ey\n x" "\xff\x00"'
    assert parse_monitor_line(line) == (
        0,
        "127.0.0.1:49900",
        # A byte that is no UTF-8 is kept as the key names it (show_key prints it \xff).
        ["EVALSHA", "4ac3", "1", 'k"ey\n x', "\udcff\x00"],
    )
    assert show_key(parse_monitor_line(line)[2][4]) == "\\xff\\x00"  # type: ignore[index]
    assert parse_monitor_line('1795640433.5 [3 lua] "incr" "a b"') == (3, "lua", ["incr", "a b"])
    assert parse_monitor_line("OK") is None


def test_keys_of_uses_the_servers_command_table(redis_client: redis.Redis) -> None:
    table = command_table(redis_client.command())
    assert keys_of(["GET", "a"], table) == (["a"], False)
    assert keys_of(["MSET", "a", "1", "b", "2"], table) == (["a", "b"], True)
    assert keys_of(["DEL", "a", "b", "c"], table) == (["a", "b", "c"], True)
    # A script's keys come from the commands it runs, on MONITOR lines of their own.
    assert keys_of(["EVALSHA", "sha", "2", "k1", "k2", "arg"], table) == ([], False)
    assert keys_of(["FCALL_RO", "f", "1", "k1"], table) == ([], False)
    assert keys_of(["PING"], table) == ([], False)
    assert keys_of(["NOSUCHCOMMAND", "x"], table) == ([], False)


def test_a_scripts_key_operations_are_the_commands_it_runs(redis_client: redis.Redis) -> None:
    seq, window = "chat:ctx:thread:{t1}:seq", "chat:ctx:thread:{t1}:w:0"
    tally = KeyTally(command_table(redis_client.command()), db=0)
    for line in (
        f'1.1 [0 127.0.0.1:5000] "EVALSHA" "a1" "1" "{seq}" "1" "chat:ctx:thread:{{t1}}" "m"',
        f'1.2 [0 lua] "GET" "{seq}"',
        f'1.3 [0 lua] "LPUSH" "{window}" "m"',
        f'1.4 [0 lua] "SET" "{seq}" "1" "PX" "120000"',
        f'1.5 [0 127.0.0.1:5000] "EVALSHA" "b2" "1" "{seq}" "1" "chat:ctx:thread:{{t1}}" "5" "30"',
        f'1.6 [0 lua] "GET" "{seq}"',
        f'1.7 [0 lua] "LRANGE" "{window}" "0" "4"',
        '1.8 [1 lua] "SET" "other-database" "1"',
        '1.9 [1 127.0.0.1:5000] "GET" "other-database"',
        "OK",
    ):
        tally.add(line)
    assert tally.commands == 2
    assert tally.ops == Counter({seq: 3, window: 2})
    assert tally.reads == Counter({seq: 2, window: 1})
    assert tally.writes == Counter({seq: 1, window: 1})


def test_summary_flags_keys_above_the_threshold() -> None:
    ops = Counter(
        {"chat:ctx:thread:9": 60, "rl:global:minute:1": 6, **{f"rl:user:{i}:api:x": 1 for i in range(34)}}
    )
    reads = Counter({"chat:ctx:thread:9": 60})
    writes = Counter({"rl:global:minute:1": 6, **{f"rl:user:{i}:api:x": 1 for i in range(34)}})
    report = summarize_hotkeys(
        ops, reads, writes, commands=100, grouper=NamespaceGrouper(), threshold=0.05, top=3
    )
    assert report.keyed_ops == 100
    assert [(h.key, h.share) for h in report.hot] == [
        ("chat:ctx:thread:9", 0.6),
        ("rl:global:minute:1", 0.06),
    ]
    assert report.hot[0].suggestion.startswith("split the thread into windows: chat:ctx:thread:{<id>}:w:<n>")
    assert report.hot[1].suggestion.startswith("shard the global counter into N keys")
    assert len(report.top) == 3
    assert report.namespaces == (("chat:ctx", 60, 0.6), ("rl:user", 34, 0.34), ("rl:global", 6, 0.06))


def test_suggestions_follow_the_access_pattern() -> None:
    assert "client-side caching" in suggest_split("flags:config:dark", "flags:config", 100, 0)
    assert "client-side caching" in suggest_split("cache:x", "cache", 100, 1)
    assert suggest_split("jobs:q", "jobs", 1, 50).startswith("shard by suffix")
    assert suggest_split("call:room:1:participants", "call:room", 5, 5).startswith(
        "split the participant set"
    )
    # A thread as ChatContext keeps it is already in windows: no advice to split it into them.
    busy = (
        "one busy thread, already in windows: cache its last messages in-process for a moment "
        "and batch its appends with extend()"
    )
    for key, reads, writes in (
        ("chat:ctx:thread:{987}:w:3", 10, 30),
        ("chat:ctx:thread:{987}:seq", 40, 20),
        ("chat:ctx:thread:{987}:seq", 400, 1),
    ):
        assert suggest_split(key, "chat:ctx", reads, writes) == busy
    assert suggest_split("chat:ctx:thread:987", "chat:ctx", 30, 0) == (
        "split the thread into windows: chat:ctx:thread:{<id>}:w:<n> (redis_keys.chat_thread_window)"
    )


# --- hot keys on a server -------------------------------------------------------------------------------


def test_hot_key_is_found_and_notify_setting_restored(
    redis_url: str, redis_client: redis.Redis, notify: str
) -> None:
    with Load(redis_url, "chat:ctx:thread:hot") as load:
        report = audit_hotkeys(redis_client, duration=0.6, baseline=0.2)
    assert load.sent > 0
    assert [h.key for h in report.hot] == ["chat:ctx:thread:hot"]
    hot = report.hot[0]
    assert 0.4 < hot.share < 0.6
    assert (hot.namespace, hot.writes) == ("chat:ctx", 0)
    assert hot.reads == hot.ops
    # 40 cold keys share the other half: none is near 5%.
    assert all(h.share < 0.05 for h in report.top if h.key != "chat:ctx:thread:hot")
    assert dict((ns, ops) for ns, ops, _ in report.namespaces).keys() == {"chat:ctx", "rl:user"}
    # The notifications turned on for the sample reported the writes.
    assert ("rl:user", "incrby") in {(ns, event) for ns, event, _ in report.events}
    assert report.cost is not None and report.cost.monitor_commands > 0
    assert report.notify_setting == notify
    assert setting(redis_client) == notify


def test_the_stores_and_limiter_scripts_count_for_the_keys_they_touch(
    redis_url: str, redis_client: redis.Redis
) -> None:
    n = 20
    limiter = Limiter(RedisStorage(redis.Redis.from_url(redis_url), budget=2.0))
    chat, sessions, presence = ChatContext(redis_client), SessionStore(redis_client), Presence(redis_client)
    session = sessions.create({"cart": 1}, user_id="alice")
    presence.join("room1", "p1")
    sampling = threading.Event()
    finished: list[float] = []

    def progress(done: float, total: float) -> None:
        sampling.set()
        # A moment after the traffic, for the last MONITOR lines to be read.
        if finished and time.monotonic() > finished[0]:
            raise KeyboardInterrupt

    reports: list[HotKeyReport] = []
    audit = threading.Thread(
        target=lambda: reports.append(
            audit_hotkeys(redis.Redis.from_url(redis_url), duration=30, baseline=0, top=10, progress=progress)
        )
    )
    audit.start()
    try:
        assert sampling.wait(10)
        for i in range(n):
            limiter.hit("rl:ip:{10.0.0.1}:api:/login", "100000/hour")
            limiter.peek("rl:ip:{10.0.0.1}:api:/login", "100000/hour")
            sessions.load(session.id)
            chat.append("t1", {"m": i})
            chat.last("t1", 5)
            presence.heartbeat("room1", "p1")
    finally:
        finished.append(time.monotonic() + 0.3)
        audit.join()
        limiter.close()
    report = reports[0]
    assert report.interrupted
    seen = {h.key: (h.reads, h.writes) for h in report.top}
    assert seen == {
        # last(): LRANGE; append(): LPUSH, LTRIM and PEXPIRE.
        "chat:ctx:thread:{t1}:w:0": (n, 3 * n),
        # GET in both, SET in append().
        "chat:ctx:thread:{t1}:seq": (2 * n, n),
        # MGET in hit() and peek(), SET in hit().
        "rl:ip:{10.0.0.1}:api:/login:s1h": (2 * n, n),
        # HMGET and HGETALL, PEXPIRE to renew.
        f"auth:sess:{{{session.id}}}": (2 * n, n),
        # ZSCORE, EXISTS and ZCARD; ZREMRANGEBYSCORE, ZADD and PEXPIRE.
        "call:room:room1:participants": (3 * n, 3 * n),
    }
    hot = {h.key: h.suggestion for h in report.hot}
    busy = (
        "one busy thread, already in windows: cache its last messages in-process for a moment "
        "and batch its appends with extend()"
    )
    assert hot["chat:ctx:thread:{t1}:w:0"] == hot["chat:ctx:thread:{t1}:seq"] == busy


def test_notify_setting_restored_when_the_monitor_connection_dies(
    redis_url: str, redis_client: redis.Redis, notify: str
) -> None:
    killer = redis.Redis.from_url(redis_url)

    def kill_monitor() -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            monitors = [c for c in killer.client_list() if "O" in c["flags"]]
            if monitors:
                killer.client_kill_filter(_id=monitors[0]["id"])
                return
            time.sleep(0.01)

    thread = threading.Thread(target=kill_monitor)
    thread.start()
    with Load(redis_url, "k"), pytest.raises(redis.ConnectionError):
        audit_hotkeys(redis_client, duration=5, baseline=0)
    thread.join()
    killer.close()
    assert setting(redis_client) == notify


def test_notify_setting_restored_on_any_error(redis_client: redis.Redis, notify: str) -> None:
    def broken_progress(done: float, total: float) -> None:
        assert setting(redis_client) == "AKE"  # on while sampling
        raise RuntimeError("progress display failed")

    with pytest.raises(RuntimeError, match="progress display failed"):
        audit_hotkeys(redis_client, duration=1, baseline=0, progress=broken_progress)
    assert setting(redis_client) == notify


def test_ctrl_c_stops_the_sample_early_and_restores(redis_client: redis.Redis, notify: str) -> None:
    calls = []

    def interrupt(done: float, total: float) -> None:
        calls.append(done)
        if len(calls) == 3:
            raise KeyboardInterrupt

    started = time.monotonic()
    report = audit_hotkeys(redis_client, duration=30, baseline=0, progress=interrupt)
    assert time.monotonic() - started < 5
    assert report.interrupted
    assert setting(redis_client) == notify


def test_audit_arguments_are_checked(redis_client: redis.Redis) -> None:
    with pytest.raises(InvalidArgument, match="duration must be > 0 seconds, got 0"):
        audit_hotkeys(redis_client, duration=0)
    with pytest.raises(InvalidArgument, match=r"threshold must be between 0 and 1 \(0.05 = 5%\), got 5"):
        audit_hotkeys(redis_client, duration=1, threshold=5)


def test_hotkeys_command(
    redis_url: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    with Load(redis_url, "rl:global:minute:1"):
        code = main(["audit", "hotkeys", "--url", redis_url, "--duration", "500ms", "--baseline", "0"])
    out = capsys.readouterr().out
    assert code == 0
    assert "HOT KEYS: more than 5% of key operations each" in out
    assert "rl:global:minute:1: shard the global counter into N keys" in out
    assert "Cost of MONITOR: server CPU per 1000 commands" in out
    assert "notify-keyspace-events restored to ''" in out
    assert setting(redis_client) == ""


# --- cardinality ----------------------------------------------------------------------------------------


@pytest.fixture
def populated(redis_client: redis.Redis) -> redis.Redis:
    pipe = redis_client.pipeline(transaction=False)
    for i in range(120):
        pipe.set(f"rl:user:{i}:api:calls", i, ex=300)
    for i in range(30):
        pipe.set(f"chat:ctx:thread:{i}", "m" * 10, ex=120)
    pipe.set("chat:ctx:thread:big", "m" * 20_000, ex=120)
    for i in range(3):
        pipe.set(f"auth:sess:{{s{i}}}", "s")  # no TTL: breaks the policy
    pipe.set("flags:config:darkMode", "on")  # persistent: fine without a TTL
    pipe.set("legacy:thing", "x")
    pipe.execute()
    return redis_client


def test_cardinality_counts_every_namespace(populated: redis.Redis) -> None:
    sample = sample_keyspace(
        populated, max_keys=None, memory_samples=None, grouper=NamespaceGrouper(open_domains=True)
    )
    assert (sample.complete, sample.scanned, sample.total_keys) == (True, 156, 156)
    counts = {s.namespace: (s.keys_scanned, s.keys_estimated, s.no_ttl) for s in sample.namespaces}
    assert counts == {
        "rl:user": (120, 120, 0),
        "chat:ctx": (31, 31, 0),
        "auth:sess": (3, 3, 3),
        "flags:config": (1, 1, 0),
        "legacy": (1, 1, 0),
    }
    assert sample.no_ttl_total == 3
    assert sorted(sample.no_ttl_keys) == ["auth:sess:{s0}", "auth:sess:{s1}", "auth:sess:{s2}"]
    assert sample.biggest[0][0] == "chat:ctx:thread:big"
    assert sample.biggest[0][1] > 20_000
    chat = sample.namespace("chat:ctx")
    assert chat is not None and chat.memory_samples == 31 and chat.memory_estimated == chat.memory_sampled


def test_cardinality_sample_is_bounded(populated: redis.Redis) -> None:
    sample = sample_keyspace(populated, max_keys=50, memory_samples=2, batch=20)
    assert (sample.complete, sample.scanned) == (False, 50)
    assert sum(s.keys_estimated for s in sample.namespaces) == pytest.approx(156, abs=len(sample.namespaces))
    assert all(s.memory_samples <= 2 for s in sample.namespaces)


def test_cardinality_command(
    populated: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["audit", "cardinality", "--url", redis_url, "--top", "3"])
    out = capsys.readouterr().out
    # Keys without a TTL in an ephemeral namespace break the policy: exit 1.
    assert code == 1
    assert f"{redis_url}: scanned all 156 keys" in out
    assert "POLICY VIOLATION: 3 keys without a TTL in ephemeral namespaces" in out
    rows = {
        line.split()[0]: line.split()
        for line in out.splitlines()
        if line.startswith(("rl:user ", "auth:sess "))
    }
    assert rows["rl:user"][1:3] == ["120", "120"]
    assert rows["auth:sess"][-3:] == ["3", "-", "yes"]
    biggest = out.split("Biggest keys")[1].splitlines()
    assert biggest[3].startswith("chat:ctx:thread:big")
    assert len([line for line in biggest if line.strip()]) == 2 + 3

    populated.expire("auth:sess:{s0}", 60)
    populated.expire("auth:sess:{s1}", 60)
    populated.expire("auth:sess:{s2}", 60)
    assert main(["audit", "cardinality", "--url", redis_url]) == 0
    assert "POLICY VIOLATION" not in capsys.readouterr().out


@pytest.mark.redis
def test_cardinality_of_a_database_other_than_zero() -> None:
    with RedisServer() as server:
        url = server.url.rsplit("/", 1)[0] + "/3"
        client = redis.Redis.from_url(url)
        client.set("rl:user:1:api:x", 1, ex=60)
        redis.Redis.from_url(server.url).set("rl:user:2:api:x", 1, ex=60)
        sample = sample_keyspace(client)
        client.close()
    assert (sample.total_keys, sample.scanned) == (1, 1)
