"""The example apps under a real uvicorn server, on a real Redis, spoken to over a socket."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import served, wait_for_port

from bisman_ratelimit.testing import free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "example_apps"


@pytest.fixture(params=["starlette_app", "fastapi_app"])
def server(request: pytest.FixtureRequest, redis_url: str) -> Iterator[str]:
    yield from serve(request.param, redis_url)


@pytest.fixture(params=["starlette_app", "fastapi_app"])
def patient_server(request: pytest.FixtureRequest, redis_url: str) -> Iterator[str]:
    """The example app with a time budget that 50 connections opened at once on a busy machine fit in
    (else the default 50 ms runs out, and the outage policy lets requests through)."""
    yield from serve(request.param, redis_url + "?timeout=5s")


def serve(app: str, storage_url: str, *flags: str) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "BISMAN_RATELIMIT_STORAGE_URL": storage_url}
    command = [
        sys.executable, "-m", "uvicorn", "--app-dir", str(EXAMPLES), f"{app}:app",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", *flags,
    ]  # fmt: skip
    with served(command, port, env) as base:
        yield base


def test_example_app_over_a_socket_on_redis(server: str) -> None:
    with httpx.Client(base_url=server, timeout=10) as client:
        home = client.get("/")
        assert home.status_code == 200 and home.json()["storage"] == "redis"
        # Defaults: 100/minute per IP, advertised on every response.
        assert home.headers["ratelimit-policy"] == '"default";q=100;w=60'

        # Only failed logins count: 5 a minute per IP, then 429 whatever the password.
        for _ in range(3):
            assert client.post("/auth/login", json={"password": "correct horse"}).status_code == 200
        failures = [client.post("/auth/login", json={"password": "nope"}) for _ in range(5)]
        assert [r.status_code for r in failures] == [401] * 5
        assert failures[0].headers["ratelimit-policy"] == (
            '"/auth/login-60s";q=5;w=60, "/auth/login-3600s";q=20;w=3600'
        )
        assert failures[0].headers["ratelimit"].startswith('"/auth/login-60s";r=4;t=')
        refused = client.post("/auth/login", json={"password": "correct horse"})
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["violated-policies"] == ["/auth/login-60s"]
        assert 1 <= int(refused.headers["retry-after"]) <= 120

        # Declared in code, per user.
        bob = {"authorization": "Bearer bob"}
        exports = [client.post("/reports/export", headers=bob).status_code for _ in range(4)]
        assert exports == [202, 202, 202, 429]
        assert client.post("/reports/export", headers={"authorization": "Bearer carol"}).status_code == 202

        # The load balancer's probe is exempt.
        for _ in range(3):
            health = client.get("/health")
            assert health.status_code == 200 and "ratelimit" not in health.headers


@pytest.mark.parametrize("app", ["starlette_app", "fastapi_app"])
def test_the_admin_panels_forms_work_across_worker_processes(app: str, redis_url: str) -> None:
    """A form loaded from one worker is posted to whichever worker takes the next connection."""
    started = serve(app, redis_url, "--workers", "2")
    base = next(started)
    try:
        staff = {"authorization": "Bearer alice", "connection": "close"}
        statuses = []
        for n in range(12):
            page = httpx.get(f"{base}/admin/ratelimit/flags", headers=staff, timeout=10)
            token = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page.text)
            assert page.status_code == 200 and token is not None
            posted = httpx.post(
                f"{base}/admin/ratelimit/flags/set",
                data={"csrf_token": token.group(1), "name": f"flag{n}", "type": "bool", "value": "true"},
                headers=staff,
                cookies=page.cookies,
                timeout=10,
            )
            statuses.append(posted.status_code)
        assert statuses == [303] * 12
    finally:
        started.close()


async def test_concurrent_failed_logins_over_sockets_get_exactly_the_limit(patient_server: str) -> None:
    # 50 connections at once, each with a wrong password: 5/minute lets exactly 5 reach the view.
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(base_url=patient_server, timeout=10, limits=limits) as client:
        tries = [client.post("/auth/login", json={"password": "nope"}) for _ in range(50)]
        statuses = [response.status_code for response in await asyncio.gather(*tries)]
        assert Counter(statuses) == {401: 5, 429: 45}
        assert (await client.post("/auth/login", json={"password": "correct horse"})).status_code == 429


def start_uvicorn(app: str, *flags: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BISMAN_", "FORWARDED_ALLOW_IPS"))}
    command = [
        sys.executable, "-m", "uvicorn", "--app-dir", str(EXAMPLES), app,
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", *flags,
    ]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for_port(port, process)
    return process, f"http://127.0.0.1:{port}"


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(10)
    if process.stderr:
        process.stderr.close()


def admitted_with_forged_addresses(url: str, count: int) -> int:
    with httpx.Client(base_url=url, timeout=10) as client:
        return sum(
            client.get("/", headers={"X-Forwarded-For": f"198.51.100.{n % 250}"}).status_code == 200
            for n in range(count)
        )


@pytest.mark.parametrize("app", ["starlette_app:app", "fastapi_app:app"])
def test_the_documented_command_keeps_forged_forwarding_headers_out(app: str) -> None:
    # uvicorn's own --proxy-headers (on by default, trusting 127.0.0.1) would let
    # any local client rewrite its address before the middleware sees it.
    readme = (EXAMPLES.parent / "README.md").read_text()
    assert f"uvicorn --app-dir example_apps {app} --host 127.0.0.1 --port 8000 --no-proxy-headers" in readme
    process, url = start_uvicorn(app, "--no-proxy-headers")
    try:
        assert admitted_with_forged_addresses(url, 110) == 100  # the example's 100/minute per address
    finally:
        stop(process)


def test_uvicorn_defaults_let_forwarding_headers_rewrite_the_client() -> None:
    """What the docs warn about: with uvicorn's defaults a local client picks its own address."""
    process, url = start_uvicorn("starlette_app:app")
    try:
        assert admitted_with_forged_addresses(url, 110) == 110
    finally:
        stop(process)
