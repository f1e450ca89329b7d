"""django-ratelimit's documented behaviour, on ``bisman_ratelimit_django.compat``.

Each test follows a statement of its "Using Django Ratelimit", "Keys",
"Rates" and "Settings" pages, on memory and on Redis/Valkey (both on the
test clock, so fixed windows move only when a test says so).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
import redis.asyncio
from django.core.exceptions import ImproperlyConfigured
from django.test import AsyncClient, Client, RequestFactory

from bisman_ratelimit import AsyncLimiter, InvalidLimit, Limiter
from bisman_ratelimit.backends import AsyncRedisStorage, RedisStorage
from bisman_ratelimit.testing import free_port
from bisman_ratelimit_django._runtime import get_runtime
from bisman_ratelimit_django.compat import ALL, UNSAFE, Ratelimited, get_usage, is_ratelimited, ratelimit

MIDDLEWARE = [
    "compat_app.UserFromHeader",
    "bisman_ratelimit_django.middleware.RateLimitMiddleware",
]
WITH_VIEW = [*MIDDLEWARE, "bisman_ratelimit_django.compat.RatelimitMiddleware"]


@pytest.fixture
def app(configure: Any, backend: tuple[str, str | None], clock: Any) -> Iterator[Any]:
    """The documented views, counting on the parametrized backend."""
    configure.override(ROOT_URLCONF="compat_app", MIDDLEWARE=MIDDLEWARE)
    if backend[1] is None:
        configure()
        yield clock
        return
    client = redis.Redis.from_url(backend[1])
    async_client = redis.asyncio.Redis.from_url(backend[1])
    configure(
        LIMITER=Limiter(RedisStorage(client, clock=clock)),
        ASYNC_LIMITER=AsyncLimiter(AsyncRedisStorage(async_client, clock=clock)),
    )
    yield clock
    client.close()


def statuses(path: str, times: int, **extra: Any) -> list[int]:
    client = Client()
    return [client.get(path, **extra).status_code for _ in range(times)]


def limited(path: str, times: int, method: str = "get", **extra: Any) -> list[bool]:
    client = Client()
    return [json.loads(getattr(client, method)(path, **extra).content)["limited"] for _ in range(times)]


# -- the decorator's examples


def test_block_false_sets_request_limited(app: Any) -> None:
    # "Will be true if the same IP makes more than 5 requests/minute."
    assert limited("/annotate/", 6) == [False] * 5 + [True]
    assert limited("/annotate/", 1, REMOTE_ADDR="192.0.2.9") == [False]
    app.advance(60)
    assert limited("/annotate/", 1) == [False]


def test_block_true_raises_ratelimited_a_403(app: Any) -> None:
    # "If the same IP makes >5 reqs/min, will raise Ratelimited", a PermissionDenied.
    assert statuses("/block/", 7) == [200] * 5 + [403, 403]
    app.advance(60)
    assert statuses("/block/", 1) == [200]


def test_post_field_key(app: Any) -> None:
    # "If the same username is used >5 times/min, this will be True."
    assert limited("/login/", 6, "post", data={"username": "alice"}) == [False] * 5 + [True]
    assert limited("/login/", 1, "post", data={"username": "bob"}) == [False]


def test_stacked_decorators_use_multiple_keys(app: Any) -> None:
    client = Client()
    codes = [client.post("/login-tenant/", {"username": "a", "tenant": "t"}).status_code for _ in range(6)]
    assert codes == [200] * 5 + [403]
    # The tenant is over its rate, whoever logs in.
    assert client.post("/login-tenant/", {"username": "b", "tenant": "t"}).status_code == 403
    assert client.post("/login-tenant/", {"username": "b", "tenant": "u"}).status_code == 200


def test_get_and_post_keys_form_one_limit(app: Any) -> None:
    # "The same search query can only be tried 5 times a minute, regardless of the request method."
    client = Client()
    codes = [client.get("/search/", {"q": "x"}).status_code for _ in range(3)]
    codes += [client.post("/search/", {"q": "x"}).status_code for _ in range(2)]
    codes += [client.get("/search/", {"q": "x"}).status_code, client.post("/search/", {"q": "x"}).status_code]
    assert codes == [200] * 5 + [403, 403]


def test_hourly_rate(app: Any) -> None:
    # "Allow 4 reqs/hour."
    assert statuses("/slow/", 5) == [200] * 4 + [403]
    app.advance(3599)
    assert statuses("/slow/", 1) == [403]
    app.advance(1)
    assert statuses("/slow/", 1) == [200]


def test_rate_callable_skips_authenticated_users(app: Any) -> None:
    # "Only rate limit anonymous requests"
    assert statuses("/skipif1/", 101, headers={"X-Test-User": "7"}) == [200] * 101
    assert statuses("/skipif1/", 101) == [200] * 100 + [403]


def test_separate_burst_limit(app: Any) -> None:
    # 10/s and 100/m on one view: the burst limit, then the minute's.
    codes: list[int] = []
    for _ in range(11):
        codes += statuses("/burst/", 11)
        app.advance(1)
    # Ten a second pass for ten seconds; the eleventh of each second is refused by the burst limit,
    # and counts nothing against the minute's, as the outer decorator stops there.
    assert Counter(codes) == {200: 100, 403: 21}
    assert codes[:11] == [200] * 10 + [403]
    assert codes[110:] == [403] * 11


def test_group_shares_a_counter_between_views(app: Any) -> None:
    client = Client()
    codes = [client.get(f"/expensive/{view}/").status_code for view in "ab" * 5]
    assert codes == [200] * 10
    assert client.get("/expensive/a/").status_code == 403
    assert client.get("/expensive/b/").status_code == 403
    # user_or_ip: a signed-in user has a counter of their own.
    assert client.get("/expensive/a/", headers={"X-Test-User": "3"}).status_code == 200


def test_without_a_rate_nothing_is_limited(app: Any) -> None:
    assert statuses("/post/", 20, headers={"X-Cluster-Client-IP": "10.1.1.1"}) == [200] * 20


def test_header_key(app: Any) -> None:
    assert statuses("/by-header/", 3, headers={"X-Cluster-Client-IP": "10.1.1.1"}) == [200, 200, 403]
    assert statuses("/by-header/", 1, headers={"X-Cluster-Client-IP": "10.1.1.2"}) == [200]


def test_callable_key(app: Any) -> None:
    # "Use X-Cluster-Client-IP but fall back to REMOTE_ADDR."
    assert statuses("/callable-key/", 3, headers={"X-Cluster-Client-IP": "10.1.1.1"}) == [200, 200, 403]
    assert statuses("/callable-key/", 3) == [200, 200, 403]


def test_dotted_path_key(app: Any) -> None:
    assert statuses("/dotted-key/?tenant=a", 3) == [200, 200, 403]
    assert statuses("/dotted-key/?tenant=b", 1) == [200]


def test_user_key(app: Any) -> None:
    assert statuses("/per-user/", 3, headers={"X-Test-User": "1"}) == [200, 200, 403]
    assert statuses("/per-user/", 1, headers={"X-Test-User": "2"}) == [200]


def test_unsafe_methods_only(app: Any) -> None:
    client = Client()
    assert [client.get("/unsafe/").status_code for _ in range(5)] == [200] * 5
    assert [client.post("/unsafe/").status_code for _ in range(3)] == [200, 200, 403]
    assert client.delete("/unsafe/").status_code == 403
    assert client.get("/unsafe/").status_code == 200


def test_all_and_unsafe_groups_count_apart(app: Any) -> None:
    client = Client()
    # POST: 1/m on UNSAFE; GET: only the 3/m on ALL.
    assert client.post("/method-groups/").status_code == 200
    assert client.post("/method-groups/").status_code == 403
    assert [client.get("/method-groups/").status_code for _ in range(2)] == [200, 403]


def test_a_rule_for_get_counts_head_requests(app: Any) -> None:
    # Unlike django-ratelimit: HEAD runs the GET handler, so it must not get around the GET limit.
    client = Client()
    assert [client.head("/wrapped/").status_code for _ in range(2)] == [200, 403]
    assert client.get("/wrapped/").status_code == 403
    assert client.head("/cbv/").status_code == 200
    assert client.get("/cbv/").status_code == 403
    assert client.post("/cbv/").status_code == 200


def test_a_rate_of_zero_refuses_everything(app: Any) -> None:
    assert statuses("/closed/", 2) == [403, 403]


async def test_async_views(app: Any) -> None:
    client = AsyncClient()
    assert [(await client.get("/async/")).status_code for _ in range(3)] == [200, 200, 403]
    annotated = [json.loads((await client.get("/async-annotate/")).content)["limited"] for _ in range(3)]
    assert annotated == [False, False, True]


def test_class_based_views_limit_each_method_apart(app: Any) -> None:
    client = Client()
    assert [client.get("/cbv/").status_code for _ in range(2)] == [200, 403]
    assert [client.post("/cbv/").status_code for _ in range(2)] == [200, 403]
    assert [client.get("/cbv-other/").status_code for _ in range(2)] == [200, 403]
    assert [client.get("/wrapped/").status_code for _ in range(2)] == [200, 403]


# -- core methods


def test_get_usage_and_is_ratelimited(app: Any) -> None:
    client = Client()

    def usage(increment: bool) -> Any:
        return json.loads(client.get("/usage/", {"increment": "1" if increment else "0"}).content)

    assert usage(False) == {
        "usage": {"count": 0, "limit": 3, "should_limit": False, "time_left": 0},
        "is_ratelimited": False,
    }
    seen = [usage(True) for _ in range(4)]
    assert [s["usage"]["count"] for s in seen] == [1, 2, 3, 4]
    assert [s["usage"]["should_limit"] for s in seen] == [False, False, False, True]
    assert [s["is_ratelimited"] for s in seen] == [False, False, False, True]
    assert seen[0]["usage"]["time_left"] == 60
    app.advance(15)
    assert usage(False)["usage"] == {"count": 4, "limit": 3, "should_limit": True, "time_left": 45}


def test_get_usage_names_the_group_after_fn(app: Any) -> None:
    client = Client()
    assert client.get("/block/").status_code == 200
    found = json.loads(client.get("/usage-of-view/").content)["usage"]
    assert found == {"count": 1, "limit": 5, "should_limit": False, "time_left": 60}


def test_get_usage_needs_a_group_or_fn(app: Any) -> None:
    request = RequestFactory().get("/")
    with pytest.raises(ImproperlyConfigured, match="get_usage must be called with either `group` or `fn`"):
        get_usage(request, key="ip", rate="5/m")


def test_get_usage_is_none_when_nothing_limits(app: Any) -> None:
    request = RequestFactory().get("/")
    assert get_usage(request, group="g", key="ip", rate=None) is None
    assert get_usage(request, group="g", key="ip", rate="5/m", method="POST") is None
    assert is_ratelimited(request, group="g", key="ip", rate="5/m", method=UNSAFE) is False
    assert ratelimit.ALL is ALL and is_ratelimited.UNSAFE is UNSAFE  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("rate", "period"),
    [("5/s", 1), ("5/m", 60), ("5/h", 3600), ("5/d", 86400), ("5/5m", 300), ("5/300s", 300), ("5/300", 300)],
)
def test_rate_notation(app: Any, rate: str, period: int) -> None:
    app.now = (app.now // period + 1) * period  # windows are fixed: start at one's start
    request = RequestFactory().get("/")
    for _ in range(5):
        get_usage(request, group="rates", key="ip", rate=rate, increment=True)
    assert is_ratelimited(request, group="rates", key="ip", rate=rate, increment=True) is True
    app.advance(period - 1)
    assert is_ratelimited(request, group="rates", key="ip", rate=rate) is True
    app.advance(1)
    assert is_ratelimited(request, group="rates", key="ip", rate=rate, increment=True) is False


def test_rate_callables_may_return_tuples(app: Any) -> None:
    request = RequestFactory().get("/")
    usage = get_usage(request, group="t", key="ip", rate=lambda g, r: (2, 60), increment=True)
    assert usage == {"count": 1, "limit": 2, "should_limit": False, "time_left": 60}


# -- settings


def test_ratelimit_view_answers_ratelimited(app: Any, configure: Any) -> None:
    # RATELIMIT_VIEW gets the request and the exception.
    configure.override(MIDDLEWARE=WITH_VIEW, RATELIMIT_VIEW="compat_app.ratelimited_view")
    responses = [Client().get("/block/") for _ in range(6)]
    assert [r.status_code for r in responses] == [200] * 5 + [429]
    assert responses[5].content == b"Sorry you are blocked"


def test_ratelimit_view_is_required_by_the_middleware(app: Any, configure: Any) -> None:
    configure.override(MIDDLEWARE=WITH_VIEW)
    with pytest.raises(ImproperlyConfigured, match="RatelimitMiddleware needs RATELIMIT_VIEW"):
        Client().get("/block/")


def test_ratelimit_enable_false_switches_it_off(app: Any, configure: Any) -> None:
    configure.override(RATELIMIT_ENABLE=False)
    assert statuses("/block/", 10) == [200] * 10
    assert limited("/annotate/", 10) == [False] * 10
    assert get_usage(RequestFactory().get("/"), group="g", key="ip", rate="1/m", increment=True) is None


def test_exception_class(app: Any, configure: Any) -> None:
    from compat_app import TooMany

    configure.override(RATELIMIT_EXCEPTION_CLASS="compat_app.TooMany")
    client = Client()
    assert [client.get("/block/").status_code for _ in range(5)] == [200] * 5
    with pytest.raises(TooMany):
        client.get("/block/")


def test_ip_meta_key_and_masks(app: Any, configure: Any) -> None:
    configure.override(RATELIMIT_IP_META_KEY="HTTP_X_REAL_IP", RATELIMIT_IPV4_MASK=24)
    # 10.0.0.1 and 10.0.0.200 are one /24: one counter.
    assert statuses("/block/", 3, headers={"X-Real-IP": "10.0.0.1"}) == [200] * 3
    assert statuses("/block/", 3, headers={"X-Real-IP": "10.0.0.200"}) == [200, 200, 403]
    assert statuses("/block/", 1, headers={"X-Real-IP": "10.0.1.1"}) == [200]
    # IPv6 clients count per /64 by default.
    assert statuses("/block/", 5, headers={"X-Real-IP": "2001:db8::1"}) == [200] * 5
    assert statuses("/block/", 1, headers={"X-Real-IP": "2001:db8::ffff"}) == [403]
    assert statuses("/block/", 1, headers={"X-Real-IP": "2001:db8:0:1::1"}) == [200]


def test_ipv4_clients_on_a_dual_stack_socket_count_as_ipv4(app: Any, configure: Any) -> None:
    # REMOTE_ADDR ::ffff:a.b.c.d is the IPv4 client a.b.c.d, not a host of the IPv6 network ::/64.
    assert [statuses("/block/", 1, REMOTE_ADDR=f"::ffff:203.0.113.{i}")[0] for i in range(1, 7)] == [200] * 6
    assert statuses("/block/", 5, REMOTE_ADDR="203.0.113.1") == [200] * 4 + [403]
    configure.override(RATELIMIT_IPV4_MASK=24)
    assert statuses("/block/", 3, REMOTE_ADDR="::ffff:10.0.0.1") == [200] * 3
    assert statuses("/block/", 3, REMOTE_ADDR="10.0.0.200") == [200, 200, 403]
    assert statuses("/block/", 1, REMOTE_ADDR="::ffff:10.0.1.1") == [200]


def test_ip_meta_key_callable(app: Any, configure: Any) -> None:
    configure.override(RATELIMIT_IP_META_KEY=lambda request: request.META["HTTP_X_REAL_IP"])
    assert statuses("/block/", 6, headers={"X-Real-IP": "10.0.0.1"}) == [200] * 5 + [403]
    assert statuses("/block/", 1, headers={"X-Real-IP": "10.0.0.2"}) == [200]


def test_missing_ip_meta_key_is_a_configuration_error(app: Any, configure: Any) -> None:
    configure.override(RATELIMIT_IP_META_KEY="HTTP_X_REAL_IP")
    with pytest.raises(ImproperlyConfigured, match="Could not get IP address from 'HTTP_X_REAL_IP'"):
        Client().get("/block/")


# -- bad arguments fail where they are written


def test_bad_arguments() -> None:
    with pytest.raises(ImproperlyConfigured, match="Ratelimit key must be specified"):
        ratelimit(rate="5/m")
    with pytest.raises(ImproperlyConfigured, match="Unknown ratelimit key: field:x"):
        ratelimit(key="field:x", rate="5/m")
    with pytest.raises(ImproperlyConfigured, match="Could not understand ratelimit key: mystery"):
        ratelimit(key="mystery", rate="5/m")
    with pytest.raises(InvalidLimit, match="invalid rate limit '5/fortnight'"):
        ratelimit(key="ip", rate="5/fortnight")
    with pytest.raises(InvalidLimit, match=r"a rate tuple must be \(count, seconds\)"):
        ratelimit(key="ip", rate=(5, 0))
    with pytest.raises(ImproperlyConfigured, match="method must be a method name"):
        ratelimit(key="ip", rate="5/m", method=5)


def test_ratelimited_is_a_permission_denied() -> None:
    from django.core.exceptions import PermissionDenied

    assert issubclass(Ratelimited, PermissionDenied)


# -- under concurrency


def test_concurrent_requests_count_exactly(app: Any) -> None:
    def one(_: int) -> int:
        return Client().get("/block/").status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        codes = Counter(pool.map(one, range(50)))
    assert codes == {200: 5, 403: 45}


def test_concurrent_stacked_limits_count_exactly(app: Any) -> None:
    def one(index: int) -> int:
        # Five tenants, ten usernames each: every tenant is over its rate after five.
        data = {"username": f"user{index}", "tenant": f"t{index % 5}"}
        return Client().post("/login-tenant/", data).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        codes = Counter(pool.map(one, range(50)))
    assert codes == {200: 25, 403: 25}


async def test_concurrent_async_requests_count_exactly(app: Any) -> None:
    client = AsyncClient()
    codes = await asyncio.gather(*(client.get("/async/") for _ in range(40)))
    assert Counter(r.status_code for r in codes) == {200: 2, 403: 38}


# -- when the storage fails


@pytest.fixture
def down(configure: Any) -> Any:
    """The documented views on a Redis URL where nothing listens."""
    configure.override(ROOT_URLCONF="compat_app", MIDDLEWARE=MIDDLEWARE)
    url = f"redis://127.0.0.1:{free_port()}/0"
    configure(LIMITER=Limiter.from_url(url), ASYNC_LIMITER=AsyncLimiter.from_url(url))
    return configure


def test_storage_failure_fails_closed_by_default(down: Any, caplog: pytest.LogCaptureFixture) -> None:
    # RATELIMIT_FAIL_OPEN defaults to False: a request that cannot be counted is limited.
    assert statuses("/block/", 2) == [403, 403]
    assert limited("/annotate/", 2) == [True, True]
    assert get_usage(RequestFactory().get("/"), group="g", key="ip", rate="5/m", increment=True) == {
        "count": 0,
        "limit": 0,
        "should_limit": True,
        "time_left": -1,
    }


def test_storage_failure_with_fail_open(down: Any, caplog: pytest.LogCaptureFixture) -> None:
    down.override(RATELIMIT_FAIL_OPEN=True)
    assert statuses("/block/", 7) == [200] * 7
    assert limited("/annotate/", 2) == [False, False]
    assert get_usage(RequestFactory().get("/"), group="g", key="ip", rate="5/m", increment=True) is None


def test_storage_failure_with_the_fallback(configure: Any, caplog: pytest.LogCaptureFixture) -> None:
    # BISMAN_RATELIMIT's ON_OUTAGE="fallback" counts on this process's counters instead.
    configure.override(ROOT_URLCONF="compat_app", MIDDLEWARE=MIDDLEWARE)
    url = f"redis://127.0.0.1:{free_port()}/0"
    configure(LIMITER=Limiter.from_url(url), ASYNC_LIMITER=AsyncLimiter.from_url(url), ON_OUTAGE="fallback")
    assert statuses("/block/", 6) == [200] * 5 + [403]


def test_decisions_show_in_the_metrics(configure: Any) -> None:
    from prometheus_client import CollectorRegistry

    from bisman_ratelimit.metrics import RateLimitMetrics

    registry = CollectorRegistry()
    configure.override(ROOT_URLCONF="compat_app", MIDDLEWARE=MIDDLEWARE)
    configure(METRICS=RateLimitMetrics(registry=registry))
    assert statuses("/block/", 6) == [200] * 5 + [403]
    assert limited("/annotate/", 6) == [False] * 5 + [True]

    def sample(name: str, route: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"route": route, **labels})

    assert sample("app_rate_limit_allowed_total", "compat_app.block") == 5
    assert sample("app_rate_limit_block_total", "compat_app.block", reason="client") == 1
    assert sample("app_rate_limit_allowed_total", "compat_app.annotate") == 6
    assert sample("app_rate_limit_block_total", "compat_app.annotate", reason="shadow") == 1


@pytest.mark.redis
def test_values_from_the_request_are_escaped_into_keys(
    configure: Any, redis_url: str, redis_client: redis.Redis
) -> None:
    configure.override(ROOT_URLCONF="compat_app", MIDDLEWARE=MIDDLEWARE)
    configure(STORAGE_URL=redis_url)
    client = Client()
    try:
        client.post("/login/", {"username": "a:b*{x}"})
        client.post("/login/", {"username": "é" * 100})
        client.get("/by-header/", headers={"X-Cluster-Client-IP": "secret-token"})
    finally:
        get_runtime().close()
    long_digest = hashlib.sha256(("é" * 100).encode()).hexdigest()[:32]
    header_digest = hashlib.sha256(b"secret-token").hexdigest()[:32]
    # Escaped once, inside the hash tag; digests start with "#", which no escaped value holds.
    assert sorted(key.decode() for key in redis_client.keys("rl:*")) == [
        "rl:dj:{#" + header_digest + "}:compat_app.by_header:all:f1m",
        "rl:dj:{#" + long_digest + "}:compat_app.login:GET+POST:f1m",
        "rl:dj:{a%3Ab%2A%7Bx%7D}:compat_app.login:GET+POST:f1m",
    ]
