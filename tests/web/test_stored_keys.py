"""The keys the web plans count under, as Redis stores them: in their namespaces, short and small."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import redis.cluster
from redis.crc import key_slot

from bisman_ratelimit import ConfigFileError, InvalidLimit, Limiter
from bisman_ratelimit.backends import RedisStorage
from bisman_ratelimit.ops.cli import main
from bisman_ratelimit.stores import default_registry
from bisman_ratelimit.web import Evaluation, LimitOptions, parse_config
from bisman_ratelimit.web._evaluate import decide
from bisman_ratelimit.web._plan import Planner, RoutePlan

# The redis_cluster fixture.
pytest_plugins = ["cluster_fixtures"]

O1_ALGORITHMS = ("fixed_window", "sliding_window", "token_bucket", "gcra")


def plan_for(path: str, limits: str | list[str], algorithm: str = "sliding_window") -> RoutePlan:
    config = {"routes": [{"path": path, "limits": limits, "algorithm": algorithm, "key": "user"}]}
    return Planner(config=parse_config(config)).plan(path, "GET")


def hit(limiter: Limiter, plan: RoutePlan, user: str) -> int:
    evaluation = Evaluation.start(plan, ip="198.51.100.7", ip_key="198.51.100.7", user=user)
    return decide(limiter, evaluation).status


@pytest.fixture
def limiter(redis_client: redis.Redis) -> Iterator[Limiter]:
    with Limiter(RedisStorage(redis_client)) as made:
        yield made


def test_a_per_user_route_limit_lives_in_its_namespace(limiter: Limiter, redis_client: redis.Redis) -> None:
    plan = plan_for("/calls/{thread_id}", "100/minute")
    assert hit(limiter, plan, "u14") == 200
    # The caller's key, escaped once (the route's braces), the hash tag
    # around the identity alone, the limit's tag last.
    assert redis_client.keys("*") == [b"rl:user:{u14}:api:/calls/%7Bthread_id%7D:s1m"]
    namespace = default_registry.find("rl:user:{u14}:api:/calls/%7Bthread_id%7D:s1m")
    assert namespace is not None and namespace.prefix == "rl:user"
    # The key lives as long as its count matters: two windows of sliding_window.
    assert 60_000 < redis_client.pttl("rl:user:{u14}:api:/calls/%7Bthread_id%7D:s1m") <= 120_000


@pytest.mark.parametrize(
    ("user", "stored"),
    [
        ("a{b}c", b"rl:user:{a%7Bb%7Dc}:api:/calls:s1m"),
        ("100%", b"rl:user:{100%25}:api:/calls:s1m"),
        ("\u00e9l\u00e8ve", b"rl:user:{%C3%A9l%C3%A8ve}:api:/calls:s1m"),
        ("tenant:7", b"rl:user:{tenant:7}:api:/calls:s1m"),
    ],
)
def test_identities_are_escaped_once_inside_their_hash_tag(
    limiter: Limiter, redis_client: redis.Redis, user: str, stored: bytes
) -> None:
    assert hit(limiter, plan_for("/calls", "100/minute"), user) == 200
    assert redis_client.keys("*") == [stored]
    assert default_registry.find(stored.decode()) is default_registry.get("rl:user")


def test_flush_dry_run_counts_the_library_keys(
    limiter: Limiter, redis_client: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Windows long enough that no key expires while the test runs.
    plan = plan_for("/calls", ["10/minute", "100/hour"])
    # 40 users at once, over real connections: 80 keys (two limits each).
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda n: hit(limiter, plan, f"u{n}"), range(40)))
    assert statuses == [200] * 40
    redis_client.set("rl:global:s1m", 1)  # another namespace
    assert main(["flush", "--url", redis_url, "--namespace", "rl:user", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"80 keys under 'rl:user:' on {redis_url} (SCAN MATCH rl:user:*)" in out
    assert len(redis_client.keys("*")) == 81

    assert main(["inspect", "--url", redis_url, "rl:user:{u7}:api:/calls:s1h"]) == 0
    lines = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert lines["namespace"] == "rl:user"


@pytest.mark.parametrize("algorithm", O1_ALGORITHMS)
def test_a_key_of_the_seed_route_costs_at_most_80_bytes(
    limiter: Limiter, redis_client: redis.Redis, algorithm: str
) -> None:
    plan = plan_for("/calls", "100/minute", algorithm)
    for _ in range(3):
        assert hit(limiter, plan, "u14") == 200
    (key,) = redis_client.keys("*")
    assert key == f"rl:user:{{u14}}:api:/calls:{algorithm[0]}1m".encode()
    assert redis_client.object("encoding", key) == b"int"
    # Valkey 8 keeps the key inside its value object: 56 B on a fresh server, and now and then 72 B
    # on the server the whole suite shares (the allocation depends on the server's history), which is
    # Redis's figure: the goal of 80 B holds either way.
    valkey = redis_client.info("server").get("server_name") == "valkey"
    if valkey:
        assert redis_client.memory_usage(key) in (56, 72)
    else:
        assert redis_client.memory_usage(key) == 72


def test_one_identity_shares_a_slot_on_the_cluster(redis_cluster: object) -> None:
    client: redis.cluster.RedisCluster = redis_cluster.client()  # type: ignore[attr-defined]
    config = {
        "defaults": {"limits": ["10/minute", "100/hour"], "key": "user"},
        "routes": [
            {
                "path": "/calls",
                "limits": ["5/minute", "50/hour", "500/day"],
                "algorithm": "gcra",
                "key": "user",
            }
        ],
    }
    planner = Planner(config=parse_config(config))
    users = ["u14", "a{b}c", "100%", "\u00e9l\u00e8ve", "2001:db8::1", "}{"]
    with Limiter(RedisStorage(client)) as limiter:
        for user in users:
            for path in ("/calls", "/other"):
                assert hit(limiter, planner.plan(path, "GET"), user) == 200
        keys = [key.decode() for key in client.keys(target_nodes=redis.cluster.RedisCluster.ALL_NODES)]
    assert len(keys) == 5 * len(users)
    slots: dict[str, set[int]] = {}
    for key in keys:
        identity = re.fullmatch(r"rl:user:(\{[^}]*\}):api:[^:]+:[a-z0-9]+", key)
        assert identity is not None, key
        slots.setdefault(identity.group(1), set()).add(key_slot(key.encode()))
    assert len(slots) == len(users)
    assert all(len(found) == 1 for found in slots.values())
    # The identities do not all land in one slot.
    assert len({next(iter(found)) for found in slots.values()}) > 1


def test_the_documented_flush_drops_the_old_layout_only(
    limiter: Limiter, redis_client: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    old = [
        b"rl:{rl:user:u14:api:/calls/%257Bthread_id%257D}:sw:100:60000000:100",
        b"rl:{rl:ip:198.51.100.7:api:default}:gc:10:1000000:10",
    ]
    for key in old:
        redis_client.set(key, b"\0" * 16, px=60_000)
    assert hit(limiter, plan_for("/calls/{thread_id}", "100/minute"), "u14") == 200
    assert main(["flush", "--url", redis_url, "--namespace", "rl:{rl", "--yes"]) == 0
    assert "deleted 2 keys under 'rl:{rl:'" in capsys.readouterr().out
    assert redis_client.keys("*") == [b"rl:user:{u14}:api:/calls/%7Bthread_id%7D:s1m"]


def test_two_amounts_over_one_window_fail_when_the_config_is_read() -> None:
    # They would share one counter: said at start-up, naming the entry.
    config = {"routes": [{"path": "/x", "limits": ["10/minute", "20 per 60 seconds"]}]}
    with pytest.raises(ConfigFileError) as caught:
        parse_config(config)
    assert str(caught.value) == (
        "<dict>: routes[0] (/x): field 'limits': limits 10/minute and 20/minute count over one "
        "window and would share a counter; keep the stricter one"
    )
    with pytest.raises(InvalidLimit, match="^limits 10/minute and 20/minute count over one window"):
        LimitOptions(limits="10/minute;20/minute")
