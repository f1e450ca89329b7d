"""The outage policy, the 503 verdict and the metrics reason that both web plugins share."""

from __future__ import annotations

import logging

import pytest
from support import ManualClock

from bisman_ratelimit import (
    InvalidArgument,
    Limiter,
    StorageBusy,
    StorageResponseError,
    StorageUnavailable,
)
from bisman_ratelimit.backends import MemoryStorage
from bisman_ratelimit.core import OUTAGE_REACTIONS, OutagePolicy
from bisman_ratelimit.web import (
    UNAVAILABLE,
    Evaluation,
    OutageLog,
    Planner,
    Verdict,
    decide,
    outage_reaction,
)


def test_one_reaction_for_every_key_by_default() -> None:
    assert OUTAGE_REACTIONS == ("fallback", "open", "closed")
    assert OutagePolicy().reaction("rl:ip:1.2.3.4:api:default") == "fallback"
    assert OutagePolicy.of("closed") == OutagePolicy(default="closed")
    assert OutagePolicy.from_fail_open(True) == OutagePolicy(default="open")
    assert OutagePolicy.from_fail_open(False) == OutagePolicy(default="closed")
    assert OutagePolicy(default="open").reaction_for([]) == "open"


def test_the_longest_namespace_decides_and_the_strictest_key_wins() -> None:
    policy = OutagePolicy(default="open", by_namespace={"rl": "fallback", "rl:global": "closed"})
    assert policy.reaction("rl:global") == "closed"
    assert policy.reaction("rl:ip:1.2.3.4:api:/login") == "fallback"
    assert policy.reaction("rlx:ip") == "open"
    assert policy.reaction_for(["rl:ip:1.2.3.4:api:default", "rl:global"]) == "closed"
    assert policy.reaction_for(["sess:1", "rl:user:ann:api:default"]) == "fallback"
    assert policy.reaction_for(["sess:1"]) == "open"
    assert policy.reaction_for([]) == "open"


def test_the_policy_keeps_its_own_copy_of_the_namespaces() -> None:
    namespaces: dict[str, str] = {"auth": "closed"}
    policy = OutagePolicy(by_namespace=namespaces)  # type: ignore[arg-type]
    namespaces["auth"] = "open"
    assert policy.reaction("auth:login") == "closed"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: OutagePolicy(default="deny"), "on_outage must be one of fallback, open, closed, got 'deny'"),
        (lambda: OutagePolicy.of("shed"), "on_outage must be one of fallback, open, closed, got 'shed'"),
        (
            lambda: OutagePolicy(by_namespace={"auth": "nope"}),
            "on_outage for namespace 'auth' must be one of fallback, open, closed, got 'nope'",
        ),
        (
            lambda: OutagePolicy(by_namespace={"auth:": "open"}),
            "bad namespace 'auth:': use 'domain' or 'domain:subdomain'",
        ),
        (lambda: OutagePolicy(by_namespace=["auth"]), "by_namespace must map namespaces to reactions"),
        (lambda: OutagePolicy.from_fail_open("yes"), "fail_open must be True or False, got 'yes'"),
    ],
)
def test_bad_policies_are_refused(make: object, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        make()  # type: ignore[operator]


def test_an_outage_is_logged_by_state_and_count_not_per_request(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    log = OutageLog(logging.getLogger("test.outage"), clock=clock)
    exc = StorageUnavailable("Redis is unavailable")
    policy = OutagePolicy(default="open", by_namespace={"rl:global": "closed", "rl:user": "fallback"})
    keys = [["rl:ip:a"], ["rl:global"], ["rl:user:ann"], ["rl:ip:b"]]
    with caplog.at_level(logging.INFO, logger="test.outage"):
        answers = []
        for n in range(1000):  # 125 s of failures, 8 a second
            clock.advance(0.125)
            answers.append(outage_reaction(policy, keys[n % 4], exc, f"GET /{n}", log))
        log.recovered()
        log.recovered()  # nothing more: the outage is over
    assert answers[:4] == ["open", "closed", "fallback", "open"]
    records = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert len(records) == 14
    assert records[0] == (
        "WARNING",
        "rate-limit storage unavailable (Redis is unavailable): the outage policy answers requests "
        "until it is back (GET /0: let through)",
    )
    # One line every 10 s: the first 80 failures (the first one included), then 80 each.
    assert records[1] == (
        "WARNING",
        "81 requests answered by the outage policy in the last 10 s (41 let through, 20 refused, "
        "20 counted in this process); last error: Redis is unavailable",
    )
    assert [message.split(" requests")[0] for _, message in records[2:13]] == ["80"] * 11
    assert records[13] == (
        "WARNING",
        "rate-limit storage available again after 124.9 s; 39 requests answered by the outage policy "
        "since the last report (19 let through, 10 refused, 10 counted in this process)",
    )
    assert sum(int(message.split(" requests")[0]) for _, message in records[1:13]) + 39 == 1000


def test_the_outage_log_interval_must_be_positive() -> None:
    with pytest.raises(
        InvalidArgument, match="outage log interval must be a positive number of seconds, got 0"
    ):
        OutageLog(logging.getLogger("test.outage"), interval=0)


def test_a_busy_storage_is_never_answered_open_and_each_undecided_request_is_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from prometheus_client import CollectorRegistry

    from bisman_ratelimit.metrics import RateLimitMetrics

    log = OutageLog(logging.getLogger("test.outage"))
    registry = CollectorRegistry()
    metrics = RateLimitMetrics(registry=registry)
    busy = StorageBusy("no Redis connection came free within 2 s (all 64 of the pool in use)")
    down = StorageUnavailable("Redis is unavailable")
    answer = StorageResponseError("Redis answered with an error: ERR")
    policy = OutagePolicy(default="open", by_namespace={"rl:global": "closed"})
    with caplog.at_level(logging.WARNING, logger="test.outage"):
        assert outage_reaction(policy, ["rl:ip:a"], busy, "GET /a", log, metrics) == "fallback"
        assert outage_reaction(policy, ["rl:global"], busy, "GET /b", log, metrics) == "closed"
        assert outage_reaction(policy, ["rl:ip:a"], down, "GET /c", log, metrics) == "open"
        assert outage_reaction(policy, ["rl:ip:a"], answer, "GET /d", log, metrics) == "open"
    assert [record.getMessage() for record in caplog.records] == [
        "rate-limit storage unavailable (no Redis connection came free within 2 s (all 64 of the pool "
        "in use)): the outage policy answers requests until it is back (GET /a: counted in this process)"
    ]
    counts = {
        (cause, reaction): registry.get_sample_value(
            "app_rate_limit_undecided_total", {"cause": cause, "reaction": reaction}
        )
        for cause, reaction in [
            ("busy", "fallback"),
            ("busy", "closed"),
            ("unavailable", "open"),
            ("error", "open"),
        ]
    }
    assert counts == {key: 1.0 for key in counts}
    assert OutagePolicy(default="closed").reaction_for(["k"], busy=True) == "closed"
    assert OutagePolicy(default="fallback").reaction_for(["k"], busy=True) == "fallback"
    with pytest.raises(InvalidArgument, match=r"^cause must be one of busy, unavailable, error, got 'slow'$"):
        metrics.record_undecided(cause="slow", reaction="open")  # type: ignore[arg-type]
    with pytest.raises(
        InvalidArgument, match=r"^reaction must be one of fallback, open, closed, got 'maybe'$"
    ):
        metrics.record_undecided(cause="busy", reaction="maybe")  # type: ignore[arg-type]


def test_the_unavailable_verdict_and_its_metrics_reason() -> None:
    assert Verdict(503, (("Retry-After", "1"),), 1, outage=True) == UNAVAILABLE
    assert UNAVAILABLE.reason == "unavailable"
    problem = UNAVAILABLE.problem()
    assert problem is not None and problem.status == 503
    assert Verdict(200, ()).reason is None
    assert Verdict(200, (), shadowed=("search",)).reason == "shadow"
    assert Verdict(429, (), 1, ("default",)).reason == "client"


def test_a_global_limit_refusal_is_no_outage(clock: ManualClock) -> None:
    plan = Planner(default_limits="9/minute", global_limits="1/minute").plan("/x", "GET")
    limiter = Limiter(MemoryStorage(clock=clock))
    first = decide(limiter, Evaluation.start(plan, ip="192.0.2.1", ip_key="192.0.2.1"))
    shed = decide(limiter, Evaluation.start(plan, ip="192.0.2.2", ip_key="192.0.2.2"))
    assert (first.reason, shed.status, shed.outage, shed.reason) == (None, 503, False, "global")


def test_evaluation_keys_name_every_counter_of_the_request() -> None:
    plan = Planner(default_limits="9/minute", global_limits="1/minute").plan("/x", "GET")
    evaluation = Evaluation.start(plan, ip="192.0.2.1", ip_key="192.0.2.1")
    assert evaluation.keys == ["rl:global", "rl:ip:{192.0.2.1}:api:default"]
    assert evaluation.restart().keys == evaluation.keys
