"""The Django example project, served by uvicorn on a free port, against a real Redis/Valkey."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bisman_ratelimit.testing import free_port

pytestmark = pytest.mark.redis

PROJECT = Path(__file__).resolve().parents[2] / "example_apps" / "django_project"


def _environment(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    env.update(extra)
    return env


def _wait_for(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read().decode() if process.stdout else ""
            raise RuntimeError(f"the example server exited at start:\n{output}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the example server did not listen on port {port} within {timeout} s")


@pytest.fixture
def server(redis_url: str, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", "example_site.asgi:application",
        "--app-dir", str(PROJECT), "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        env=_environment(
            BISMAN_RATELIMIT_STORAGE_URL=redis_url, DJANGO_DATABASE=str(tmp_path / "example.sqlite3")
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_example_project_under_uvicorn_on_redis(server: str) -> None:
    alice_login = {"username": "alice", "password": "correct horse"}
    with httpx.Client(base_url=server) as client:
        assert client.post("/auth/login", data=alice_login).status_code == 200
        failed = [client.post("/auth/login", data={"password": "nope"}).status_code for _ in range(6)]
        assert failed == [401] * 5 + [429]
        refused = client.post("/auth/login", data=alice_login)
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        # A sliding window of 60 s frees a slot within two windows, depending on where in it we are.
        assert 1 <= int(refused.headers["retry-after"]) <= 120
        assert (
            refused.headers["ratelimit-policy"]
            == '"/auth/login-60s";q=5;w=60, "/auth/login-3600s";q=20;w=3600'
        )
        assert refused.json()["violated-policies"] == ["/auth/login-60s"]

        # Per-user call limit: the admin is exempt, a user has a token bucket of 30.
        alice = {"Authorization": "Bearer alice"}
        calls = [client.post("/api/calls", headers=alice).status_code for _ in range(31)]
        assert calls == [201] * 30 + [429]
        admin = {"Authorization": "Bearer admin"}
        assert {client.post("/api/calls", headers=admin).status_code for _ in range(31)} == {201}

        reads = client.get("/chat/threads/7/messages", headers={"X-API-Key": "integration-1"})
        assert reads.status_code == 200
        assert reads.headers["ratelimit-policy"] == '"/chat/threads/{thread_id}/messages";q=120;w=60'
        health = client.get("/health")
        assert health.status_code == 200
        assert "ratelimit" not in health.headers


def test_example_project_passes_its_checks() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=PROJECT,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout
