"""Per-request cost of rate limiting a minimal Django view, against django-ratelimit.

    python benchmarks/bench_django.py [--quick] [--server any|redis|valkey] [--pin split|same|none]
                                      [--profile]

Each contender is a Django handler (``BaseHandler.get_response``, what the
WSGI handler calls) with its middleware chain loaded once, answering one
fresh ``WSGIRequest`` per call: URL resolution, the middleware and the view
all run, in this process. Each view has a URLconf of its own, so URL
resolution costs every row the same. The client address changes with every request
(1000 addresses in turn) and every limit is far above what the run uses, so
every timed request is allowed (the warm-up checks it).

- *bare view*: no rate limiting at all; every other row is reported as what
  it adds to it;
- *bisman middleware*: ``RateLimitMiddleware`` with ``DEFAULT_LIMITS``;
- *bisman @ratelimit*: the decorator without the middleware;
- *django-ratelimit*: ``@ratelimit(key="ip", rate=...)`` on the view, on a
  ``LocMemCache``, then on Django's ``RedisCache``;
- the async rows run the same view as ``async def`` under
  ``get_response_async`` (as ASGI would), bare and with the middleware.

Rounds interleave the contenders and each figure is the median of its
rounds; the overhead is the median of the per-round differences with the
bare view. Target: at most 8 µs over the bare view on memory.

Needs the ``bench`` extra: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import pstats
import statistics
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import django
from _common import (
    machine_summary,
    markdown_table,
    pin,
    private_server,
    progress,
    source_revision,
    us,
    verdict,
)
from django.conf import settings

AMOUNT = 1_000_000
ADDRESSES = [f"10.{i // 250}.{i % 250}.1" for i in range(1000)]
TARGET_US = 8.0
PLANS = {"full": (15, 4000), "quick": (5, 1500)}


def configure(redis_url: str) -> None:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="benchmark",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[],
        MIDDLEWARE=[],
        DATABASES={},
        USE_TZ=True,
        CACHES={
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "locmem": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "bench"},
            "redis": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": redis_url},
        },
        RATELIMIT_USE_CACHE="locmem",
        BISMAN_RATELIMIT={"DEFAULT_LIMITS": f"{AMOUNT}/minute", "DEFAULT_ALGORITHM": "sliding_window"},
    )
    django.setup()


# --- the app ---------------------------------------------------------------------------------------

# ROOT_URLCONF is left empty: every request names its own URLconf.
urlpatterns: list[Any] = []
# One URLconf per view, set on each request (``request.urlconf``): every view is
# the first and only pattern its request is matched against, so no row pays for
# trying the patterns listed before its own (about 0.3 µs each).
URLCONFS: dict[str, ModuleType] = {}


def build_urls() -> None:
    from django.http import HttpRequest, HttpResponse
    from django.urls import path
    from django_ratelimit.decorators import ratelimit as dr_ratelimit

    from bisman_ratelimit_django import ratelimit

    def bare(request: HttpRequest) -> HttpResponse:
        return HttpResponse(b"ok")

    async def bare_async(request: HttpRequest) -> HttpResponse:
        return HttpResponse(b"ok")

    decorated = ratelimit(f"{AMOUNT}/minute", key="ip")(bare)
    peer = dr_ratelimit(key="ip", rate=f"{AMOUNT}/m", block=True)(bare)
    views = {"bare": bare, "async": bare_async, "decorated": decorated, "peer": peer}
    for name, view in views.items():
        conf = URLCONFS[name] = ModuleType(f"{__name__}.urls_{name}")
        conf.urlpatterns = [path(f"{name}/", view)]


# --- contenders ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Contender:
    name: str
    check: Callable[[str], Any]
    # Run before each timed batch: django-ratelimit reads its cache alias from settings per request.
    setup: Callable[[], None] = lambda: None


def handler(
    middleware: Sequence[str], bisman: dict[str, Any] | None = None, *, is_async: bool = False
) -> Any:
    """A handler with its middleware chain loaded under these settings (kept after they are restored)."""
    from django.core.handlers.base import BaseHandler
    from django.test.utils import override_settings

    overrides: dict[str, Any] = {"MIDDLEWARE": list(middleware)}
    if bisman is not None:
        overrides["BISMAN_RATELIMIT"] = bisman
    with override_settings(**overrides):
        found = BaseHandler()
        found.load_middleware(is_async=is_async)
    return found


def sync_contender(name: str, path: str, chain: Any, setup: Callable[[], None] | None = None) -> Contender:
    from django.core.handlers.wsgi import WSGIRequest
    from django.test import RequestFactory

    base = RequestFactory()._base_environ(PATH_INFO=path, REQUEST_METHOD="GET")
    get_response = chain.get_response
    urlconf = URLCONFS[path.strip("/")]

    def check(address: str) -> Any:
        environ = base.copy()
        environ["REMOTE_ADDR"] = address
        request = WSGIRequest(environ)
        request.urlconf = urlconf
        return get_response(request)

    return Contender(name, check, setup or (lambda: None))


def async_contender(name: str, path: str, chain: Any) -> tuple[str, Callable[[str], Awaitable[Any]]]:
    from django.core.handlers.asgi import ASGIRequest
    from django.test.client import FakePayload

    get_response_async = chain.get_response_async

    def scope(address: str) -> dict[str, Any]:
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"testserver")],
            "client": (address, 40000),
            "server": ("testserver", 80),
        }

    scopes = {address: scope(address) for address in ADDRESSES}
    urlconf = URLCONFS[path.strip("/")]

    def check(address: str) -> Awaitable[Any]:
        request = ASGIRequest(scopes[address], FakePayload(b""))
        request.urlconf = urlconf
        return get_response_async(request)

    return name, check


def use_cache(alias: str) -> Callable[[], None]:
    def setup() -> None:
        settings.RATELIMIT_USE_CACHE = alias

    return setup


# --- timing ----------------------------------------------------------------------------------------


def allowed(response: Any) -> bool:
    return int(response.status_code) == 200


def measure(contenders: Sequence[Contender], rounds: int, calls: int) -> dict[str, list[float]]:
    for contender in contenders:
        contender.setup()
        for address in ADDRESSES:
            response = contender.check(address)
            if not allowed(response):
                raise RuntimeError(f"{contender.name} refused a warm-up request: {response.content!r}")
    keys = [ADDRESSES[i % len(ADDRESSES)] for i in range(calls)]
    times: dict[str, list[float]] = {c.name: [] for c in contenders}
    for round_no in range(rounds):
        shift = round_no % len(contenders)
        for contender in [*contenders[shift:], *contenders[:shift]]:
            contender.setup()
            check = contender.check
            gc.collect()
            start = perf_counter()
            for key in keys:
                check(key)
            times[contender.name].append((perf_counter() - start) / calls)
    return times


async def measure_async(
    contenders: Sequence[tuple[str, Callable[[str], Awaitable[Any]]]], rounds: int, calls: int
) -> dict[str, list[float]]:
    for name, check in contenders:
        for address in ADDRESSES:
            if not allowed(await check(address)):
                raise RuntimeError(f"{name} refused a warm-up request")
    keys = [ADDRESSES[i % len(ADDRESSES)] for i in range(calls)]
    times: dict[str, list[float]] = {name: [] for name, _ in contenders}
    for round_no in range(rounds):
        shift = round_no % len(contenders)
        for name, check in [*contenders[shift:], *contenders[:shift]]:
            gc.collect()
            start = perf_counter()
            for key in keys:
                await check(key)
            times[name].append((perf_counter() - start) / calls)
    return times


def over(times: dict[str, list[float]], name: str, base: str) -> float:
    """Median of the per-round differences: rounds interleave, so pairing them cancels drift."""
    return statistics.median(a - b for a, b in zip(times[name], times[base], strict=True))


def rows(times: dict[str, list[float]], base: str, backends: dict[str, str]) -> list[list[str]]:
    out = []
    for name, samples in times.items():
        median = statistics.median(samples)
        spread = (max(samples) - min(samples)) / median
        extra = "-" if name == base else us(over(times, name, base))
        out.append([name, backends[name], us(median), extra, f"{spread:.0%}"])
    return out


def profile(contender: Contender, calls: int) -> str:
    keys = [ADDRESSES[i % len(ADDRESSES)] for i in range(calls)]
    profiler = cProfile.Profile()
    profiler.enable()
    for key in keys:
        contender.check(key)
    profiler.disable()
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(25)
    return stream.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--server", default="any", choices=("any", "redis", "valkey"))
    parser.add_argument("--pin", default="split", choices=("split", "same", "none"))
    parser.add_argument("--profile", action="store_true", help="cProfile the middleware on memory")
    args = parser.parse_args(argv)
    rounds, calls = PLANS["quick" if args.quick else "full"]

    with private_server(args.server) as server:
        placement = pin(args.pin, server)
        configure(server.url)
        build_urls()
        mw = "bisman_ratelimit_django.middleware.RateLimitMiddleware"
        memory = {"DEFAULT_LIMITS": f"{AMOUNT}/minute"}
        on_redis = {"DEFAULT_LIMITS": f"{AMOUNT}/minute", "STORAGE_URL": server.url}
        bare_chain = handler([])
        contenders = [
            sync_contender("bare view", "/bare/", bare_chain),
            sync_contender("bisman middleware", "/bare/", handler([mw], memory)),
            sync_contender("bisman @ratelimit", "/decorated/", bare_chain),
            sync_contender("django-ratelimit", "/peer/", bare_chain, use_cache("locmem")),
        ]
        redis_contenders = [
            sync_contender("bare view", "/bare/", bare_chain),
            sync_contender("bisman middleware", "/bare/", handler([mw], on_redis)),
            sync_contender("django-ratelimit", "/peer/", bare_chain, use_cache("redis")),
        ]
        async_contenders = [
            async_contender("bare async view", "/async/", handler([], is_async=True)),
            async_contender("bisman middleware", "/async/", handler([mw], memory, is_async=True)),
        ]
        progress(f"memory: {rounds} rounds of {calls} requests")
        memory_times = measure(contenders, rounds, calls)
        progress(f"redis: {rounds} rounds of {calls // 4} requests")
        redis_times = measure(redis_contenders, rounds, calls // 4)
        progress(f"async: {rounds} rounds of {calls} requests")
        async_times = asyncio.run(measure_async(async_contenders, rounds, calls))
        info = server.url

    headers = ["contender", "backend", "µs per request", "µs over the bare view", "spread"]
    print("## Django: per-request overhead on a minimal view, driven in-process\n")
    print(
        f"{machine_summary()}; Django {django.get_version()}; {source_revision()}; "
        f"server {info}; {placement}\n"
    )
    print("### Sync view (WSGI handler), memory and locmem\n")
    backends = {
        "bare view": "-",
        "bisman middleware": "memory://",
        "bisman @ratelimit": "memory://",
        "django-ratelimit": "LocMemCache",
    }
    print(markdown_table(headers, rows(memory_times, "bare view", backends)))
    ours = over(memory_times, "bisman middleware", "bare view") * 1e6
    decorator = over(memory_times, "bisman @ratelimit", "bare view") * 1e6
    print(
        f"\nTarget: at most {TARGET_US:g} µs over the bare view on memory. "
        f"Middleware: {ours:.2f} µs, {verdict(ours, TARGET_US)}; @ratelimit: {decorator:.2f} µs, "
        f"{verdict(decorator, TARGET_US)}.\n"
    )
    print("### Sync view (WSGI handler), Redis\n")
    redis_backends = {"bare view": "-", "bisman middleware": "Redis", "django-ratelimit": "RedisCache"}
    print(markdown_table(headers, rows(redis_times, "bare view", redis_backends)))
    print("\n### Async view (ASGI handler), memory\n")
    async_backends = {"bare async view": "-", "bisman middleware": "memory://"}
    print(markdown_table(headers, rows(async_times, "bare async view", async_backends)))
    if args.profile:
        print("\n### Profile: bisman middleware on memory\n\n```")
        print(profile(contenders[1], calls * 5))
        print("```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
