"""The Starlette plugin while its Redis is down: quiet logs, and WebSocket messages under the outage policy.

Each test starts its own server and kills it (SIGKILL, as a crash would).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from support import ManualClock

from bisman_ratelimit import AsyncLimiter
from bisman_ratelimit.testing import RedisServer
from bisman_ratelimit_starlette import RateLimitMiddleware

pytestmark = pytest.mark.redis


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as started:
        yield started


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect:
        pass


async def test_a_thousand_failing_requests_log_a_bounded_number_of_lines(
    server: RedisServer, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = AsyncLimiter.from_url(server.url)
    middleware = RateLimitMiddleware(
        Starlette(routes=[Route("/", hello)]), limiter=limiter, default_limits="100/minute", on_outage="open"
    )
    middleware.outages.clock = clock
    caplog.set_level(logging.INFO, logger="bisman_ratelimit")
    transport = httpx.ASGITransport(app=middleware, client=("198.51.100.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        assert (await client.get("/")).headers["ratelimit"].startswith('"default";r=99;')
        server.kill()
        statuses = []
        for _ in range(1000):  # 125 s of outage, 8 requests a second
            clock.advance(0.125)
            statuses.append((await client.get("/")).status_code)
        assert statuses == [200] * 1000
        server.start()
        back = await client.get("/")
    assert back.headers["ratelimit"].startswith('"default";r=99;')  # a fresh server
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    # The first failure, one count every 10 s (81 requests, then 80 each), the recovery.
    assert len(messages) == 14
    assert messages[0][0] == "WARNING" and messages[0][1].startswith("rate-limit storage unavailable (")
    assert messages[0][1].endswith("the outage policy answers requests until it is back (GET /: let through)")
    counts = [message.split(" requests answered")[0] for _, message in messages[1:13]]
    assert counts == ["81"] + ["80"] * 11
    assert messages[13] == (
        "WARNING",
        "rate-limit storage available again after 124.9 s; 39 requests answered by the outage policy "
        "since the last report (39 let through)",
    )
    await limiter.aclose()


class Socket:
    """One WebSocket client of an ASGI app, driven through the ASGI messages themselves."""

    def __init__(self, app: Any) -> None:
        self.to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "path": "/chat",
            "raw_path": b"/chat",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"testserver")],
            "client": ("198.51.100.7", 50000),
            "server": ("testserver", 80),
            "scheme": "ws",
            "subprotocols": [],
        }
        self.task = asyncio.ensure_future(app(scope, self.to_app.get, self.from_app.put))

    async def say(self, text: str) -> dict[str, Any]:
        await self.to_app.put({"type": "websocket.receive", "text": text})
        return await asyncio.wait_for(self.from_app.get(), 5)


@pytest.mark.parametrize(
    ("on_outage", "answers"),
    [
        ("open", ["m1", "m2", "m3", "m4", "m5"]),
        ("closed", [(1013, "The server is over its request capacity; retry in 1 second.")]),
        # This process counts afresh: three messages a minute, then the usual refusal
        # (its wait depends on where the wall clock is in the minute).
        ("fallback", ["m1", "m2", "m3", (1008, "Rate limit exceeded; retry in N seconds.")]),
    ],
)
async def test_websocket_messages_follow_the_outage_policy(
    server: RedisServer, on_outage: str, answers: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    limiter = AsyncLimiter.from_url(server.url)
    app = Starlette(
        routes=[WebSocketRoute("/chat", echo)],
        middleware=[
            Middleware(
                RateLimitMiddleware,
                limiter=limiter,
                websocket_message_limits="3/minute",
                on_outage=on_outage,
            )
        ],
    )
    socket = Socket(app)
    await socket.to_app.put({"type": "websocket.connect"})
    assert (await socket.from_app.get())["type"] == "websocket.accept"
    assert (await socket.say("m0"))["text"] == "m0"  # counted on Redis
    server.kill()
    heard: list[Any] = []
    for n in range(1, len(answers) + 1):
        reply = await socket.say(f"m{n}")
        if reply["type"] == "websocket.send":
            heard.append(reply["text"])
        else:
            heard.append(
                (reply["code"], re.sub(r"retry in \d+ seconds", "retry in N seconds", reply["reason"]))
            )
    assert heard == answers
    await socket.to_app.put({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait_for(socket.task, 5)
    assert [
        r.getMessage().split(" (")[0] for r in caplog.records if r.name == "bisman_ratelimit.starlette"
    ] == ["rate-limit storage unavailable"]
    await limiter.aclose()
