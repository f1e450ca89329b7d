"""Route plans: which limits apply, one hit_many, and how its result reads (429, 503, shadow, deduct_when)."""

from __future__ import annotations

import hashlib

import pytest
import redis.asyncio
from hypothesis import given
from hypothesis import strategies as st
from support import ManualClock

from bisman_ratelimit import AsyncLimiter, InvalidArgument, InvalidLimit, Limiter, MultiDecision
from bisman_ratelimit.backends import AsyncRedisStorage, MemoryStorage
from bisman_ratelimit.web import ClientIP, Evaluation, LimitOptions, SingleCheck, covers, parse_config
from bisman_ratelimit.web._evaluate import Verdict, adecide, decide
from bisman_ratelimit.web._plan import GLOBAL_KEY, Planner, RoutePlan, Rule
from bisman_ratelimit.web._problem import QUOTA_EXCEEDED, TEMPORARY_REDUCED_CAPACITY

# The clock starts at midnight UTC: a fixed one-minute window has 60 s left.

CONFIG = {
    "defaults": {"limits": "3/minute", "algorithm": "fixed_window", "key": "ip"},
    "global": {"limits": "5/minute", "algorithm": "fixed_window"},
    "routes": [
        {
            "path": "/auth/login",
            "methods": ["POST"],
            "limits": ["2/minute", "10/hour"],
            "algorithm": "fixed_window",
            "deduct_when": {"status": [401, 403]},
        },
        {
            "path": "/api/calls",
            "limits": "2/minute",
            "algorithm": "fixed_window",
            "key": "user",
            "exempt": {"ips": ["10.0.0.0/8"], "users": ["admin"]},
        },
        {"path": "/search", "limits": "1/minute", "algorithm": "fixed_window", "shadow": True},
        {"path": "/chat/{id}", "limits": "2/minute", "algorithm": "fixed_window", "key": "header:x-api-key"},
        {"path": "/health", "exempt": True},
    ],
}
# The same without the global limit, for tests that make many requests.
LOCAL = {name: value for name, value in CONFIG.items() if name != "global"}


@pytest.fixture
def mem(clock: ManualClock) -> Limiter:
    return Limiter(MemoryStorage(clock=clock))


def check(plan: RoutePlan, limiter: Limiter, ip: str = "198.51.100.7", **kwargs: object) -> Verdict:
    evaluation = Evaluation.start(plan, ip=ip, ip_key=ip, **kwargs)  # type: ignore[arg-type]
    return decide(limiter, evaluation)


def test_defaults_count_per_ip_with_exact_headers(mem: Limiter) -> None:
    plan = Planner(default_limits="3/minute", algorithm="fixed_window").plan("/items/{id}", "GET")
    verdicts = [check(plan, mem) for _ in range(4)]
    assert [v.status for v in verdicts] == [200, 200, 200, 429]
    assert dict(verdicts[0].headers) == {
        "RateLimit-Policy": '"default";q=3;w=60',
        "RateLimit": '"default";r=2;t=60',
    }
    assert dict(verdicts[2].headers)["RateLimit"] == '"default";r=0;t=60'
    refused = verdicts[3]
    assert refused.retry_after == 60
    assert dict(refused.headers) == {
        "RateLimit-Policy": '"default";q=3;w=60',
        "RateLimit": '"default";r=0;t=60',
        "Retry-After": "60",
    }
    assert refused.violated == ("default",)
    problem = refused.problem("/items/1")
    assert problem is not None and problem.status == 429 and problem.type == QUOTA_EXCEEDED
    assert problem.violated_policies == ("default",)
    # Another client has its own counter.
    assert check(plan, mem, ip="198.51.100.8").status == 200


def test_the_window_reopens_after_retry_after(mem: Limiter, clock: ManualClock) -> None:
    plan = Planner(default_limits="1/minute", algorithm="fixed_window").plan(None, "GET")
    assert check(plan, mem).status == 200
    refused = check(plan, mem)
    assert refused.retry_after == 60
    clock.advance(59.999)
    assert check(plan, mem).status == 429
    clock.advance(0.001)
    assert check(plan, mem).status == 200


def test_keys_are_structured_and_escaped(mem: Limiter) -> None:
    plan = Planner(default_limits="3/minute").plan(None, "GET")
    evaluation = Evaluation.start(plan, ip="2001:db8::1", ip_key="2001:db8::/64")
    op = evaluation.next_op()
    assert op is not None and op[0] == "hit_many"
    assert [entry[0] for entry in op[1]] == ["rl:ip:{2001:db8::/64}:api:default"]


def test_global_limit_answers_503_distinct_from_429(mem: Limiter) -> None:
    planner = Planner(config=parse_config(CONFIG))
    plan = planner.plan("/things", "GET")
    statuses = []
    for n in range(6):
        statuses.append(check(plan, mem, ip=f"198.51.100.{n}").status)
    assert statuses == [200, 200, 200, 200, 200, 503]
    overload = check(plan, mem, ip="198.51.100.99")
    assert overload.status == 503
    assert overload.retry_after == 60
    assert ("Retry-After", "60") in overload.headers
    assert overload.violated == ()
    problem = overload.problem()
    assert problem is not None and problem.type == TEMPORARY_REDUCED_CAPACITY and problem.status == 503
    # The global limit never shows in the headers.
    assert all("global" not in value for _, value in overload.headers)


def test_a_refused_request_consumes_nothing(mem: Limiter) -> None:
    plan = Planner(config=parse_config(CONFIG)).plan("/things", "GET")
    for _ in range(3):
        assert check(plan, mem).status == 200
    for _ in range(5):
        assert check(plan, mem).status == 429
    # Five 429s did not use the global budget: two more clients still get in.
    assert check(plan, mem, ip="198.51.100.20").status == 200
    assert check(plan, mem, ip="198.51.100.21").status == 200
    assert check(plan, mem, ip="198.51.100.22").status == 503


def test_route_entry_replaces_defaults_and_names_the_policy(mem: Limiter) -> None:
    plan = Planner(config=parse_config(CONFIG)).plan("/chat/{id}", "GET")
    headers = {"x-api-key": "s3cret"}

    def header(name: str) -> str | None:
        return headers.get(name)

    first = check(plan, mem, header=header)
    assert dict(first.headers)["RateLimit-Policy"] == '"/chat/{id}";q=2;w=60'
    assert dict(first.headers)["RateLimit"] == '"/chat/{id}";r=1;t=60'
    digest = hashlib.sha256(b"s3cret").hexdigest()[:32]
    evaluation = Evaluation.start(plan, ip="1.2.3.4", ip_key="1.2.3.4", header=header)
    op = evaluation.next_op()
    assert op is not None
    # The API key is a credential: only its digest reaches storage.
    assert op[1][1][0] == f"rl:header:x-api-key:{{{digest}}}:api:/chat/%7Bid%7D"
    assert op[1][0][0] == GLOBAL_KEY


def test_header_key_without_the_header_counts_the_ip(mem: Limiter) -> None:
    plan = Planner(config=parse_config(CONFIG)).plan("/chat/{id}", "GET")
    evaluation = Evaluation.start(plan, ip="1.2.3.4", ip_key="1.2.3.4", header=lambda name: None)
    op = evaluation.next_op()
    assert op is not None and op[1][1][0] == "rl:ip:{1.2.3.4}:api:/chat/%7Bid%7D"


def test_user_key_and_exemptions(mem: Limiter) -> None:
    plan = Planner(config=parse_config(LOCAL)).plan("/api/calls", "POST")
    assert [check(plan, mem, user="bob").status for _ in range(3)] == [200, 200, 429]
    # Another user from the same address has a fresh quota.
    assert check(plan, mem, user="carol").status == 200
    # Exempt user and exempt network: never counted, no headers for the route.
    for _ in range(3):
        exempt_user = check(plan, mem, user="admin")
        assert exempt_user.status == 200 and exempt_user.headers == ()
        assert check(plan, mem, ip="10.1.2.3", user="bob").status == 200


def test_exempt_route_checks_nothing(mem: Limiter) -> None:
    plan = Planner(config=parse_config(CONFIG)).plan("/health", "GET")
    assert not plan.limited
    evaluation = Evaluation.start(plan, ip="1.2.3.4", ip_key="1.2.3.4")
    assert evaluation.next_op() is None
    assert evaluation.verdict == Verdict(200, ())


def test_shadow_limit_never_blocks_and_enforced_limits_keep_counting(mem: Limiter) -> None:
    plan = Planner(config=parse_config(CONFIG)).plan("/search", "GET")
    verdicts = [check(plan, mem, ip=f"198.51.100.{n % 2}") for n in range(4)]
    assert [v.status for v in verdicts] == [200, 200, 200, 200]
    assert [v.shadowed for v in verdicts] == [(), (), ("/search",), ("/search",)]
    assert dict(verdicts[2].headers)["RateLimit"] == '"/search";r=0;t=60'
    assert "Retry-After" not in dict(verdicts[2].headers)
    # The global limit (5/minute) counted all four, though the shadow limit said no twice.
    assert check(plan, mem, ip="198.51.100.50").status == 200
    assert check(plan, mem, ip="198.51.100.51").status == 503


def test_global_shadow_never_sheds(mem: Limiter) -> None:
    config = dict(CONFIG, **{"global": {"limits": "1/minute", "shadow": True}})
    plan = Planner(config=parse_config(config)).plan("/x", "GET")
    assert [check(plan, mem).status for _ in range(4)] == [200, 200, 200, 429]


def test_deduct_when_counts_only_listed_statuses(mem: Limiter) -> None:
    plan = Planner(config=parse_config(LOCAL)).plan("/auth/login", "POST")

    def login(status: int) -> Verdict:
        evaluation = Evaluation.start(plan, ip="198.51.100.7", ip_key="198.51.100.7")
        verdict = decide(mem, evaluation)
        if verdict.allowed:
            evaluation.on_response(status)
            verdict = decide(mem, evaluation)
        return verdict

    # Successful logins are free.
    for _ in range(5):
        ok = login(200)
        assert ok.status == 200
    assert dict(ok.headers)["RateLimit"] == '"/auth/login-60s";r=2;t=0, "/auth/login-3600s";r=10;t=0'
    assert dict(ok.headers)["RateLimit-Policy"] == (
        '"/auth/login-60s";q=2;w=60, "/auth/login-3600s";q=10;w=3600'
    )
    failed = login(401)
    assert failed.status == 200
    # The headers describe the counters after this failure was counted.
    assert dict(failed.headers)["RateLimit"] == '"/auth/login-60s";r=1;t=60, "/auth/login-3600s";r=9;t=3600'
    assert login(403).status == 200
    refused = login(401)
    assert refused.status == 429
    assert refused.violated == ("/auth/login-60s",)
    assert refused.retry_after == 60
    # Once refused, even a correct password waits.
    assert login(200).status == 429


def test_declared_rules_join_a_route_entry_and_replace_defaults(mem: Limiter) -> None:
    planner = Planner(config=parse_config(CONFIG))
    rule = Rule.declared(LimitOptions(limits="1/minute", algorithm="fixed_window"), scope="/export")
    plan = planner.plan("/export", "GET", (rule,))
    assert [r.name for r in plan.rules] == ["/export"]
    both = planner.plan("/api/calls", "POST", (rule,))
    assert [r.name for r in both.rules] == ["/api/calls", "/export"]
    assert check(plan, mem).status == 200
    assert check(plan, mem).status == 429


def test_limits_written_for_get_cover_head_requests() -> None:
    assert covers(None, "HEAD") and covers(None, "DELETE")
    assert covers(frozenset({"GET"}), "HEAD")
    assert covers(frozenset({"GET"}), "GET")
    assert covers(frozenset({"HEAD"}), "HEAD")
    assert not covers(frozenset({"HEAD"}), "GET")
    assert not covers(frozenset({"GET"}), "OPTIONS")
    assert not covers(frozenset({"POST"}), "HEAD")


def test_a_head_request_gets_the_plan_of_the_get_entry() -> None:
    config = parse_config({"routes": [{"path": "/report", "methods": ["GET"], "limits": "2/minute"}]})
    planner = Planner(config=config)
    head = planner.plan("/report", "HEAD")
    assert head.policy_header == planner.plan("/report", "GET").policy_header == '"/report";q=2;w=60'
    assert [rule.key_suffix for rule in head.rules] == [":api:/report"]
    assert planner.plan("/report", "OPTIONS").rules == ()


def test_declared_rule_costs_and_custom_keys(mem: Limiter) -> None:
    rule = Rule.declared(LimitOptions(limits="10/minute", algorithm="fixed_window", cost=4), scope="upload")
    plan = Planner().plan("/upload", "POST", (rule,))
    assert [check(plan, mem).status for _ in range(3)] == [200, 200, 429]

    def by_tenant(request: object) -> str:
        return "acme"

    dynamic = Rule.declared(
        LimitOptions(limits="10/minute", algorithm="fixed_window", key=by_tenant, cost=len), scope="bulk"
    )
    plan = Planner().plan("/bulk", "POST", (dynamic,))
    evaluation = Evaluation.start(plan, ip="1.2.3.4", ip_key="1.2.3.4", custom_keys=["acme"], costs=[7])
    op = evaluation.next_op()
    assert op is not None and op[1] == [("rl:custom:{acme}:api:bulk", dynamic.limits, "fixed_window", 7)]


def test_header_styles(mem: Limiter) -> None:
    legacy = Planner(default_limits="3/minute", algorithm="fixed_window", header_style="legacy").plan(
        None, "GET"
    )
    assert check(legacy, mem).headers == (
        ("X-RateLimit-Limit", "3"),
        ("X-RateLimit-Remaining", "2"),
        ("X-RateLimit-Reset", "60"),
    )
    both = Planner(default_limits="3/minute", algorithm="fixed_window", header_style="both").plan(None, "GET")
    assert [name for name, _ in check(both, mem, ip="9.9.9.9").headers] == [
        "RateLimit-Policy",
        "RateLimit",
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
    ]
    none = Planner(default_limits="3/minute", header_style="none").plan(None, "GET")
    assert check(none, mem, ip="9.9.9.8").headers == ()


def test_no_limits_at_all_checks_nothing() -> None:
    plan = Planner().plan("/x", "GET")
    assert not plan.limited


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (
            lambda: Planner(config=parse_config(CONFIG), default_limits="1/second"),
            InvalidArgument,
            "give either config or default_limits/global_limits, not both",
        ),
        (
            lambda: Planner(header_style="fancy"),  # type: ignore[arg-type]
            InvalidArgument,
            "headers must be 'draft', 'legacy'",
        ),
        (lambda: Planner(default_limits="3 per fortnight"), InvalidLimit, "invalid rate limit"),
        (
            lambda: Rule.declared(LimitOptions(limits="1/minute", key="cookie"), scope="x"),
            InvalidArgument,
            "unknown key 'cookie'",
        ),
        (
            lambda: Rule.declared(LimitOptions(limits="2/minute", cost=3), scope="x"),
            InvalidLimit,
            "cost 3 is more than the limit",
        ),
        (
            lambda: Rule.declared(LimitOptions(limits="2/minute", cost=0), scope="x"),
            InvalidArgument,
            "cost must be a whole number",
        ),
        (
            lambda: Rule.declared(LimitOptions(limits="2/minute", algorithm="leaky"), scope="x"),
            InvalidArgument,
            "unknown algorithm 'leaky'",
        ),
        (
            lambda: Rule.declared(LimitOptions(limits="2/minute", deduct_when=[700]), scope="x"),
            InvalidArgument,
            "deduct_when must list HTTP status codes",
        ),
        (
            lambda: Rule.declared(LimitOptions(limits="2/minute", exempt_ips=["10.0.0.0/33"]), scope="x"),
            InvalidArgument,
            r"exempt_ips\[0\]: '10.0.0.0/33' is not an IP address or a CIDR",
        ),
    ],
)
def test_bad_declarations_are_refused(make: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        make()  # type: ignore[operator]


async def test_adecide_on_redis_hits_in_one_call_and_refunds_in_one(
    async_redis_client: redis.asyncio.Redis, clock: ManualClock
) -> None:
    limiter = AsyncLimiter(AsyncRedisStorage(async_redis_client, clock=clock))
    try:
        plan = Planner(config=parse_config(CONFIG)).plan("/auth/login", "POST")
        for status, after in ((200, ["refund_many"]), (401, []), (200, ["refund_many"]), (401, [])):
            evaluation = Evaluation.start(plan, ip="198.51.100.7", ip_key="198.51.100.7")
            kinds = await _run(limiter, evaluation)
            assert evaluation.verdict.status == 200
            # The login limits and the global limit, counted together.
            assert kinds == ["hit_many"]
            evaluation.on_response(status)
            # Only a response that does not count gives the login hits back, once.
            evaluation.on_response(status)
            assert await _run(limiter, evaluation) == after
            assert evaluation.verdict.status == 200
        refused = await adecide(limiter, Evaluation.start(plan, ip="198.51.100.7", ip_key="198.51.100.7"))
        assert refused.status == 429
        assert refused.violated == ("/auth/login-60s",)
        # The manual clock stands at the start of a minute.
        assert refused.retry_after == 60
        assert ("Retry-After", str(refused.retry_after)) in refused.headers
    finally:
        await limiter.aclose()


async def _run(limiter: AsyncLimiter, evaluation: Evaluation) -> list[str]:
    kinds = []
    op = evaluation.next_op()
    while op is not None:
        kinds.append(op[0])
        evaluation.feed(await _one(limiter, op))
        op = evaluation.next_op()
    return kinds


async def _one(limiter: AsyncLimiter, op: tuple[object, ...]) -> MultiDecision:
    if op[0] == "hit_many":
        return await limiter.hit_many(op[1])  # type: ignore[arg-type]
    return await limiter.refund_many(op[1], op[3])  # type: ignore[arg-type]


def test_single_check_fast_path_agrees_with_the_general_path(clock: ManualClock) -> None:
    planner = Planner(default_limits="3/minute", algorithm="fixed_window")
    plan = planner.plan("/items/{id}", "GET")
    single = SingleCheck.of(plan, client_ip=ClientIP())
    assert single is not None
    fast = Limiter(MemoryStorage(clock=clock))
    slow = Limiter(MemoryStorage(clock=clock))
    for ip_key in ("198.51.100.7", "2001:db8::/64", None):
        evaluation = Evaluation.start(plan, ip=ip_key, ip_key=ip_key)
        op = evaluation.next_op()
        assert op is not None and op[1][0][0] == single.key(ip_key)
    for _ in range(4):
        decision = fast.hit(single.key("198.51.100.7"), single.limit, single.algorithm, single.cost)
        assert single.verdict(decision) == decide(
            slow, Evaluation.start(plan, ip="198.51.100.7", ip_key="198.51.100.7")
        )
    assert single.ratelimit(decision) == '"default";r=0;t=60'


@pytest.mark.parametrize("algorithm", ["fixed_window", "sliding_window", "token_bucket", "gcra"])
def test_the_fast_path_gives_the_headers_of_the_general_path(clock: ManualClock, algorithm: str) -> None:
    plan = Planner(default_limits="3/minute", algorithm=algorithm).plan("/items/{id}", "GET")  # type: ignore[arg-type]
    single = SingleCheck.of(plan, client_ip=ClientIP())
    assert single is not None
    fast = Limiter(MemoryStorage(clock=clock))
    slow = Limiter(MemoryStorage(clock=clock))
    for _ in range(5):
        decision = fast.hit(*single.hit_args("198.51.100.7"))
        general = decide(slow, Evaluation.start(plan, ip="198.51.100.7", ip_key="198.51.100.7"))
        assert single.verdict(decision) == general
        if decision.allowed:
            # What a plugin adds to an allowed response without building a Verdict.
            assert (
                ("RateLimit-Policy", single.policy_header),
                ("RateLimit", single.ratelimit(decision)),
            ) == (general.headers)
        clock.advance(7)


def test_fast_path_arguments_follow_the_client_address() -> None:
    plan = Planner(default_limits="3/minute").plan("/items/{id}", "GET")
    direct = SingleCheck.of(plan, client_ip=ClientIP())
    assert direct is not None
    assert direct.hit_args("198.51.100.7") == (
        "rl:ip:{198.51.100.7}:api:default",
        direct.limit,
        "sliding_window",
        1,
    )
    # Remembered per peer: the same tuple, not built again.
    assert direct.hit_args("198.51.100.7") is direct.hit_args("198.51.100.7")
    assert direct.hit_args("2001:db8::1")[0] == "rl:ip:{2001:db8::/64}:api:default"
    assert direct.hit_args(None)[0] == "rl:ip:{unknown}:api:default"
    # Behind a trusted proxy the forwarded address names the client.
    proxied = SingleCheck.of(plan, client_ip=ClientIP(trusted_proxies=1))
    assert proxied is not None
    assert proxied.hit_args("10.0.0.1", "203.0.113.9")[0] == "rl:ip:{203.0.113.9}:api:default"
    assert proxied.hit_args("10.0.0.1", "198.51.100.1")[0] == "rl:ip:{198.51.100.1}:api:default"
    with pytest.raises(InvalidArgument, match="is not one limit on the client address"):
        SingleCheck(Planner(default_limits="3/minute", key="user").plan("/x", "GET"), client_ip=ClientIP())


def test_limit_options_are_validated_once_and_compare_by_value() -> None:
    options = LimitOptions(
        limits="3/minute",
        exempt_ips="10.0.0.0/8",
        exempt_users=["admin"],
        deduct_when=[403, 401, 401],
        group="g",
    )
    assert options == LimitOptions(
        limits=["3/minute"],
        exempt_ips=("10.0.0.0/8",),
        exempt_users=("admin",),
        deduct_when=(401, 403),
        group="g",
    )
    assert (options.exempt_ips, options.exempt_users, options.deduct_when) == (
        ("10.0.0.0/8",),
        ("admin",),
        (401, 403),
    )
    assert options.exempt.matches("10.1.2.3", None) and options.exempt.matches(None, "admin")
    rule = Rule.declared(options, scope="/login")
    assert (rule.name, rule.scope, rule.limits, rule.deduct_when) == (
        "/login",
        "/login",
        options.parsed,
        (401, 403),
    )
    hash(options)
    with pytest.raises(InvalidArgument, match="group must be a non-empty string, got ''"):
        LimitOptions(limits="3/minute", group="")
    with pytest.raises(InvalidArgument, match="shadow must be True or False, got 'yes'"):
        LimitOptions(limits="3/minute", shadow="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "config",
    [
        {"defaults": {"limits": "3/minute"}, "global": {"limits": "9/minute"}},
        {"defaults": {"limits": ["3/minute", "9/hour"]}},
        {"defaults": {"limits": "3/minute", "key": "user"}},
        {"defaults": {"limits": "3/minute", "shadow": True}},
        {"defaults": {"limits": "3/minute", "exempt": {"users": ["admin"]}}},
        {"defaults": {"limits": "3/minute", "deduct_when": {"status": [401]}}},
    ],
)
def test_anything_more_than_one_plain_limit_takes_the_general_path(config: dict[str, object]) -> None:
    assert (
        SingleCheck.of(Planner(config=parse_config(config)).plan("/x", "GET"), client_ip=ClientIP()) is None
    )


@pytest.mark.parametrize("algorithm", ["fixed_window", "sliding_window", "token_bucket", "gcra"])
def test_the_fast_path_serves_plans_without_headers(clock: ManualClock, algorithm: str) -> None:
    plan = Planner(default_limits="3/minute", algorithm=algorithm, header_style="none").plan("/x", "GET")  # type: ignore[arg-type]
    single = SingleCheck.of(plan, client_ip=ClientIP())
    assert single is not None and not single.draft
    fast = Limiter(MemoryStorage(clock=clock))
    slow = Limiter(MemoryStorage(clock=clock))
    verdicts = []
    for _ in range(5):
        decision = fast.hit(*single.hit_args("198.51.100.7"))
        verdict = single.verdict(decision)
        assert verdict == decide(slow, Evaluation.start(plan, ip="198.51.100.7", ip_key="198.51.100.7"))
        verdicts.append((verdict.status, [name for name, _ in verdict.headers], verdict.violated))
        clock.advance(1)
    assert verdicts == [(200, [], ())] * 3 + [(429, ["Retry-After"], ("default",))] * 2
    # Legacy fields are worked out from every decision: the general path keeps them.
    legacy = Planner(default_limits="3/minute", header_style="legacy").plan("/x", "GET")
    assert SingleCheck.of(legacy, client_ip=ClientIP()) is None


def test_a_limit_keyed_by_a_header_takes_the_fast_path_only_for_a_plugin_that_reads_headers() -> None:
    plan = Planner(default_limits="3/minute", key="header:X-Client").plan("/items/{id}", "GET")
    assert SingleCheck.of(plan, client_ip=ClientIP()) is None
    single = SingleCheck.of(plan, client_ip=ClientIP(), headers=True)
    assert single is not None and single.header == "x-client"
    digest = hashlib.sha256(b"tenant-7").hexdigest()[:32]
    assert single.hit_args_by("tenant-7", "198.51.100.7") == (
        f"rl:header:x-client:{{{digest}}}:api:default",
        single.limit,
        "sliding_window",
        1,
    )
    # Remembered per value: the same tuple, not hashed again; a long value (clients choose
    # them) is hashed each time, never kept.
    assert single.hit_args_by("tenant-7", "198.51.100.7") is single.hit_args_by("tenant-7", None)
    long = "x" * 16_000
    assert single.hit_args_by(long, None)[0] == (
        f"rl:header:x-client:{{{hashlib.sha256(long.encode()).hexdigest()[:32]}}}:api:default"
    )
    assert (len(single._by_value), len(single.hit_args_by("y" * 256, None)[0])) == (1, 65)
    assert len(single._by_value) == 2
    # No header, or an empty one: the client is counted by address.
    assert single.hit_args_by(None, "198.51.100.7")[0] == "rl:ip:{198.51.100.7}:api:default"
    assert single.hit_args_by("", "2001:db8::1")[0] == "rl:ip:{2001:db8::/64}:api:default"
    ip_plan = Planner(default_limits="3/minute").plan("/items/{id}", "GET")
    ip_single = SingleCheck.of(ip_plan, client_ip=ClientIP(), headers=True)
    assert ip_single is not None and ip_single.header is None


@given(
    value=st.one_of(st.none(), st.text(max_size=40), st.sampled_from(["a, b", " x ", "é", "\udcff", "{}"])),
    peer=st.sampled_from(["198.51.100.7", "2001:db8::1", None]),
)
def test_the_header_fast_path_keys_and_decides_as_the_general_path(
    value: str | None, peer: str | None
) -> None:
    clock = ManualClock()
    plan = Planner(default_limits="2/minute", algorithm="fixed_window", key="header:x-client").plan(
        "/x", "GET"
    )
    single = SingleCheck.of(plan, client_ip=ClientIP(), headers=True)
    assert single is not None
    ip = ClientIP().client(peer)
    ip_key = ClientIP().key(ip) if ip else None
    fast = Limiter(MemoryStorage(clock=clock))
    slow = Limiter(MemoryStorage(clock=clock))
    for _ in range(3):
        evaluation = Evaluation.start(plan, ip=ip, ip_key=ip_key, header=lambda name: value)
        assert evaluation.keys == [single.hit_args_by(value, peer)[0]]
        decision = fast.hit(*single.hit_args_by(value, peer))
        assert single.verdict(decision) == decide(slow, evaluation)
