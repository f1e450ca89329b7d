"""The slowapi and fastapi-limiter quickstarts under a real uvicorn, with 50 connections at once.

Each limit lets exactly its count through, on memory and on a real Redis,
whatever the interleaving of the concurrent requests.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_starlette_uvicorn import stop, wait_for_port

from bisman_ratelimit.testing import free_port

HERE = Path(__file__).resolve().parent


@pytest.fixture
def server(backend: tuple[str, str | None]) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BISMAN_")}
    if backend[1] is not None:
        # A time budget 50 connections opened at once on a busy machine fit in.
        env["BISMAN_RATELIMIT_STORAGE_URL"] = backend[1] + "?timeout=5s"
    command = [
        sys.executable, "-m", "uvicorn", "--app-dir", str(HERE), "asgi_compat_app:app",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


async def test_fifty_concurrent_requests_get_exactly_the_limit(
    server: str, backend: tuple[str, str | None]
) -> None:
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(base_url=server, timeout=10, limits=limits) as client:
        storage = (await client.get("/storage")).json()["storage"]
        counts = {}
        for path in ("/home", "/default", "/"):
            answers = await asyncio.gather(*(client.get(path) for _ in range(50)))
            counts[path] = Counter(r.status_code for r in answers)
            bodies = {r.text for r in answers if r.status_code == 429}
            assert bodies == (
                {'{"detail":"Too Many Requests"}'}
                if path == "/"
                else {'{"error":"Rate limit exceeded: 5 per 1 minute"}'}
            )
    assert storage == ("memory" if backend[1] is None else "redis")
    assert counts == {"/home": {200: 5, 429: 45}, "/default": {200: 5, 429: 45}, "/": {200: 5, 429: 45}}
