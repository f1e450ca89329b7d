"""The Django integration on a real Redis/Valkey server: boundaries and headers, sync and async views."""

from __future__ import annotations

import json

import pytest
from django.test import AsyncClient, Client

from bisman_ratelimit import AsyncLimiter, Limiter
from bisman_ratelimit.testing import free_port as find_free_port
from bisman_ratelimit_django._runtime import get_runtime

pytestmark = pytest.mark.redis

# sliding_log: within the few milliseconds of a test, every figure is exact whatever the wall clock.
LIMITS = {"DEFAULT_LIMITS": "3/minute", "DEFAULT_ALGORITHM": "sliding_log"}


@pytest.fixture
def free_port() -> int:
    return find_free_port()


def test_boundary_and_headers_on_redis(configure, redis_url: str) -> None:
    configure(STORAGE_URL=redis_url, **LIMITS)
    client = Client()
    try:
        responses = [client.get("/plain/") for _ in range(4)]
        assert [r.status_code for r in responses] == [200, 200, 200, 429]
        assert [r["RateLimit"] for r in responses] == [
            '"default";r=2;t=60',
            '"default";r=1;t=60',
            '"default";r=0;t=60',
            '"default";r=0;t=60',
        ]
        assert responses[0]["RateLimit-Policy"] == '"default";q=3;w=60'
        refused = responses[3]
        assert refused["Retry-After"] == "60"
        assert json.loads(refused.content)["violated-policies"] == ["default"]
        # Another client has its own quota on the same server.
        assert client.get("/plain/", REMOTE_ADDR="192.0.2.5").status_code == 200
    finally:
        get_runtime().close()


async def test_async_views_use_the_async_client(configure, redis_url: str) -> None:
    configure(STORAGE_URL=redis_url, **LIMITS)
    client = AsyncClient()
    runtime = get_runtime()
    try:
        responses = [await client.get("/async/") for _ in range(4)]
        assert [r.status_code for r in responses] == [200, 200, 200, 429]
        assert responses[3]["Retry-After"] == "60"
        assert responses[3]["RateLimit"] == '"default";r=0;t=60'
    finally:
        await runtime.aclose()
        runtime.close()


async def test_async_views_never_touch_the_sync_client(configure, redis_url: str, free_port: int) -> None:
    # The sync limiter points at a port where nothing listens: any use of it would fail the request.
    configure(
        LIMITER=Limiter.from_url(f"redis://127.0.0.1:{free_port}/0"),
        ASYNC_LIMITER=AsyncLimiter.from_url(redis_url),
        **LIMITS,
    )
    runtime = get_runtime()
    client = AsyncClient()
    try:
        codes = [
            (await client.get(path)).status_code for path in ("/async/", "/plain/", "/async/", "/plain/")
        ]
        assert codes == [200, 200, 200, 429]
    finally:
        assert runtime.async_limiter is not None
        await runtime.async_limiter.aclose()


def test_sync_and_async_views_share_counters_on_redis(configure, redis_url: str) -> None:
    configure(STORAGE_URL=redis_url, **LIMITS)
    client = Client()
    try:
        # Under WSGI an async view runs in a throwaway loop: its check goes to the sync client.
        assert [client.get("/async/").status_code, client.get("/plain/").status_code] == [200, 200]
        assert [client.get("/async/").status_code, client.get("/plain/").status_code] == [200, 429]
    finally:
        get_runtime().close()


def test_async_key_function_under_wsgi_on_redis(configure, redis_url: str) -> None:
    configure(STORAGE_URL=redis_url)
    client = Client()
    try:
        assert [client.get("/tenant-async/?tenant=acme").status_code for _ in range(3)] == [200, 200, 429]
        assert client.get("/tenant-async/?tenant=globex").status_code == 200
    finally:
        get_runtime().close()
