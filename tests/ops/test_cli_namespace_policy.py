"""The default TTL policy covers every key the library writes: each rate limit kind, the session index."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from bisman_ratelimit import Limiter
from bisman_ratelimit.backends import RedisStorage
from bisman_ratelimit.ops.cli import main
from bisman_ratelimit.stores import SessionStore, default_registry
from bisman_ratelimit.stores._namespaces import SESSION_INDEX_TTL
from bisman_ratelimit.stores._sessions import DEFAULT_ABSOLUTE_LIFETIME
from bisman_ratelimit.web import Evaluation, parse_config
from bisman_ratelimit.web._evaluate import decide
from bisman_ratelimit.web._plan import Planner


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def limiter(redis_client: redis.Redis) -> Iterator[Limiter]:
    with Limiter(RedisStorage(redis_client)) as made:
        yield made


@pytest.mark.parametrize(
    ("key", "namespace"),
    [
        ("ip", "rl:ip"),
        ("user", "rl:user"),
        ("api_key", "rl:api_key"),
        ("header:X-Tenant", "rl:header"),
    ],
)
def test_every_kind_of_rate_limit_key_is_in_an_ephemeral_namespace(
    key: Any, namespace: str, limiter: Limiter, redis_client: redis.Redis
) -> None:
    config = parse_config({"routes": [{"path": "/login", "limits": "5/minute", "key": key}]})
    plan = Planner(config=config).plan("/login", "POST")
    evaluation = Evaluation.start(
        plan,
        ip="203.0.113.9",
        ip_key="203.0.113.9",
        user="u1",
        api_key="k-1",
        header={"x-tenant": "acme"}.get,
        custom_keys=["tenant-7"],
    )
    assert decide(limiter, evaluation).status == 200
    [stored] = redis_client.keys("*")
    found = default_registry.find(stored.decode())
    assert found is not None and (found.prefix, found.ephemeral) == (namespace, True)


def test_a_key_functions_counters_are_in_an_ephemeral_namespace() -> None:
    # A callable key= (given in code, not in a file) counts under rl:custom:{<its value>}.
    found = default_registry.find("rl:custom:{tenant-7}:api:/login:s1m")
    assert found is not None and (found.prefix, found.ephemeral) == ("rl:custom", True)


def test_a_client_address_counter_without_a_ttl_is_a_violation(
    limiter: Limiter, redis_client: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    limiter.hit("rl:ip:{203.0.113.9}:api:/login", "5/minute")
    key = "rl:ip:{203.0.113.9}:api:/login:s1m"
    redis_client.persist(key)
    code, out, _ = run(capsys, "audit", "cardinality", "--url", redis_url)
    assert code == 1
    lines = out.splitlines()
    row = lines[4].split()
    assert (row[:3], row[-3:]) == (["rl:ip", "1", "1"], ["1", "-", "yes"])
    assert lines[6:8] == ["POLICY VIOLATION: 1 keys without a TTL in ephemeral namespaces, e.g.:", f"  {key}"]
    code, out, _ = run(capsys, "inspect", "--url", redis_url, key)
    assert code == 0
    assert out.splitlines()[-2:] == [
        "namespace  rl:ip",
        "policy     VIOLATION: rl:ip is ephemeral but this key never expires",
    ]


def test_a_users_session_index_follows_its_own_policy(
    redis_url: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    # The index lives as long as a session may: the store's absolute lifetime.
    assert SESSION_INDEX_TTL == DEFAULT_ABSOLUTE_LIFETIME
    with SessionStore(redis_url) as sessions:
        sessions.create({"role": "admin"}, user_id="alice")
    assert 43_190_000 < redis_client.pttl("auth:sess:user:{alice}") <= 43_200_000
    code, out, _ = run(capsys, "audit", "cardinality", "--url", redis_url)
    assert code == 0
    assert "TTL ABOVE POLICY" not in out
    rows = {line.split()[0]: line.split()[-3:] for line in out.splitlines()[4:6]}
    assert rows == {"auth:sess": ["0", "-", "yes"], "auth:sess:user": ["0", "-", "yes"]}
    code, out, _ = run(capsys, "inspect", "--url", redis_url, "auth:sess:user:{alice}")
    assert code == 0
    assert out.splitlines()[-2:] == [
        "namespace  auth:sess:user",
        "policy     follows its namespace's TTL policy",
    ]


def test_a_session_index_above_its_policy_says_why(
    redis_client: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    redis_client.hset("auth:sess:user:{bob}", "s1", 1)
    redis_client.expire("auth:sess:user:{bob}", 2 * 43_200)
    code, out, _ = run(capsys, "audit", "cardinality", "--url", redis_url)
    assert code == 0
    lines = out.splitlines()
    start = lines.index("TTL ABOVE POLICY: 1 keys outlive their namespace's TTL, e.g.:")
    assert lines[start + 1 : start + 4] == [
        "  auth:sess:user:{bob}: 86400 s (namespace TTL 43200 s)",
        "  auth:sess:user: a user's index of sessions lives as long as its longest session may: the store's "
        "absolute_lifetime is longer than the namespace TTL",
        "",
    ]
