"""The Starlette and FastAPI examples on the in-memory default, as the README's first command runs
them: every page and store works with no server but uvicorn, WebSockets included."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from support import served

from bisman_ratelimit.testing import free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "example_apps"
HTML = {"Accept": "text/html"}


@contextlib.contextmanager
def running(app: str) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BISMAN_")}
    command = [
        sys.executable, "-m", "uvicorn", "--app-dir", str(EXAMPLES), f"{app}:app",
        "--host", "127.0.0.1", "--port", str(port), "--no-proxy-headers", "--log-level", "warning",
    ]  # fmt: skip
    with served(command, port, env) as base:
        yield base.removeprefix("http://")


def found(pattern: str, page: httpx.Response) -> list[str]:
    return re.findall(pattern, page.text)


@pytest.fixture(params=["starlette_app", "fastapi_app"])
def server(request: pytest.FixtureRequest) -> Iterator[str]:
    with running(request.param) as address:
        yield address


def test_every_page_works_in_memory(server: str) -> None:
    with httpx.Client(base_url=f"http://{server}", headers=HTML, timeout=10) as client:
        assert found(r'id="storage">(\w+)<', client.get("/")) == ["memory"]
        # Stored when the first response is sent: the second visit reads it back.
        assert found(r'id="fingerprint">(\w+)<', client.get("/session")) == ["none"]
        before = found(r'id="fingerprint">(\w+)<', client.get("/session"))
        assert before != ["none"]
        assert found(r'id="field-views">(\d+)<', client.get("/session")) == ["3"]

        wrong = client.post("/login", data={"username": "bob", "password": "nope"})
        assert (wrong.status_code, found(r'id="error">([^<]+)<', wrong)) == (401, ["Wrong user or password."])
        page = client.post(
            "/login", data={"username": "bob", "password": "battery staple"}, follow_redirects=True
        )
        assert found(r'id="user">(\w+)<', page) == ["bob"]
        after = found(r'id="fingerprint">(\w+)<', page)
        assert after != before  # the id changes at log in
        assert found(r'id="ttl">(\d+)<', page) == ["1800"]

        posted = client.post("/chat/threads/t1/messages", data={"text": "hi"}, follow_redirects=True)
        assert found(r'class="message"><b>(\w+)</b>: ([^<]+)<', posted) == [("bob", "hi")]
        # A user may post 20 messages in 10 s; the 21st is refused and not kept.
        statuses = [
            client.post("/chat/threads/t1/messages", json={"text": f"b{n}"}, headers={"Accept": "*/*"})
            for n in range(20)
        ]
        assert [r.status_code for r in statuses] == [201] * 19 + [429]
        # The seed's window: a thread keeps its last 30 messages.
        with httpx.Client(base_url=f"http://{server}", timeout=10) as api:
            for n in range(12):
                bearer = {"Authorization": f"Bearer user{n}"}
                assert (
                    api.post("/chat/threads/t1/messages", json={"text": f"u{n}"}, headers=bearer).json()[
                        "number"
                    ]
                    == 21 + n
                )
            messages = api.get("/chat/threads/t1/messages").json()["messages"]
        assert [m["text"] for m in messages] == [f"b{n}" for n in range(1, 19)] + [f"u{n}" for n in range(12)]

        room = client.post("/calls/r1/join", follow_redirects=True)
        assert found(r'class="participant">(\w+)<', room) == ["bob"]
        assert client.get("/api/calls/r1/participants").json() == {"room": "r1", "participants": ["bob"]}
        client.post("/calls/r1/leave")
        assert client.get("/api/calls/r1/participants").json() == {"room": "r1", "participants": []}

        assert client.get("/flags", headers={"Accept": "*/*"}).json() == {"flags": {}}
        assert found(r'data-theme="(\w+)"', client.get("/")) == ["light"]

        metrics = client.get("/metrics")
        assert metrics.status_code == 200 and "ratelimit" not in metrics.headers
        assert 'app_rate_limit_allowed_total{route="/chat/threads/{thread_id}/messages"} 33.0' in metrics.text

        out = client.post("/logout", follow_redirects=True)
        assert found(r'id="(login-link)"', out) == ["login-link"]
        assert found(r'id="user">(\w+)<', client.get("/session")) == []


def test_the_websocket_answers_after_the_first_command() -> None:
    async def echo(server: str) -> str:
        async with websockets.connect(f"ws://{server}/chat/ws") as socket:
            await socket.send("ping")
            return str(await socket.recv())

    with running("starlette_app") as server:
        assert asyncio.run(echo(server)) == "ping"
