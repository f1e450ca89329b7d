"""RateLimitMiddleware over HTTP: exact counts, headers, Retry-After, 503, shadow, exemptions, proxies."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from support import ManualClock

from bisman_ratelimit import AsyncLimiter, InvalidArgument, Limiter
from bisman_ratelimit.backends import MemoryStorage
from bisman_ratelimit.core import OutagePolicy
from bisman_ratelimit.testing import free_port
from bisman_ratelimit.web import Verdict, parse_config
from bisman_ratelimit_starlette import RateLimitMiddleware

# The manual clock starts at midnight UTC: a fixed one-minute window has 60 s left.
CONFIG = {
    "defaults": {"limits": "3/minute", "algorithm": "fixed_window"},
    "global": {"limits": "8/minute", "algorithm": "fixed_window"},
    "routes": [
        {
            "path": "/auth/login",
            "methods": ["POST"],
            "limits": "2/minute",
            "algorithm": "fixed_window",
            "deduct_when": {"status": [401]},
        },
        {
            "path": "/api/calls/{call_id}",
            "limits": "2/minute",
            "algorithm": "fixed_window",
            "key": "user",
            "exempt": {"ips": ["10.0.0.0/8"], "users": ["admin"]},
        },
        {"path": "/search", "limits": "1/minute", "algorithm": "fixed_window", "shadow": True},
        {"path": "/health", "exempt": True},
    ],
}
LOCAL = {name: value for name, value in CONFIG.items() if name != "global"}


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


async def login(request: Request) -> Response:
    good = request.query_params.get("password") == "right"
    return PlainTextResponse("welcome" if good else "no", status_code=200 if good else 401)


async def bare_app(scope: Any, receive: Any, send: Any) -> None:
    await PlainTextResponse("bare")(scope, receive, send)


class HeaderAuth(AuthenticationBackend):
    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        name = conn.headers.get("x-user")
        return (AuthCredentials(["authenticated"]), SimpleUser(name)) if name else None


ROUTES = [
    Route("/items/{item_id:int}", hello),
    Route("/auth/login", login, methods=["POST"]),
    Route("/search", hello),
    Route("/health", hello),
    Mount("/api", routes=[Route("/calls/{call_id}", hello, methods=["GET", "POST"])]),
]


def make_app(clock: ManualClock, config: dict[str, Any] | None = None, **options: Any) -> Starlette:
    limiter = AsyncLimiter(MemoryStorage(clock=clock))
    if config is not None:
        options["config"] = parse_config(config)
    return Starlette(
        routes=ROUTES,
        middleware=[
            Middleware(AuthenticationMiddleware, backend=HeaderAuth()),
            Middleware(RateLimitMiddleware, limiter=limiter, **options),
        ],
    )


@pytest.fixture
def client_for() -> Callable[..., httpx.AsyncClient]:
    def make(app: Starlette, ip: str = "198.51.100.7") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app, client=(ip, 50000))
        return httpx.AsyncClient(transport=transport, base_url="http://testserver")

    return make


@pytest.fixture
async def client(clock: ManualClock) -> AsyncIterator[httpx.AsyncClient]:
    app = make_app(clock, CONFIG)
    transport = httpx.ASGITransport(app, client=("198.51.100.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as made:
        yield made


def rate_headers(response: httpx.Response) -> dict[str, str]:
    return {
        name: value
        for name, value in response.headers.items()
        if name.startswith(("ratelimit", "retry-after", "x-ratelimit"))
    }


async def test_exact_counts_and_headers_on_one_template(client: httpx.AsyncClient) -> None:
    # /items/1, /items/2 and /items/3 are one route: /items/{item_id}, on the defaults.
    responses = [await client.get(f"/items/{n}") for n in (1, 2, 3, 4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert rate_headers(responses[0]) == {
        "ratelimit-policy": '"default";q=3;w=60',
        "ratelimit": '"default";r=2;t=60',
    }
    assert rate_headers(responses[2])["ratelimit"] == '"default";r=0;t=60'
    refused = responses[3]
    assert rate_headers(refused) == {
        "ratelimit-policy": '"default";q=3;w=60',
        "ratelimit": '"default";r=0;t=60',
        "retry-after": "60",
    }
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json() == {
        "type": "https://iana.org/assignments/http-problem-types#quota-exceeded",
        "title": "Too Many Requests",
        "status": 429,
        "detail": "Rate limit exceeded; retry in 60 seconds.",
        "violated-policies": ["default"],
    }


async def test_retry_after_is_exact(client: httpx.AsyncClient, clock: ManualClock) -> None:
    for _ in range(3):
        assert (await client.get("/items/1")).status_code == 200
    clock.advance(17.2)
    refused = await client.get("/items/1")
    assert refused.status_code == 429
    # 42.8 s are left in the minute: rounded up.
    assert refused.headers["retry-after"] == "43"
    clock.advance(42.799)
    assert (await client.get("/items/1")).status_code == 429
    clock.advance(0.001)
    assert (await client.get("/items/1")).status_code == 200


async def test_unmatched_paths_fall_to_the_defaults(client: httpx.AsyncClient) -> None:
    statuses = [(await client.get(f"/nowhere/{n}")).status_code for n in range(4)]
    assert statuses == [404, 404, 404, 429]


async def test_mounted_route_template_and_user_key(clock: ManualClock, client_for: Any) -> None:
    async with client_for(make_app(clock, LOCAL)) as client:
        bob = {"x-user": "bob"}
        statuses = [(await client.get(f"/api/calls/{n}", headers=bob)).status_code for n in range(3)]
        assert statuses == [200, 200, 429]
        ok = await client.get("/api/calls/9", headers={"x-user": "carol"})
        assert rate_headers(ok)["ratelimit-policy"] == '"/api/calls/{call_id}";q=2;w=60'
        # Exempt user: never counted, no rate-limit headers for the route.
        for _ in range(4):
            admin = await client.get("/api/calls/1", headers={"x-user": "admin"})
            assert admin.status_code == 200 and rate_headers(admin) == {}


async def test_global_limit_answers_503_not_429(clock: ManualClock, client_for: Any) -> None:
    app = make_app(clock, CONFIG)
    statuses = []
    for n in range(9):
        async with client_for(app, ip=f"198.51.100.{n}") as client:
            statuses.append((await client.get("/items/1")).status_code)
    assert statuses == [200] * 8 + [503]
    async with client_for(app, ip="198.51.100.200") as client:
        shed = await client.get("/items/1")
    assert shed.status_code == 503
    assert shed.headers["retry-after"] == "60"
    assert shed.json()["type"] == "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity"
    assert shed.json()["status"] == 503


async def test_shadow_mode_counts_but_never_blocks(client: httpx.AsyncClient, caplog: Any) -> None:
    caplog.set_level("INFO", logger="bisman_ratelimit.starlette")
    responses = [await client.get("/search") for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert [r.headers["ratelimit"] for r in responses] == [
        '"/search";r=0;t=60',
        '"/search";r=0;t=60',
        '"/search";r=0;t=60',
    ]
    assert "retry-after" not in responses[2].headers
    assert "shadow limit /search would refuse GET /search" in caplog.text


async def test_exempt_route_is_never_counted(client: httpx.AsyncClient) -> None:
    for _ in range(20):
        response = await client.get("/health")
        assert response.status_code == 200 and rate_headers(response) == {}


async def test_failed_logins_only_are_counted(clock: ManualClock, client_for: Any) -> None:
    async with client_for(make_app(clock, LOCAL)) as client:
        for _ in range(5):
            assert (await client.post("/auth/login?password=right")).status_code == 200
        first = await client.post("/auth/login?password=wrong")
        assert first.status_code == 401
        assert first.headers["ratelimit"] == '"/auth/login";r=1;t=60'
        assert (await client.post("/auth/login?password=wrong")).status_code == 401
        refused = await client.post("/auth/login?password=right")
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "60"


async def test_trusted_proxy_hop_count_ignores_a_forged_header(clock: ManualClock, client_for: Any) -> None:
    app = make_app(clock, default_limits="2/minute", algorithm="fixed_window", trusted_proxies=1)
    async with client_for(app, ip="10.0.0.2") as proxy:
        # The client forged its leftmost entry anew each time; the proxy appended the real address.
        statuses = [
            (await proxy.get("/items/1", headers={"x-forwarded-for": f"6.6.6.{n}, 203.0.113.5"})).status_code
            for n in range(3)
        ]
        assert statuses == [200, 200, 429]
        other = await proxy.get("/items/1", headers={"x-forwarded-for": "203.0.113.6"})
        assert other.status_code == 200


async def test_trusted_proxy_cidrs_and_untrusted_peers(clock: ManualClock, client_for: Any) -> None:
    app = make_app(clock, default_limits="1/minute", algorithm="fixed_window", trusted_proxies=["10.0.0.0/8"])
    async with client_for(app, ip="203.0.113.9") as direct:
        # An untrusted peer cannot pick its identity with the header.
        assert (await direct.get("/items/1", headers={"x-forwarded-for": "1.1.1.1"})).status_code == 200
        assert (await direct.get("/items/1", headers={"x-forwarded-for": "2.2.2.2"})).status_code == 429
    async with client_for(app, ip="10.0.0.2") as proxy:
        chain = {"x-forwarded-for": "6.6.6.6, 198.51.100.1, 10.9.9.9"}
        assert (await proxy.get("/items/1", headers=chain)).status_code == 200
        chain = {"x-forwarded-for": "7.7.7.7, 198.51.100.1, 10.9.9.9"}
        assert (await proxy.get("/items/1", headers=chain)).status_code == 429


async def test_ipv6_clients_are_counted_per_64(clock: ManualClock, client_for: Any) -> None:
    app = make_app(clock, default_limits="2/minute", algorithm="fixed_window")
    for ip, expected in [
        ("2001:db8:1:2::1", 200),
        ("2001:db8:1:2:ffff::9", 200),
        ("2001:db8:1:2:aaaa::1", 429),
        ("2001:db8:1:3::1", 200),
    ]:
        async with client_for(app, ip=ip) as client:
            assert (await client.get("/items/1")).status_code == expected, ip


async def test_ipv6_prefix_is_configurable(clock: ManualClock, client_for: Any) -> None:
    app = make_app(clock, default_limits="1/minute", algorithm="fixed_window", ipv6_prefix=128)
    for ip in ("2001:db8::1", "2001:db8::2"):
        async with client_for(app, ip=ip) as client:
            assert (await client.get("/items/1")).status_code == 200


async def test_exempt_ip_networks(clock: ManualClock, client_for: Any) -> None:
    app = make_app(clock, LOCAL)
    async with client_for(app, ip="10.1.2.3") as internal:
        for _ in range(5):
            assert (await internal.get("/api/calls/1", headers={"x-user": "bob"})).status_code == 200


async def test_legacy_headers_option(clock: ManualClock, client_for: Any) -> None:
    app = make_app(clock, default_limits="3/minute", algorithm="fixed_window", headers="legacy")
    async with client_for(app) as client:
        response = await client.get("/items/1")
    assert rate_headers(response) == {
        "x-ratelimit-limit": "3",
        "x-ratelimit-remaining": "2",
        "x-ratelimit-reset": "60",
    }


async def test_custom_response_hook_keeps_retry_after(clock: ManualClock, client_for: Any) -> None:
    def on_limited(connection: HTTPConnection, verdict: Verdict) -> Response:
        return JSONResponse({"error": "slow down", "wait": verdict.retry_after}, status_code=verdict.status)

    app = make_app(clock, default_limits="1/minute", algorithm="fixed_window", on_limited=on_limited)
    async with client_for(app) as client:
        await client.get("/items/1")
        refused = await client.get("/items/1")
    assert refused.status_code == 429
    assert refused.json() == {"error": "slow down", "wait": 60}
    assert refused.headers["retry-after"] == "60"
    assert refused.headers["ratelimit"] == '"default";r=0;t=60'


async def test_async_callable_key_and_cost(clock: ManualClock, client_for: Any) -> None:
    async def tenant(connection: HTTPConnection) -> str | None:
        return connection.headers.get("x-tenant")

    def weight(connection: HTTPConnection) -> int:
        return int(connection.query_params.get("weight", "1"))

    app = make_app(clock, default_limits="5/minute", algorithm="fixed_window", key=tenant, cost=weight)
    async with client_for(app) as client:
        acme = {"x-tenant": "acme"}
        assert (await client.get("/items/1?weight=3", headers=acme)).headers[
            "ratelimit"
        ] == '"default";r=2;t=60'
        assert (await client.get("/items/1?weight=3", headers=acme)).status_code == 429
        assert (await client.get("/items/1?weight=2", headers=acme)).status_code == 200
        assert (await client.get("/items/1?weight=3", headers={"x-tenant": "initech"})).status_code == 200


async def test_storage_down_fails_open_or_closed(client_for: Any, caplog: Any) -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"
    limiter = AsyncLimiter.from_url(down)
    try:
        app = Starlette(
            routes=ROUTES,
            middleware=[Middleware(RateLimitMiddleware, limiter=limiter, default_limits="1/minute")],
        )
        async with client_for(app) as client:
            response = await client.get("/items/1")
        assert response.status_code == 200 and rate_headers(response) == {}
        assert "until it is back (GET /items/1: let through)" in caplog.text
        strict = Starlette(
            routes=ROUTES,
            middleware=[
                Middleware(RateLimitMiddleware, limiter=limiter, default_limits="1/minute", fail_open=False)
            ],
        )
        async with client_for(strict) as client:
            refused = await client.get("/items/1")
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert (
            refused.json()["type"]
            == "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity"
        )
        assert "until it is back (GET /items/1: refused)" in caplog.text
    finally:
        await limiter.aclose()


def _on_dead_storage(limiter: AsyncLimiter, **options: Any) -> Starlette:
    return Starlette(routes=ROUTES, middleware=[Middleware(RateLimitMiddleware, limiter=limiter, **options)])


@pytest.mark.parametrize(
    "limits",
    [{"default_limits": "1/day"}, {"default_limits": "1/day", "global_limits": "100/day"}],
    ids=["fast path", "general path"],
)
async def test_the_outage_policy_answers_open_closed_or_fallback(
    client_for: Any, caplog: Any, limits: dict[str, str]
) -> None:
    from prometheus_client import CollectorRegistry

    from bisman_ratelimit.metrics import RateLimitMetrics

    limiter = AsyncLimiter.from_url(f"redis://127.0.0.1:{free_port()}/0")
    registry = CollectorRegistry()
    try:
        async with client_for(_on_dead_storage(limiter, on_outage="open", **limits)) as client:
            opened = [await client.get("/items/1") for _ in range(2)]
        assert [(r.status_code, rate_headers(r)) for r in opened] == [(200, {}), (200, {})]
        assert "until it is back (GET /items/1: let through)" in caplog.text

        metrics = RateLimitMetrics(registry=registry)
        async with client_for(
            _on_dead_storage(limiter, on_outage="closed", metrics=metrics, **limits)
        ) as client:
            closed = await client.get("/items/1")
        assert (closed.status_code, rate_headers(closed)) == (503, {"retry-after": "1"})
        labels = {"route": "/items/{item_id}", "reason": "unavailable"}
        assert registry.get_sample_value("app_rate_limit_block_total", labels) == 1
        assert "until it is back (GET /items/1: refused)" in caplog.text

        async with client_for(_on_dead_storage(limiter, on_outage="fallback", **limits)) as client:
            counted = [await client.get("/items/1") for _ in range(2)]
        # This process's counters decide: one request a day, then 429 with the usual fields.
        assert [r.status_code for r in counted] == [200, 429]
        assert counted[1].headers["ratelimit-policy"] == '"default";q=1;w=86400'
        assert "until it is back (GET /items/1: counted in this process)" in caplog.text
    finally:
        await limiter.aclose()


async def test_outage_policy_by_namespace_and_fail_open_spellings(client_for: Any) -> None:
    limiter = AsyncLimiter.from_url(f"redis://127.0.0.1:{free_port()}/0")
    policy = OutagePolicy(default="open", by_namespace={"rl:global": "closed"})
    try:
        guarded = _on_dead_storage(limiter, default_limits="1/day", global_limits="100/day", on_outage=policy)
        async with client_for(guarded) as client:
            assert (await client.get("/items/1")).status_code == 503
        local_only = _on_dead_storage(limiter, default_limits="1/day", on_outage=policy)
        async with client_for(local_only) as client:
            assert (await client.get("/items/1")).status_code == 200
    finally:
        await limiter.aclose()
    assert RateLimitMiddleware(bare_app, fail_open=False).on_outage == OutagePolicy(default="closed")
    assert RateLimitMiddleware(bare_app).on_outage == OutagePolicy(default="open")
    with pytest.raises(InvalidArgument, match="give on_outage or fail_open, not both"):
        RateLimitMiddleware(bare_app, fail_open=True, on_outage="open")
    with pytest.raises(InvalidArgument, match="on_outage must be one of fallback, open, closed, got 'shed'"):
        RateLimitMiddleware(bare_app, on_outage="shed")  # type: ignore[arg-type]


async def test_user_key_without_authentication_middleware_says_what_to_do(client_for: Any) -> None:
    app = Starlette(
        routes=ROUTES,
        middleware=[Middleware(RateLimitMiddleware, default_limits="1/minute", key="user")],
    )
    async with client_for(app) as client:
        with pytest.raises(Exception, match=r"needs scope\['user'\]: add AuthenticationMiddleware"):
            await client.get("/items/1")


async def test_lifespan_passes_through() -> None:
    events: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        events.append(scope["type"])

    middleware = RateLimitMiddleware(app, default_limits="1/minute")
    await middleware({"type": "lifespan"}, None, None)  # type: ignore[arg-type,unused-ignore]
    assert events == ["lifespan"]


def test_a_sync_limiter_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="RateLimitMiddleware needs an AsyncLimiter"):
        RateLimitMiddleware(bare_app, limiter=Limiter(), default_limits="1/minute")  # type: ignore[arg-type,unused-ignore]


def test_config_file_is_loaded_from_a_path(tmp_path: Any) -> None:
    path = tmp_path / "limits.toml"
    path.write_text('[defaults]\nlimits = "5/minute"\n[[routes]]\npath = "/x"\nlimits = "nope"\n')
    with pytest.raises(
        Exception, match=r"limits.toml: routes\[0\] \(/x\): field 'limits': invalid rate limit"
    ):
        RateLimitMiddleware(bare_app, config=str(path))


async def test_redis_backend_counts_across_app_instances(redis_url: str, client_for: Any) -> None:
    limiters = [AsyncLimiter.from_url(redis_url), AsyncLimiter.from_url(redis_url)]
    # Two workers, each with its own connection pool, share the counters.
    apps = [
        Starlette(
            routes=ROUTES,
            middleware=[Middleware(RateLimitMiddleware, limiter=limiter, default_limits="3/minute")],
        )
        for limiter in limiters
    ]
    try:
        statuses = []
        for index in range(4):
            async with client_for(apps[index % 2]) as client:
                statuses.append((await client.get("/items/1")).status_code)
        assert statuses == [200, 200, 200, 429]
        async with client_for(apps[0]) as client:
            refused = await client.get("/items/1")
        assert json.loads(refused.text)["violated-policies"] == ["default"]
        assert 1 <= int(refused.headers["retry-after"]) <= 120
    finally:
        for limiter in limiters:
            await limiter.aclose()


async def test_head_requests_fall_under_the_get_entry(clock: ManualClock, client_for: Any) -> None:
    config = {
        "routes": [{"path": "/search", "methods": ["GET"], "limits": "1/minute", "algorithm": "fixed_window"}]
    }
    async with client_for(make_app(clock, config)) as client:
        assert (await client.head("/search")).status_code == 200
        assert (await client.get("/search")).status_code == 429


async def test_metrics_count_decisions_by_route_and_reason(clock: ManualClock, client_for: Any) -> None:
    from prometheus_client import CollectorRegistry

    from bisman_ratelimit.metrics import RateLimitMetrics

    registry = CollectorRegistry()
    metrics = RateLimitMetrics(registry=registry)
    app = make_app(clock, CONFIG, metrics=metrics)
    async with client_for(app) as client:
        for _ in range(4):
            await client.get("/items/1")
        for _ in range(2):
            await client.get("/search")

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("app_rate_limit_allowed_total", route="/items/{item_id}") == 3
    assert value("app_rate_limit_block_total", route="/items/{item_id}", reason="client") == 1
    assert value("app_rate_limit_allowed_total", route="/search") == 2
    assert value("app_rate_limit_block_total", route="/search", reason="shadow") == 1
