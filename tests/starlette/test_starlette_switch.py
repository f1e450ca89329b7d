"""The on/off switch of the Starlette/FastAPI plugin: argument, environment variable, limits file.

Switched off, every request passes: no check, no rate-limit header, and not
one command to Redis (the server's own count of commands says so).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bisman_ratelimit import AsyncLimiter, ConfigFileError, InvalidArgument
from bisman_ratelimit.web import parse_config
from bisman_ratelimit_starlette import RateLimit, RateLimitMiddleware, limit
from bisman_ratelimit_starlette.fastapi_limiter import FastAPILimiter, RateLimiter
from bisman_ratelimit_starlette.slowapi import (
    Limiter,
    RateLimitExceeded,
    SlowAPIMiddleware,
    _rate_limit_exceeded_handler,
    get_remote_address,
)

ENV = "BISMAN_RATELIMIT_ENABLED"


@pytest.fixture
def commands(redis_client: redis.Redis) -> Iterator[Callable[[], int]]:
    """Commands the server processed since the fixture started, the counting ones left out."""
    asked = 0

    def count() -> int:
        nonlocal asked
        asked += 1
        processed: int = redis_client.info("stats")["total_commands_processed"]
        return processed - start - asked

    start = redis_client.info("stats")["total_commands_processed"]
    yield count


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app, client=("198.51.100.7", 5000)), base_url="http://testserver"
    )


async def page(request: Request) -> Response:
    return PlainTextResponse("ok")


@limit("1/minute")
async def declared(request: Request) -> Response:
    return PlainTextResponse("declared")


def starlette_app(limiter: AsyncLimiter, **options: Any) -> Starlette:
    return Starlette(
        routes=[Route("/", page), Route("/declared", declared)],
        middleware=[Middleware(RateLimitMiddleware, limiter=limiter, default_limits="1/minute", **options)],
    )


async def answers(app: Any, paths: list[str]) -> list[tuple[int, str, list[str]]]:
    async with client(app) as c:
        found = []
        for path in paths:
            r = await c.get(path)
            found.append(
                (r.status_code, r.text, [k for k in r.headers if "ratelimit" in k or k == "retry-after"])
            )
        return found


async def test_middleware_switched_off_sends_nothing_to_redis(
    redis_url: str, commands: Callable[[], int]
) -> None:
    limiter = AsyncLimiter.from_url(redis_url)
    app = starlette_app(limiter, enabled=False)
    got = await answers(app, ["/", "/", "/", "/declared", "/declared"])
    await limiter.aclose()
    assert got == [(200, "ok", [])] * 3 + [(200, "declared", [])] * 2
    assert commands() == 0


async def test_middleware_switched_on_counts(redis_url: str, commands: Callable[[], int]) -> None:
    limiter = AsyncLimiter.from_url(redis_url + "?timeout=5s")
    app = starlette_app(limiter, enabled=True)
    got = await answers(app, ["/", "/"])
    await limiter.aclose()
    assert [status for status, _, _ in got] == [200, 429]
    assert got[0][2] == ["ratelimit-policy", "ratelimit"]
    assert commands() > 0


@pytest.mark.parametrize(
    ("argument", "variable", "file", "on"),
    [
        (None, None, None, True),
        (None, "0", None, False),
        (None, "off", True, False),
        (True, "0", False, True),
        (False, "1", True, False),
        (None, None, False, False),
        (None, "yes", False, True),
        (None, "", False, False),
    ],
)
async def test_the_argument_wins_then_the_variable_then_the_limits_file(
    monkeypatch: pytest.MonkeyPatch, argument: bool | None, variable: str | None, file: bool | None, on: bool
) -> None:
    if variable is None:
        monkeypatch.delenv(ENV, raising=False)
    else:
        monkeypatch.setenv(ENV, variable)
    data: dict[str, Any] = {"defaults": {"limits": "1/minute"}}
    if file is not None:
        data["enabled"] = file
    app = Starlette(
        routes=[Route("/", page)],
        middleware=[Middleware(RateLimitMiddleware, config=parse_config(data), enabled=argument)],
    )
    got = await answers(app, ["/", "/"])
    assert [status for status, _, _ in got] == ([200, 429] if on else [200, 200])


def test_the_limits_file_setting_is_read_with_the_switch_words(tmp_path: Path) -> None:
    assert parse_config({"enabled": "off"}).enabled is False
    assert parse_config({"enabled": "on"}).enabled is True
    assert parse_config({}).enabled is True
    path = tmp_path / "ratelimits.toml"
    path.write_text('enabled = false\n[defaults]\nlimits = "5/minute"\n')
    assert RateLimitMiddleware(page, config=path).enabled is False
    with pytest.raises(ConfigFileError) as info:
        parse_config({"enabled": 3}, source="ratelimits.toml")
    assert str(info.value) == (
        "ratelimits.toml: field 'enabled': expected true or false "
        "(or one of 'on', 'off', 'yes', 'no', '1', '0'), got integer 3"
    )


def test_a_variable_the_switch_cannot_read_stops_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "maybe")
    with pytest.raises(InvalidArgument, match=f"the environment variable {ENV} must be one of"):
        RateLimitMiddleware(page, default_limits="1/minute")
    with pytest.raises(InvalidArgument, match=f"the environment variable {ENV} must be one of"):
        Limiter(key_func=get_remote_address)


async def test_declarations_used_alone_switch_off_too(monkeypatch: pytest.MonkeyPatch) -> None:
    limiter = AsyncLimiter()

    @limit("1/minute", limiter=limiter, enabled=False)
    async def by_argument(request: Request) -> Response:
        return PlainTextResponse("argument")

    monkeypatch.setenv(ENV, "false")

    @limit("1/minute", limiter=limiter)
    async def by_variable(request: Request) -> Response:
        return PlainTextResponse("variable")

    app = FastAPI()
    app.add_api_route("/argument", by_argument)
    app.add_api_route("/variable", by_variable)

    @app.get("/dependency", dependencies=[Depends(RateLimit("1/minute", limiter=limiter))])
    async def dependency() -> dict[str, str]:
        return {"dependency": "ok"}

    got = await answers(app, ["/argument"] * 2 + ["/variable"] * 2 + ["/dependency"] * 2)
    assert [(status, headers) for status, _, headers in got] == [(200, [])] * 6


async def test_slowapi_limiter_switched_off_sends_nothing_to_redis(
    redis_url: str, commands: Callable[[], int]
) -> None:
    limiter = Limiter(
        key_func=get_remote_address,
        default_limits=["1/minute"],
        application_limits=["1/minute"],
        headers_enabled=True,
        storage_uri=redis_url,
        enabled=False,
    )
    app = FastAPI()
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)
    app.add_middleware(SlowAPIMiddleware)

    @app.get("/")
    async def index(request: Request) -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/decorated")
    @limiter.limit("1/minute")
    async def decorated(request: Request) -> dict[str, str]:
        return {"ok": "decorated"}

    got = await answers(app, ["/", "/", "/decorated", "/decorated"])
    await limiter.aclose()
    assert [(status, headers) for status, _, headers in got] == [(200, [])] * 4
    assert commands() == 0


async def test_fastapi_limiter_switched_off_sends_nothing_to_redis(
    redis_url: str, commands: Callable[[], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, "0")
    await FastAPILimiter.init(redis.asyncio.from_url(redis_url))
    app = FastAPI()

    @app.get("/", dependencies=[Depends(RateLimiter(times=1, seconds=5))])
    async def index() -> dict[str, str]:
        return {"msg": "Hello World"}

    got = await answers(app, ["/", "/", "/"])
    await FastAPILimiter.close()
    assert [(status, headers) for status, _, headers in got] == [(200, [])] * 3
    assert commands() == 0
