"""A session store that stops answering, or answers with errors: the SessionMiddleware answers 503."""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
import warnings
from collections.abc import Iterator

import pytest
import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bisman_ratelimit.stores import AsyncSessionStore
from bisman_ratelimit.testing import RedisServer
from bisman_ratelimit_starlette import SessionMiddleware
from bisman_ratelimit_starlette._sessions import UNAVAILABLE_TEXT

with warnings.catch_warnings():
    # Starlette 1.x would have its TestClient on httpx2; on httpx it works and says so.
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient` is deprecated")
    from starlette.testclient import TestClient

pytestmark = pytest.mark.redis

SECRET = "paused-store-secret-" * 2
HTTPS = "https://testserver"
# Far above the 50 ms budget of a store built from a URL, far below a client left waiting.
WELL_UNDER_A_SECOND = 0.5
calls: list[str] = []


async def view(request: Request) -> JSONResponse:
    calls.append("view")
    return JSONResponse(dict(request.session))


async def update(request: Request) -> JSONResponse:
    calls.append("update")
    request.session.update(await request.json())
    return JSONResponse(dict(request.session))


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer(args=("--enable-debug-command", "yes")) as started:
        yield started


@pytest.fixture
def client(server: RedisServer) -> Iterator[TestClient]:
    app = Starlette(routes=[Route("/", view), Route("/update", update, methods=["POST"])])
    # Built from the URL, as an app builds it: the default budget of 50 ms per call.
    app.add_middleware(SessionMiddleware, store=AsyncSessionStore(server.url), secret_key=SECRET)
    with TestClient(app, base_url=HTTPS) as made:
        made.post("/update", json={"a": 1})
        calls.clear()
        yield made


def answers_503(client: TestClient, caplog: pytest.LogCaptureFixture, port: int) -> None:
    """A read and a write, each answered 503 within well under a second."""
    caplog.set_level(logging.WARNING, logger="bisman_ratelimit.sessions")
    started = time.perf_counter()
    read = client.get("/")
    read_time = time.perf_counter() - started
    started = time.perf_counter()
    # Another client, without a cookie: nothing to load, the app runs, its write cannot be stored.
    write = TestClient(client.app, base_url=HTTPS).post("/update", json={"b": 2})
    write_time = time.perf_counter() - started
    for response in (read, write):
        assert (response.status_code, response.text) == (503, UNAVAILABLE_TEXT)
        assert response.headers["retry-after"] == "1" and "set-cookie" not in response.headers
    assert read_time < WELL_UNDER_A_SECOND and write_time < WELL_UNDER_A_SECOND
    assert calls == ["update"]
    timed_out = f"Redis is unavailable: Timeout reading from 127.0.0.1:{port}"
    assert [record.getMessage() for record in caplog.records] == [
        f"session store unreachable, answering 503: {timed_out}"
    ] * 2


def test_a_paused_server_answers_503_within_the_budget(
    server: RedisServer, client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        answers_503(client, caplog, server.port)
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    assert client.get("/").json() == {"a": 1}


def test_debug_sleep_answers_503_within_the_budget(
    server: RedisServer, client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sleeper:
        sleeper.sendall(b"*3\r\n$5\r\nDEBUG\r\n$5\r\nSLEEP\r\n$1\r\n1\r\n")
        # The server is asleep once a PING goes unanswered.
        with redis.Redis(port=server.port, socket_timeout=0.02, retry=None) as probe:
            tries = 0
            while True:
                tries += 1
                assert tries < 100
                try:
                    probe.ping()
                except redis.TimeoutError:
                    break
        answers_503(client, caplog, server.port)
        assert sleeper.recv(16) == b"+OK\r\n"  # awake again
    assert client.get("/").json() == {"a": 1}


def test_a_server_answering_with_errors_answers_503(
    server: RedisServer, client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Out of memory, Redis refuses writes: the same 503, not an exception out of the app."""
    caplog.set_level(logging.WARNING, logger="bisman_ratelimit.sessions")
    with redis.Redis(port=server.port) as admin:
        admin.config_set("maxmemory", 1)
        try:
            read = client.get("/")
            write = TestClient(client.app, base_url=HTTPS).post("/update", json={"b": 2})
        finally:
            admin.config_set("maxmemory", 0)
    # Loading (and renewing) a session is allowed out of memory; creating one is not.
    assert (read.status_code, read.json()) == (200, {"a": 1})
    assert (write.status_code, write.text) == (503, UNAVAILABLE_TEXT)
    assert calls == ["view", "update"]
    assert [record.getMessage().split(": ", 2)[:2] for record in caplog.records] == [
        ["session store unreachable, answering 503", "Redis answered with an error"]
    ]
    assert "command not allowed when used memory > 'maxmemory'" in caplog.records[0].getMessage()
