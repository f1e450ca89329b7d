"""Shadow mode is visible under uvicorn's default logging, once, not once per request."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
from test_starlette_uvicorn import wait_for_port

from bisman_ratelimit.testing import free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "example_apps"
ROUTE = "/chat/threads/{thread_id}/messages"  # 120/minute per API key in shadow mode


def test_shadow_refusals_appear_in_uvicorns_default_log() -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BISMAN_RATELIMIT")}
    # No --log-level, no log config: what a user gets from `uvicorn app:app`.
    command = [
        sys.executable, "-m", "uvicorn", "--app-dir", str(EXAMPLES), "starlette_app:app",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, process)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            statuses = [
                client.get("/chat/threads/7/messages", headers={"X-Api-Key": "k1"}).status_code
                for _ in range(125)
            ]
        assert statuses == [200] * 125
    finally:
        process.terminate()
        out, err = process.communicate(timeout=10)
    log = (out + err).decode()
    shadow = [line for line in log.splitlines() if "shadow" in line]
    assert shadow == [
        f"shadow limit {ROUTE} would refuse GET /chat/threads/7/messages (let through: shadow mode); "
        "further refusals are counted, one line per 60 s"
    ], log
