"""RateLimitMiddleware over HTTP: boundaries, headers, 429 and 503 bodies, policies, client addresses."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import AsyncClient, Client
from prometheus_client import CollectorRegistry

from bisman_ratelimit import AsyncLimiter, Limiter
from bisman_ratelimit.metrics import RateLimitMetrics
from bisman_ratelimit.testing import free_port
from bisman_ratelimit.web import Verdict
from bisman_ratelimit_django._runtime import get_runtime

FIXED = 'algorithm = "fixed_window"'

ROUTES = f"""
[defaults]
limits = "5/minute"
{FIXED}

[[routes]]
path = "users/<int:id>/"
limits = "2/minute"
{FIXED}

[[routes]]
path = "async/users/<int:id>/"
limits = "2/minute"
{FIXED}

[[routes]]
path = "/api/items/{{item_id}}"
limits = "3/minute"
{FIXED}

[[routes]]
path = "/auth/login"
methods = ["POST"]
limits = "2/minute"
{FIXED}
deduct_when = {{ status = [401, 403] }}

[[routes]]
path = "health/"
exempt = true
"""


def statuses(client: Client, path: str, count: int, **extra: Any) -> list[int]:
    return [client.get(path, **extra).status_code for _ in range(count)]


def problem(response: HttpResponse) -> dict[str, Any]:
    assert response["Content-Type"] == "application/problem+json"
    body: dict[str, Any] = json.loads(response.content)
    return body


def test_defaults_allow_exactly_the_limit_then_refuse_with_headers(configure, limits_file, clock) -> None:
    configure(CONFIG=limits_file(ROUTES))
    client = Client()
    for left in (4, 3, 2, 1, 0):
        response = client.get("/plain/")
        assert response.status_code == 200
        assert response["RateLimit-Policy"] == '"default";q=5;w=60'
        assert response["RateLimit"] == f'"default";r={left};t=60'
        assert "Retry-After" not in response
    clock.advance(15)
    refused = client.get("/plain/")
    assert refused.status_code == 429
    assert refused["Retry-After"] == "45"
    assert refused["RateLimit-Policy"] == '"default";q=5;w=60'
    assert refused["RateLimit"] == '"default";r=0;t=45'
    assert problem(refused) == {
        "type": "https://iana.org/assignments/http-problem-types#quota-exceeded",
        "title": "Too Many Requests",
        "status": 429,
        "detail": "Rate limit exceeded; retry in 45 seconds.",
        "violated-policies": ["default"],
    }
    clock.advance(44)
    assert client.get("/plain/").status_code == 429
    clock.advance(1)
    assert statuses(client, "/plain/", 6) == [200] * 5 + [429]


async def test_async_views_count_alike(configure, limits_file, clock) -> None:
    configure(CONFIG=limits_file(ROUTES))
    client = AsyncClient()
    codes = [(await client.get("/async/")).status_code for _ in range(6)]
    assert codes == [200] * 5 + [429]
    refused = await client.get("/async/")
    assert refused["Retry-After"] == "60"
    assert refused["RateLimit"] == '"default";r=0;t=60'
    assert problem(refused)["violated-policies"] == ["default"]


def test_one_policy_per_route_template(configure, limits_file) -> None:
    configure(CONFIG=limits_file(ROUTES))
    client = Client()
    assert client.get("/users/1/").status_code == 200
    second = client.get("/users/2/")
    assert second.status_code == 200
    assert second["RateLimit-Policy"] == '"users/<int:id>/";q=2;w=60'
    assert second["RateLimit"] == '"users/<int:id>/";r=0;t=60'
    assert client.get("/users/3/").status_code == 429
    # Other routes keep their own counters.
    assert client.get("/plain/")["RateLimit"] == '"default";r=4;t=60'


async def test_one_policy_per_route_template_async(configure, limits_file) -> None:
    configure(CONFIG=limits_file(ROUTES))
    client = AsyncClient()
    codes = [(await client.get(f"/async/users/{n}/")).status_code for n in range(3)]
    assert codes == [200, 200, 429]


def test_included_routes_match_the_braced_spelling(configure, limits_file) -> None:
    configure(CONFIG=limits_file(ROUTES))
    client = Client()
    assert [client.get(f"/api/items/{n}/").status_code for n in range(4)] == [200, 200, 200, 429]
    assert client.get("/api/items/9/")["RateLimit-Policy"] == '"/api/items/{item_id}";q=3;w=60'


def test_method_entries_leave_other_methods_to_the_defaults(configure, limits_file) -> None:
    configure(CONFIG=limits_file(ROUTES))
    client = Client()
    assert client.get("/auth/login/")["RateLimit-Policy"] == '"default";q=5;w=60'
    assert client.post("/auth/login/", {"password": "no"})["RateLimit-Policy"] == '"/auth/login";q=2;w=60'


def test_deduct_when_counts_only_failed_logins(configure, limits_file) -> None:
    configure(CONFIG=limits_file(ROUTES))
    client = Client()
    for _ in range(5):
        assert client.post("/auth/login/", {"password": "right"}).status_code == 200
    first = client.post("/auth/login/", {"password": "wrong"})
    assert first.status_code == 401
    assert first["RateLimit"] == '"/auth/login";r=1;t=60'
    assert client.post("/auth/login/", {"password": "wrong"}).status_code == 401
    # Two failures used the quota: even the right password waits now.
    refused = client.post("/auth/login/", {"password": "right"})
    assert refused.status_code == 429
    assert refused["Retry-After"] == "60"
    assert problem(refused)["violated-policies"] == ["/auth/login"]


def test_exempt_routes_are_never_counted(configure, limits_file) -> None:
    configure(CONFIG=limits_file(ROUTES))
    client = Client()
    responses = [client.get("/health/") for _ in range(8)]
    assert [r.status_code for r in responses] == [200] * 8
    assert "RateLimit" not in responses[-1]


def test_unmatched_paths_fall_to_the_defaults(configure, limits_file) -> None:
    configure(CONFIG=limits_file(ROUTES))
    client = Client()
    responses = [client.get(f"/no/such/page/{n}") for n in range(6)]
    assert [r.status_code for r in responses] == [404] * 5 + [429]
    assert responses[0]["RateLimit"] == '"default";r=4;t=60'
    assert responses[5]["Retry-After"] == "60"


async def test_unmatched_paths_fall_to_the_defaults_async(configure, limits_file) -> None:
    configure(CONFIG=limits_file(ROUTES))
    client = AsyncClient()
    codes = [(await client.get("/nowhere")).status_code for _ in range(6)]
    assert codes == [404] * 5 + [429]


GLOBAL = f"""
[defaults]
limits = "100/minute"
{FIXED}

[global]
limits = "3/minute"
"""


def test_global_limit_answers_503_for_everyone(configure, limits_file, clock) -> None:
    configure(CONFIG=limits_file(GLOBAL))
    client = Client()
    clients = [f"192.0.2.{n}" for n in range(1, 5)]
    responses = [client.get("/plain/", REMOTE_ADDR=address) for address in clients]
    assert [r.status_code for r in responses] == [200, 200, 200, 503]
    clock.advance(20)
    shed = client.get("/plain/", REMOTE_ADDR="192.0.2.99")
    assert shed.status_code == 503
    assert shed["Retry-After"] == "40"
    assert problem(shed) == {
        "type": "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "The server is over its request capacity; retry in 40 seconds.",
    }
    # The global limit stays out of the quota fields; the client's own policy is shown.
    assert shed["RateLimit-Policy"] == '"default";q=100;w=60'
    clock.advance(40)
    assert client.get("/plain/", REMOTE_ADDR="192.0.2.99").status_code == 200


async def test_global_limit_async(configure, limits_file) -> None:
    configure(CONFIG=limits_file(GLOBAL))
    client = AsyncClient()
    codes = [(await client.get("/async/")).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 503]


def test_global_limit_from_settings(configure) -> None:
    configure(DEFAULT_LIMITS="2/minute", DEFAULT_ALGORITHM="fixed_window", GLOBAL_LIMITS="3/minute")
    client = Client()
    assert statuses(client, "/plain/", 3) == [200, 200, 429]
    # A refused request consumes nothing, the global count included.
    assert client.get("/plain/", REMOTE_ADDR="192.0.2.1").status_code == 200
    assert client.get("/plain/", REMOTE_ADDR="192.0.2.2").status_code == 503


def test_shadow_route_counts_and_reports_but_never_refuses(configure, limits_file) -> None:
    configure(
        CONFIG=limits_file(
            f"""
[[routes]]
path = "plain/"
limits = "2/minute"
{FIXED}
shadow = true
"""
        )
    )
    client = Client()
    responses = [client.get("/plain/") for _ in range(4)]
    assert [r.status_code for r in responses] == [200] * 4
    assert [r["RateLimit"] for r in responses] == [
        '"plain/";r=1;t=60',
        '"plain/";r=0;t=60',
        '"plain/";r=0;t=60',
        '"plain/";r=0;t=60',
    ]
    assert all("Retry-After" not in r for r in responses)


def test_shadow_limit_does_not_stop_enforced_ones_counting(configure, limits_file) -> None:
    configure(
        CONFIG=limits_file(
            f"""
[defaults]
limits = "3/minute"
{FIXED}

[global]
limits = "1/minute"
shadow = true
"""
        )
    )
    client = Client()
    assert statuses(client, "/plain/", 4) == [200, 200, 200, 429]


EXEMPT = f"""
[[routes]]
path = "plain/"
limits = "1/minute"
{FIXED}
exempt = {{ ips = ["10.0.0.0/8", "2001:db8::/32"], users = ["admin"] }}

[[routes]]
path = "users/<int:id>/"
limits = "1/minute"
{FIXED}
key = "user"
exempt = {{ users = ["admin"] }}
"""


def test_exempt_networks_and_users(configure, limits_file) -> None:
    configure(CONFIG=limits_file(EXEMPT))
    client = Client()
    assert statuses(client, "/plain/", 3, REMOTE_ADDR="10.20.30.40") == [200, 200, 200]
    assert statuses(client, "/plain/", 3, REMOTE_ADDR="2001:db8:1::5") == [200, 200, 200]
    assert statuses(client, "/plain/", 2, REMOTE_ADDR="192.0.2.1") == [200, 429]
    assert statuses(client, "/users/1/", 3, headers={"X-Test-User": "admin"}) == [200, 200, 200]
    assert statuses(client, "/users/1/", 2, headers={"X-Test-User": "alice"}) == [200, 429]


def test_user_keys_count_each_user_and_fall_back_to_the_address(configure, limits_file) -> None:
    configure(CONFIG=limits_file(EXEMPT))
    client = Client()
    assert statuses(client, "/users/1/", 2, headers={"X-Test-User": "alice"}) == [200, 429]
    assert statuses(client, "/users/1/", 2, headers={"X-Test-User": "bob"}) == [200, 429]
    # Anonymous requests are counted by address.
    assert statuses(client, "/users/1/", 2) == [200, 429]
    assert statuses(client, "/users/1/", 1, REMOTE_ADDR="192.0.2.8") == [200]


async def test_user_keys_read_a_lazy_user_through_auser(configure, limits_file) -> None:
    configure(CONFIG=limits_file(EXEMPT))
    client = AsyncClient()
    lazy = {"X-Test-Lazy-User": "1"}
    codes = [
        (await client.get("/users/1/", headers={**lazy, "X-Test-User": name})).status_code
        for name in ("carol", "carol", "admin", "admin")
    ]
    assert codes == [200, 429, 200, 200]


def test_api_key_and_header_keys(configure, limits_file) -> None:
    configure(
        CONFIG=limits_file(
            f"""
[[routes]]
path = "plain/"
limits = "1/minute"
{FIXED}
key = "api_key"

[[routes]]
path = "users/<int:id>/"
limits = "1/minute"
{FIXED}
key = "header:X-Tenant"
"""
        )
    )
    client = Client()
    assert statuses(client, "/plain/", 2, headers={"X-API-Key": "k1"}) == [200, 429]
    assert statuses(client, "/plain/", 1, headers={"X-API-Key": "k2"}) == [200]
    assert statuses(client, "/users/1/", 2, headers={"X-Tenant": "acme"}) == [200, 429]
    assert statuses(client, "/users/1/", 1, headers={"X-Tenant": "globex"}) == [200]


PER_IP = f"""
[defaults]
limits = "2/minute"
{FIXED}
"""


def test_forwarded_for_is_ignored_without_trusted_proxies(configure, limits_file) -> None:
    configure(CONFIG=limits_file(PER_IP))
    client = Client()
    codes = [
        client.get("/plain/", headers={"X-Forwarded-For": f"198.51.100.{n}"}).status_code for n in range(3)
    ]
    assert codes == [200, 200, 429]


def test_trusted_hop_count_reads_the_proxy_entry_not_a_forged_one(configure, limits_file) -> None:
    configure(CONFIG=limits_file(PER_IP), TRUSTED_PROXIES=1)
    client = Client()
    proxy = {"REMOTE_ADDR": "10.0.0.1"}

    def get(forwarded: str) -> int:
        return client.get("/plain/", headers={"X-Forwarded-For": forwarded}, **proxy).status_code

    assert [get("203.0.113.7"), get("203.0.113.7"), get("203.0.113.7")] == [200, 200, 429]
    # The client wrote its own X-Forwarded-For; the proxy appended the real address.
    assert get("1.1.1.1, 203.0.113.7") == 429
    assert get("8.8.8.8, 203.0.113.7") == 429
    # Another client behind the same proxy has its own quota.
    assert get("203.0.113.8") == 200


def test_trusted_networks_walk_from_the_right(configure, limits_file) -> None:
    configure(CONFIG=limits_file(PER_IP), TRUSTED_PROXIES=["10.0.0.0/8"])
    client = Client()

    def get(forwarded: str, peer: str = "10.0.0.2") -> int:
        return client.get("/plain/", headers={"X-Forwarded-For": forwarded}, REMOTE_ADDR=peer).status_code

    assert get("203.0.113.7, 10.0.0.5") == 200
    assert get("9.9.9.9, 203.0.113.7, 10.0.0.5") == 200
    assert get("forged, 203.0.113.7") == 429
    # A peer outside the trusted networks is the client, whatever it claims.
    assert get("203.0.113.9", peer="198.51.100.1") == 200
    assert get("203.0.113.10", peer="198.51.100.1") == 200
    assert get("203.0.113.11", peer="198.51.100.1") == 429


def test_rfc7239_forwarded_header(configure, limits_file) -> None:
    configure(CONFIG=limits_file(PER_IP), TRUSTED_PROXIES=1, FORWARDED_HEADER="Forwarded")
    client = Client()
    forwarded = {"Forwarded": 'for="[2001:db8::7]:4711";proto=https'}
    assert statuses(client, "/plain/", 3, headers=forwarded, REMOTE_ADDR="10.0.0.1") == [200, 200, 429]
    other = {"Forwarded": "for=192.0.2.60"}
    assert statuses(client, "/plain/", 1, headers=other, REMOTE_ADDR="10.0.0.1") == [200]


def test_ipv6_clients_share_their_64(configure, limits_file) -> None:
    configure(CONFIG=limits_file(PER_IP))
    client = Client()
    assert client.get("/plain/", REMOTE_ADDR="2001:db8:1:2::1").status_code == 200
    assert client.get("/plain/", REMOTE_ADDR="2001:db8:1:2:ffff:ffff:ffff:ffff").status_code == 200
    assert client.get("/plain/", REMOTE_ADDR="2001:db8:1:2::abcd").status_code == 429
    assert client.get("/plain/", REMOTE_ADDR="2001:db8:1:3::1").status_code == 200


def test_ipv6_prefix_setting(configure, limits_file) -> None:
    configure(CONFIG=limits_file(PER_IP), IPV6_PREFIX=128)
    client = Client()
    assert statuses(client, "/plain/", 2, REMOTE_ADDR="2001:db8::1") == [200, 200]
    assert statuses(client, "/plain/", 1, REMOTE_ADDR="2001:db8::2") == [200]
    assert statuses(client, "/plain/", 1, REMOTE_ADDR="2001:db8::1") == [429]


def test_legacy_headers(configure) -> None:
    configure(DEFAULT_LIMITS="2/minute", DEFAULT_ALGORITHM="fixed_window", HEADERS="both")
    client = Client()
    first = client.get("/plain/")
    assert (first["X-RateLimit-Limit"], first["X-RateLimit-Remaining"], first["X-RateLimit-Reset"]) == (
        "2",
        "1",
        "60",
    )
    assert first["RateLimit"] == '"default";r=1;t=60'
    client.get("/plain/")
    refused = client.get("/plain/")
    assert (refused["X-RateLimit-Remaining"], refused["X-RateLimit-Reset"], refused["Retry-After"]) == (
        "0",
        "60",
        "60",
    )


def test_legacy_headers_only(configure) -> None:
    configure(DEFAULT_LIMITS="2/minute", HEADERS="legacy")
    response = Client().get("/plain/")
    assert response["X-RateLimit-Limit"] == "2"
    assert "RateLimit" not in response and "RateLimit-Policy" not in response


def slow_down(request: HttpRequest, verdict: Verdict) -> HttpResponse:
    return HttpResponse(f"slow down, {verdict.status}", status=verdict.status, content_type="text/plain")


def test_custom_refusal_response(configure) -> None:
    configure(DEFAULT_LIMITS="1/minute", DEFAULT_ALGORITHM="fixed_window", RESPONSE=slow_down)
    client = Client()
    client.get("/plain/")
    refused = client.get("/plain/")
    assert (refused.status_code, refused.content, refused["Content-Type"]) == (
        429,
        b"slow down, 429",
        "text/plain",
    )
    assert refused["Retry-After"] == "60"
    assert refused["RateLimit"] == '"default";r=0;t=60'


def test_custom_refusal_response_by_dotted_path(configure) -> None:
    configure(DEFAULT_LIMITS="1/minute", RESPONSE=f"{__name__}.slow_down")
    client = Client()
    assert [client.get("/plain/").content for _ in range(2)] == [b"ok", b"slow down, 429"]


def test_no_limits_configured_means_no_headers(configure) -> None:
    configure()
    response = Client().get("/plain/")
    assert response.status_code == 200
    assert "RateLimit" not in response


@pytest.mark.parametrize("path", ["/plain/", "/async/"])
def test_bad_setting_fails_loudly_at_first_request(configure, path: str) -> None:
    configure(DEFAULT_LIMITS="lots")
    client = Client(raise_request_exception=True)
    with pytest.raises(ValueError, match=r"BISMAN_RATELIMIT\['DEFAULT_LIMITS'\]: invalid rate limit 'lots'"):
        client.get(path)


@pytest.fixture
def dead_storage() -> dict[str, Any]:
    """Limiters pointing at a port where nothing listens."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    return {"LIMITER": Limiter.from_url(url), "ASYNC_LIMITER": AsyncLimiter.from_url(url)}


def test_storage_failure_fails_open_by_default(configure, dead_storage, caplog) -> None:
    configure(DEFAULT_LIMITS="1/minute", **dead_storage)
    responses = [Client().get("/plain/") for _ in range(2)]
    assert [r.status_code for r in responses] == [200, 200]
    assert "RateLimit" not in responses[1]
    assert "until it is back (GET /plain/: let through)" in caplog.text


def test_a_thousand_failing_requests_log_a_bounded_number_of_lines(configure, dead_storage, caplog) -> None:
    configure(DEFAULT_LIMITS="1/minute", GLOBAL_LIMITS="1000/minute", ON_OUTAGE="closed", **dead_storage)
    clock = configure.clock
    get_runtime().outages.clock = clock
    client = Client()
    statuses = []
    for _ in range(1000):  # 125 s of outage, 8 requests a second
        clock.advance(0.125)
        statuses.append(client.get("/plain/").status_code)
    assert statuses == [503] * 1000
    ours = [r.getMessage() for r in caplog.records if r.name == "bisman_ratelimit.django"]
    # Opening connections in advance, when the middleware loads, fails once too.
    assert ours.pop(0).startswith("could not open connections to the rate-limit storage in advance: ")
    # The first failure, then one count every 10 s: 81 requests, then 80 each.
    assert len(ours) == 13
    assert ours[0].endswith("the outage policy answers requests until it is back (GET /plain/: refused)")
    assert [message.split(" (")[0] for message in ours[1:]] == [
        "81 requests answered by the outage policy in the last 10 s"
    ] + ["80 requests answered by the outage policy in the last 10 s"] * 11


async def test_storage_failure_fails_closed_on_request(configure, dead_storage, caplog) -> None:
    configure(DEFAULT_LIMITS="1/minute", FAIL_OPEN=False, **dead_storage)
    response = await AsyncClient().get("/async/")
    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert (
        problem(response)["type"]
        == "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity"
    )
    assert "until it is back (GET /async/: refused)" in caplog.text


@pytest.mark.parametrize(
    "limits",
    [{"DEFAULT_LIMITS": "1/day"}, {"DEFAULT_LIMITS": "1/day", "GLOBAL_LIMITS": "100/day"}],
    ids=["fast path", "general path"],
)
def test_the_outage_policy_answers_open_closed_or_fallback(configure, dead_storage, caplog, limits) -> None:
    configure(ON_OUTAGE="open", **limits, **dead_storage)
    opened = [Client().get("/plain/") for _ in range(2)]
    assert [(r.status_code, "RateLimit" in r) for r in opened] == [(200, False), (200, False)]
    assert "until it is back (GET /plain/: let through)" in caplog.text

    registry = CollectorRegistry()
    configure(ON_OUTAGE="closed", METRICS=RateLimitMetrics(registry=registry), **limits, **dead_storage)
    closed = Client().get("/plain/")
    assert (closed.status_code, closed["Retry-After"]) == (503, "1")
    assert "RateLimit" not in closed
    labels = {"route": "plain/", "reason": "unavailable"}
    assert registry.get_sample_value("app_rate_limit_block_total", labels) == 1
    assert "until it is back (GET /plain/: refused)" in caplog.text

    configure(ON_OUTAGE="fallback", **limits, **dead_storage)
    counted = [Client().get("/plain/") for _ in range(2)]
    # This process's counters decide: one request a day, then 429 with the usual fields.
    assert [r.status_code for r in counted] == [200, 429]
    assert counted[0]["RateLimit-Policy"] == '"default";q=1;w=86400'
    assert "until it is back (GET /plain/: counted in this process)" in caplog.text


@pytest.mark.parametrize("on_outage", ["open", "closed", "fallback"])
async def test_the_outage_policy_answers_async_views(configure, dead_storage, on_outage) -> None:
    configure(ON_OUTAGE=on_outage, DEFAULT_LIMITS="1/day", **dead_storage)
    client = AsyncClient()
    got = [(await client.get("/async/")).status_code for _ in range(2)]
    assert got == {"open": [200, 200], "closed": [503, 503], "fallback": [200, 429]}[on_outage]


def test_metrics_count_decisions_by_route_and_reason(configure, limits_file) -> None:
    registry = CollectorRegistry()
    metrics = RateLimitMetrics(registry=registry)
    configure(CONFIG=limits_file(GLOBAL.replace('"100/minute"', '"2/minute"')), METRICS=metrics)
    client = Client()
    assert statuses(client, "/plain/", 3) == [200, 200, 429]
    assert client.get("/plain/", REMOTE_ADDR="192.0.2.1").status_code == 200
    assert client.get("/plain/", REMOTE_ADDR="192.0.2.2").status_code == 503

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"route": "plain/", **labels})

    assert sample("app_rate_limit_allowed_total") == 3
    assert sample("app_rate_limit_block_total", reason="client") == 1
    assert sample("app_rate_limit_block_total", reason="global") == 1

    # The root pattern's route is "": a route of its own, not a request that matched nothing.
    assert client.get("/", REMOTE_ADDR="192.0.2.3").status_code == 503
    assert registry.get_sample_value("app_rate_limit_block_total", {"route": "/", "reason": "global"}) == 1
    assert (
        registry.get_sample_value("app_rate_limit_block_total", {"route": "<unmatched>", "reason": "global"})
        is None
    )
