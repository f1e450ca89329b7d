"""Shadow mode and outages are visible in the example's log under uvicorn's defaults, never a line per
request."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from test_starlette_uvicorn import wait_for_port

from bisman_ratelimit.testing import RedisServer, find_server_binary, free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "example_apps"
ROUTE = "/chat/threads/{thread_id}/messages"  # 120/minute per API key in shadow mode
# The example gives the library's loggers a handler that names them.
PLUGIN = "WARNING [bisman_ratelimit.starlette] "


def start(storage: str | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """The example app under uvicorn with no --log-level and no log config: what `uvicorn app:app` gives."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BISMAN_RATELIMIT")}
    if storage is not None:
        env["BISMAN_RATELIMIT_STORAGE_URL"] = storage
    command = [
        sys.executable, "-m", "uvicorn", "--app-dir", str(EXAMPLES), "starlette_app:app",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return process, port


def stop(process: subprocess.Popen[bytes]) -> str:
    process.terminate()
    out, err = process.communicate(timeout=10)
    return (out + err).decode()


def test_shadow_refusals_appear_in_uvicorns_default_log() -> None:
    process, port = start()
    try:
        wait_for_port(port, process)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            statuses = [
                client.get("/chat/threads/7/messages", headers={"X-Api-Key": "k1"}).status_code
                for _ in range(125)
            ]
        assert statuses == [200] * 125
    finally:
        log = stop(process)
    shadow = [line for line in log.splitlines() if "shadow" in line]
    assert shadow == [
        f"{PLUGIN}shadow limit {ROUTE} would refuse GET /chat/threads/7/messages (let through: shadow mode); "
        "further refusals are counted, one line per 60 s"
    ], log


@pytest.mark.redis  # starts its own server, on the port the app was given
def test_an_outage_and_its_end_appear_in_uvicorns_default_log() -> None:
    server = RedisServer(find_server_binary("redis") or find_server_binary("valkey"))
    process, port = start(server.url)
    try:
        wait_for_port(port, process)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert [client.get("/").status_code for _ in range(20)] == [200] * 20  # fail open
            with server:  # starts it
                assert client.get("/").status_code == 200
    finally:
        log = stop(process)
    # The first request failing, then the first reaching the server again; nothing per request.
    storage = [line for line in log.splitlines() if line.startswith(f"{PLUGIN}rate-limit storage")]
    assert len(storage) == 2, log
    assert storage[0].startswith(f"{PLUGIN}rate-limit storage unavailable (")
    assert storage[0].endswith("the outage policy answers requests until it is back (GET /: let through)")
    assert storage[1].startswith(f"{PLUGIN}rate-limit storage available again after ")
    assert storage[1].endswith(
        "; 20 requests answered by the outage policy since the last report (20 let through)"
    )
