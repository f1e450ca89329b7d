"""Per-request cost of each way of declaring the same limit, against the limits file.

    python benchmarks/bench_paths.py [--quick] [--server any|redis|valkey] [--pin split|same|none]
                                     [--only starlette|django] [--profile NAME] [--calls]

One limit, 1,000,000 per minute on the client address (so every request
passes; the warm-up checks that each contender answers 200), declared:

- in the limits file (``RateLimitMiddleware(config=...)``), the reference;
- with ``@limit`` on the endpoint (the middleware on the app, no file);
- as a FastAPI dependency, ``Depends(RateLimit(...))`` (the middleware on the app);
- with ``bisman_ratelimit_starlette.slowapi``'s ``@limiter.limit`` and middleware;
- with ``bisman_ratelimit_starlette.fastapi_limiter``'s ``Depends(RateLimiter(...))``;
- in the limits file with ``headers="none"``;
- in the limits file, on a FastAPI route that also has a dependency doing
  nothing: what FastAPI spends on solving any dependency, which the
  dependency paths pay before they do anything of their own;

and, for comparison, the real slowapi (``@limiter.limit`` with its ASGI
middleware) and the real fastapi-limiter 0.1.x (Redis only: it needs one).
Starlette apps are compared with the Starlette limits-file app, FastAPI apps
with the FastAPI limits-file app. Apps are called in-process with prebuilt
scopes (as in bench_asgi.py), on memory and on a private Redis server.

Django (as in bench_django.py: ``BaseHandler.get_response`` on a fresh
``WSGIRequest``): the middleware with the limit in the settings, the same
with ``HEADERS = "none"``, ``@ratelimit`` alone, and ``@ratelimit`` with the
middleware.

Rounds interleave the contenders; each figure is a median over rounds, and
each ratio the median of per-round ratios. "ratio" is a path's total time per
request over the limits-file path's (goal: at most 1.05 for the decorator
and the dependency); "overhead ratio" compares what each adds to the bare app.

``--calls`` counts instead the Python function calls of one request on each
path (memory, caches warm), traced with ``sys.setprofile``: a figure that the
machine's load does not move, for comparing two checkouts.

Needs the ``bench`` extra.
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
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis.asyncio
from _common import (
    AsyncContender,
    InProcess,
    Measure,
    Plan,
    machine_summary,
    markdown_table,
    measure_async,
    pin,
    private_server,
    progress,
    server_version,
    source_revision,
    us,
    verdict,
)
from fastapi import Depends, FastAPI
from slowapi import Limiter as SlowLimiter
from slowapi.middleware import SlowAPIASGIMiddleware
from slowapi.util import get_remote_address
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bisman_ratelimit import AsyncLimiter
from bisman_ratelimit_starlette import RateLimit, RateLimitMiddleware, limit
from bisman_ratelimit_starlette import fastapi_limiter as compat_fl
from bisman_ratelimit_starlette.slowapi import Limiter as CompatLimiter
from bisman_ratelimit_starlette.slowapi import SlowAPIASGIMiddleware as CompatMiddleware
from bisman_ratelimit_starlette.slowapi import get_remote_address as compat_remote_address

AMOUNT = 1_000_000
LIMIT = f"{AMOUNT}/minute"
CLIENTS = [f"198.51.{n // 250}.{n % 250 + 1}" for n in range(256)]
GOAL = 1.05
LIMITS_FILE = f"""
[[routes]]
path = "/items/{{item_id}}"
limits = "{LIMIT}"
key = "ip"
algorithm = "sliding_window"
"""

# -- the Starlette and FastAPI apps


async def item(request: Request) -> Response:
    return PlainTextResponse("ok")


def starlette_app(middleware: Sequence[Middleware] = (), endpoint: Any = item) -> Starlette:
    return Starlette(routes=[Route("/items/{item_id}", endpoint)], middleware=list(middleware))


def fastapi_app(middleware: Sequence[Middleware] = (), dependencies: Sequence[Any] = ()) -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, middleware=list(middleware))

    async def fitem(item_id: str) -> Response:
        return PlainTextResponse("ok")

    app.add_api_route("/items/{item_id}", fitem, methods=["GET"], dependencies=list(dependencies))
    return app


async def noop() -> None:
    """What FastAPI spends on any dependency, whatever it does."""


def with_file(limiter: AsyncLimiter, limits_file: Path, **options: Any) -> Middleware:
    return Middleware(RateLimitMiddleware, limiter=limiter, config=limits_file, **options)


def decorated(limiter: AsyncLimiter) -> Starlette:
    @limit(LIMIT)
    async def limited_item(request: Request) -> Response:
        return PlainTextResponse("ok")

    return starlette_app([Middleware(RateLimitMiddleware, limiter=limiter)], limited_item)


def slowapi_app(storage_uri: str) -> Starlette:
    limiter = SlowLimiter(key_func=get_remote_address, storage_uri=storage_uri)

    @limiter.limit(LIMIT)
    async def slow_item(request: Request) -> Response:
        return PlainTextResponse("ok")

    app = starlette_app([Middleware(SlowAPIASGIMiddleware)], slow_item)
    app.state.limiter = limiter
    return app


def slowapi_compat_app(engine: AsyncLimiter) -> Starlette:
    limiter = CompatLimiter(key_func=compat_remote_address, limiter=engine)

    @limiter.limit(LIMIT)
    async def compat_item(request: Request) -> Response:
        return PlainTextResponse("ok")

    app = starlette_app([Middleware(CompatMiddleware)], compat_item)
    app.state.limiter = limiter
    return app


# -- driving an ASGI app in-process

_REQUESTS = InProcess(CLIENTS)


def http(name: str, app: Any) -> AsyncContender:
    return AsyncContender(name, _REQUESTS.request_to(app), _REQUESTS.answered_200)


# -- tables


def paired(results: dict[str, Measure], name: str, base: str) -> float:
    """Median over rounds of ``name`` minus ``base``, round by round."""
    return statistics.median(a - b for a, b in zip(results[name].rounds, results[base].rounds, strict=True))


def ratio(results: dict[str, Measure], name: str, base: str) -> float:
    """Median over rounds of ``name`` over ``base``, round by round."""
    return statistics.median(a / b for a, b in zip(results[name].rounds, results[base].rounds, strict=True))


@dataclass(frozen=True)
class Row:
    name: str
    bare: str
    reference: str | None
    goal: bool = False


def table(results: dict[str, Measure], rows: Sequence[Row]) -> str:
    cells = []
    for row in rows:
        over = paired(results, row.name, row.bare) if row.name != row.bare else None
        if row.reference is None or row.name == row.reference:
            total = extra = mark = ""
        else:
            total_ratio = ratio(results, row.name, row.reference)
            total = f"{total_ratio:.3f}"
            extra = f"{over / paired(results, row.reference, row.bare):.2f}" if over is not None else ""
            mark = f"≤ {GOAL}: {verdict(total_ratio, GOAL)}" if row.goal else ""
        cells.append(
            [
                row.name,
                us(results[row.name].seconds),
                us(over) if over is not None else "",
                f"{results[row.name].spread:.0%}",
                total,
                extra,
                mark,
            ]
        )
    headers = ["path", "µs per request", "µs over bare", "spread", "ratio", "overhead ratio", "goal"]
    return markdown_table(headers, cells)


@contextmanager
def limits_file() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ratelimits.toml"
        path.write_text(LIMITS_FILE)
        yield path


S_BARE, S_FILE = "Starlette: bare app", "Starlette: limits file"
F_BARE, F_FILE = "FastAPI: bare app", "FastAPI: limits file"


def starlette_rows(names: Sequence[str]) -> list[Row]:
    """Each Starlette path against the Starlette limits file, each FastAPI path against FastAPI's."""
    goals = {"Starlette: @limit", "Starlette: limits file, headers='none'", "FastAPI: Depends(RateLimit)"}
    rows = []
    for name in names:
        bare, reference = (S_BARE, S_FILE) if name.startswith("Starlette") else (F_BARE, F_FILE)
        rows.append(Row(name, bare, None if name == bare else reference, goal=name in goals))
    return rows


async def starlette_section(
    url: str | None, plan: Plan, path: Path, profile: str | None, *, calls: bool = False
) -> str:
    made: list[AsyncLimiter] = []

    def engine() -> AsyncLimiter:
        found = AsyncLimiter(redis.asyncio.Redis.from_url(url)) if url else AsyncLimiter()
        made.append(found)
        return found

    await compat_fl.FastAPILimiter.init(engine())
    contenders = [
        http(S_BARE, starlette_app()),
        http(S_FILE, starlette_app([with_file(engine(), path)])),
        http("Starlette: @limit", decorated(engine())),
        http(
            "Starlette: limits file, headers='none'",
            starlette_app([with_file(engine(), path, headers="none")]),
        ),
        http("Starlette: slowapi compat @limiter.limit", slowapi_compat_app(engine())),
        http(F_BARE, fastapi_app()),
        http(F_FILE, fastapi_app([with_file(engine(), path)])),
        http(
            "FastAPI: limits file, a no-op dependency",
            fastapi_app([with_file(engine(), path)], [Depends(noop)]),
        ),
        http(
            "FastAPI: Depends(RateLimit)",
            fastapi_app([Middleware(RateLimitMiddleware, limiter=engine())], [Depends(RateLimit(LIMIT))]),
        ),
        http(
            "FastAPI: fastapi_limiter compat Depends(RateLimiter)",
            fastapi_app([], [Depends(compat_fl.RateLimiter(times=AMOUNT, minutes=1))]),
        ),
        http("Starlette: slowapi @limiter.limit", slowapi_app(url or "memory://")),
    ]
    peer_client = None
    if url:
        from fastapi_limiter import FastAPILimiter
        from fastapi_limiter.depends import RateLimiter

        peer_client = redis.asyncio.Redis.from_url(url)
        await FastAPILimiter.init(peer_client)
        contenders.append(
            http(
                "FastAPI: fastapi-limiter Depends(RateLimiter)",
                fastapi_app([], [Depends(RateLimiter(times=AMOUNT, minutes=1))]),
            )
        )
    try:
        if profile:
            return await profile_section(next(c for c in contenders if c.name == profile))
        if calls:
            counted = {c.name: await acalls_per_request(c.check) for c in contenders}
            return calls_table(counted, starlette_rows(list(counted)))
        results = await measure_async(contenders, CLIENTS, plan, concurrency=1)
    finally:
        await compat_fl.FastAPILimiter.close()
        for limiter in made[1:]:
            await limiter.aclose()
        if peer_client is not None:
            await peer_client.aclose()
    noop_file = "FastAPI: limits file, a no-op dependency"
    notes = [
        f"- {name} over {noop_file}: ratio {ratio(results, name, noop_file):.3f}, "
        f"{_signed(paired(results, name, noop_file))}"
        for name in results
        if name.startswith("FastAPI") and "Depends" in name
    ]
    notes.append(
        f"- what FastAPI spends on a dependency that does nothing: "
        f"{_signed(paired(results, noop_file, F_FILE))} over {F_FILE}"
    )
    return table(results, starlette_rows([c.name for c in contenders])) + "\n\n" + "\n".join(notes)


def _signed(seconds: float) -> str:
    return f"{'-' if seconds < 0 else '+'} {abs(seconds) * 1e6:.1f} µs"


def _counter() -> tuple[Callable[[Any, str, Any], None], list[int]]:
    count = [0]

    def trace(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            count[0] += 1

    return trace, count


async def acalls_per_request(check: Callable[[str], Awaitable[Any]]) -> int:
    """Python function calls in one request, once the caches are warm: the same on every run."""
    for _ in range(3):
        await check(CLIENTS[0])
    trace, count = _counter()
    sys.setprofile(trace)
    try:
        await check(CLIENTS[0])
    finally:
        sys.setprofile(None)
    return count[0]


def calls_per_request(check: Callable[[str], Any]) -> int:
    for _ in range(3):
        check(ADDRESSES[0])
    trace, count = _counter()
    sys.setprofile(trace)
    try:
        check(ADDRESSES[0])
    finally:
        sys.setprofile(None)
    return count[0]


def calls_table(counted: dict[str, int], rows: Sequence[Row]) -> str:
    cells = []
    for row in rows:
        over = "" if row.name == row.bare else f"{counted[row.name] - counted[row.bare]:+d}"
        reference = row.reference
        than = (
            ""
            if reference is None or reference == row.name
            else f"{counted[row.name] - counted[reference]:+d}"
        )
        cells.append([row.name, str(counted[row.name]), over, than])
    return markdown_table(["path", "Python calls per request", "over bare", "over the limits file"], cells)


async def profile_section(contender: AsyncContender) -> str:
    keys = [CLIENTS[i % len(CLIENTS)] for i in range(20_000)]
    for key in keys[:1000]:
        await contender.check(key)
    profiler = cProfile.Profile()
    profiler.enable()
    for key in keys:
        await contender.check(key)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(30)
    return "```\n" + out.getvalue() + "```"


# -- Django (as bench_django.py)

D_BARE, D_SETTINGS = "Django: bare view", "Django: middleware, limit in settings"
URLCONFS: dict[str, ModuleType] = {}
urlpatterns: list[Any] = []
ADDRESSES = [f"10.{i // 250}.{i % 250}.1" for i in range(1000)]


def configure_django(redis_url: str) -> None:
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        SECRET_KEY="benchmark",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[],
        MIDDLEWARE=[],
        DATABASES={},
        USE_TZ=True,
        BISMAN_RATELIMIT={"DEFAULT_LIMITS": LIMIT, "STORAGE_URL": "memory://"},
    )
    django.setup()
    from django.http import HttpRequest, HttpResponse
    from django.urls import path

    from bisman_ratelimit_django import ratelimit

    def bare(request: HttpRequest) -> HttpResponse:
        return HttpResponse(b"ok")

    views = {"bare": bare, "decorated": ratelimit(LIMIT, key="ip")(bare)}
    for name, view in views.items():
        conf = URLCONFS[name] = ModuleType(f"{__name__}.urls_{name}")
        conf.urlpatterns = [path(f"{name}/", view)]


def django_handler(bisman: dict[str, Any] | None) -> Any:
    from django.core.handlers.base import BaseHandler
    from django.test.utils import override_settings

    middleware = ["bisman_ratelimit_django.middleware.RateLimitMiddleware"] if bisman is not None else []
    overrides: dict[str, Any] = {"MIDDLEWARE": middleware}
    if bisman is not None:
        overrides["BISMAN_RATELIMIT"] = bisman
    with override_settings(**overrides):
        found = BaseHandler()
        found.load_middleware(is_async=False)
    return found


def django_contender(name: str, view: str, chain: Any) -> tuple[str, Callable[[str], Any]]:
    from django.core.handlers.wsgi import WSGIRequest
    from django.test import RequestFactory

    base = RequestFactory()._base_environ(PATH_INFO=f"/{view}/", REQUEST_METHOD="GET")
    get_response = chain.get_response
    urlconf = URLCONFS[view]

    def check(address: str) -> Any:
        environ = base.copy()
        environ["REMOTE_ADDR"] = address
        request = WSGIRequest(environ)
        request.urlconf = urlconf
        return get_response(request)

    return name, check


def measure_django(contenders: Sequence[tuple[str, Callable[[str], Any]]], plan: Plan) -> dict[str, Measure]:
    for name, check in contenders:
        for address in ADDRESSES:
            if check(address).status_code != 200:
                raise RuntimeError(f"{name} refused a warm-up request")
    keys = [ADDRESSES[i % len(ADDRESSES)] for i in range(plan.calls)]
    times: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in contenders}
    for round_no in range(plan.rounds):
        shift = round_no % len(contenders)
        for name, check in [*contenders[shift:], *contenders[:shift]]:
            gc.collect()
            start = perf_counter()
            for key in keys:
                check(key)
            wall = (perf_counter() - start) / plan.calls
            times[name].append((wall, wall))
    return {name: Measure.of(samples) for name, samples in times.items()}


def django_section(url: str | None, plan: Plan) -> str:
    from django.test.utils import override_settings

    # Memory named, not left to the default: the start-up notice of the default would cut the table.
    storage = {"STORAGE_URL": url or "memory://"}
    settings_limit = {"DEFAULT_LIMITS": LIMIT, **storage}
    # The settings the decorator alone reads at request time.
    with override_settings(BISMAN_RATELIMIT=settings_limit):
        return _django_section(settings_limit, storage, plan)


def _django_section(settings_limit: dict[str, Any], storage: dict[str, Any], plan: Plan) -> str:
    bare = django_handler(None)
    contenders = [
        django_contender(D_BARE, "bare", bare),
        django_contender(D_SETTINGS, "bare", django_handler(settings_limit)),
        django_contender(
            "Django: middleware, limit in settings, HEADERS='none'",
            "bare",
            django_handler({**settings_limit, "HEADERS": "none"}),
        ),
        django_contender("Django: @ratelimit alone", "decorated", bare),
        django_contender(
            "Django: @ratelimit with the middleware",
            "decorated",
            django_handler({**storage}),
        ),
    ]
    rows = [Row(D_BARE, D_BARE, None)] + [
        Row(name, D_BARE, D_SETTINGS, goal=name != D_SETTINGS) for name, _ in contenders[1:]
    ]
    if plan.calls == 0:
        return calls_table({name: calls_per_request(check) for name, check in contenders}, rows)
    return table(measure_django(contenders, plan), rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and requests")
    parser.add_argument("--server", choices=("any", "redis", "valkey"), default="any", help="server binary")
    parser.add_argument("--pin", choices=("split", "same", "none"), default="split", help="CPU placement")
    parser.add_argument("--only", choices=("starlette", "django"), help="one framework only")
    parser.add_argument("--profile", metavar="NAME", help="cProfile one Starlette contender on memory")
    parser.add_argument(
        "--calls", action="store_true", help="only count Python calls per request on memory (a few seconds)"
    )
    args = parser.parse_args(argv)
    memory_plan = Plan(rounds=5, calls=2_000) if args.quick else Plan(rounds=11, calls=10_000)
    redis_plan = Plan(rounds=5, calls=300) if args.quick else Plan(rounds=15, calls=1_000)
    sections: list[tuple[str, str]] = []
    with private_server(args.server) as server, limits_file() as path:
        placement = pin(args.pin, server)
        info = redis.Redis.from_url(server.url).info("server")
        print(f"# Ways of declaring a limit\n\n{machine_summary()}; {source_revision()}")
        print(f"Server: {server_version(info)} on a private port; {placement}.\n")
        if args.profile:
            print(asyncio.run(starlette_section(None, memory_plan, path, args.profile)))
            return 0
        if args.calls:
            print("## Python calls per request, memory\n")
            print(asyncio.run(starlette_section(None, memory_plan, path, None, calls=True)) + "\n")
            configure_django(server.url)
            print(django_section(None, Plan(rounds=0, calls=0)))
            return 0
        if args.only != "django":
            progress("Starlette and FastAPI, memory ...")
            sections.append(
                (
                    "Starlette and FastAPI, memory",
                    asyncio.run(starlette_section(None, memory_plan, path, None)),
                )
            )
            progress("Starlette and FastAPI, Redis ...")
            sections.append(
                (
                    "Starlette and FastAPI, Redis",
                    asyncio.run(starlette_section(server.url, redis_plan, path, None)),
                )
            )
        if args.only != "starlette":
            configure_django(server.url)
            progress("Django, memory ...")
            sections.append(("Django, memory", django_section(None, memory_plan)))
            progress("Django, Redis ...")
            sections.append(("Django, Redis", django_section(server.url, redis_plan)))
    for title, body in sections:
        print(f"## {title} (median of rounds)\n\n{body}\n")
    print(f"Load average at the end: {machine_summary().split('load average ')[1].split(' (')[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
