"""WebSockets: connection attempts closed with 1008 (1013 when shedding load), optional message limits.

The app is driven in-process through the ASGI WebSocket protocol itself: a
connect, then the messages each side sends.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from support import ManualClock

from bisman_ratelimit import AsyncLimiter
from bisman_ratelimit.backends import MemoryStorage
from bisman_ratelimit.testing import free_port
from bisman_ratelimit.web import parse_config
from bisman_ratelimit_starlette import RateLimitMiddleware, limit


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect:
        pass


@limit("1/minute", algorithm="fixed_window")
async def lobby(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("welcome")
    await websocket.close()


class Connection:
    """One WebSocket client of an ASGI app."""

    def __init__(self, app: Any, path: str, ip: str) -> None:
        self.to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"testserver")],
            "client": (ip, 50000),
            "server": ("testserver", 80),
            "scheme": "ws",
            "subprotocols": [],
        }
        self.task = asyncio.ensure_future(app(scope, self.to_app.get, self.from_app.put))

    async def open(self) -> dict[str, Any]:
        """Send the handshake; the app's answer (accept or close)."""
        await self.to_app.put({"type": "websocket.connect"})
        return await self.from_app.get()

    async def send(self, text: str) -> None:
        await self.to_app.put({"type": "websocket.receive", "text": text})

    async def receive(self) -> dict[str, Any]:
        return await asyncio.wait_for(self.from_app.get(), 5)

    async def close(self) -> None:
        await self.to_app.put({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(self.task, 5)


def make_app(clock: ManualClock, **options: Any) -> Starlette:
    limiter = AsyncLimiter(MemoryStorage(clock=clock))
    return Starlette(
        routes=[WebSocketRoute("/chat/{room}", echo), WebSocketRoute("/lobby", lobby)],
        middleware=[Middleware(RateLimitMiddleware, limiter=limiter, **options)],
    )


async def chat(app: Any, path: str = "/chat/a", ip: str = "198.51.100.7") -> dict[str, Any]:
    """Open, say one thing, hear it back, close; the answer to the handshake."""
    conn = Connection(app, path, ip)
    answer = await conn.open()
    if answer["type"] == "websocket.accept":
        await conn.send("hi")
        reply = await conn.receive()
        if reply["type"] == "websocket.send":
            assert reply["text"] == "hi"
        else:
            answer = reply
    await conn.close()
    return answer


async def refusal(app: Any, path: str = "/chat/a", ip: str = "198.51.100.7") -> dict[str, Any]:
    """The close that follows the accept of a refused connection attempt."""
    conn = Connection(app, path, ip)
    accepted = await conn.open()
    assert accepted["type"] == "websocket.accept"
    closed = await conn.receive()
    await asyncio.wait_for(conn.task, 5)
    return closed


async def test_connection_attempts_are_limited_with_1008_and_a_reason(clock: ManualClock) -> None:
    app = make_app(clock, default_limits="2/minute", algorithm="fixed_window")
    for _ in range(2):
        assert (await chat(app))["type"] == "websocket.accept"
    assert await refusal(app) == {
        "type": "websocket.close",
        "code": 1008,
        "reason": "Rate limit exceeded; retry in 60 seconds.",
    }
    clock.advance(60)
    assert (await chat(app))["type"] == "websocket.accept"


async def test_accepted_and_refused_connections_carry_the_headers(clock: ManualClock) -> None:
    app = make_app(clock, default_limits="1/minute", algorithm="fixed_window")
    accepted = await chat(app)
    assert dict(accepted["headers"])[b"ratelimit"] == b'"default";r=0;t=60'
    conn = Connection(app, "/chat/a", "198.51.100.7")
    refused_accept = await conn.open()
    assert dict(refused_accept["headers"])[b"retry-after"] == b"60"
    await conn.receive()
    await asyncio.wait_for(conn.task, 5)


async def test_global_overload_closes_with_1013(clock: ManualClock) -> None:
    config = parse_config(
        {"defaults": {"limits": "10/minute"}, "global": {"limits": "1/minute", "algorithm": "fixed_window"}}
    )
    app = make_app(clock, config=config)
    assert (await chat(app))["type"] == "websocket.accept"
    closed = await refusal(app, ip="198.51.100.8")
    assert closed["code"] == 1013
    assert closed["reason"] == "The server is over its request capacity; retry in 60 seconds."


async def test_message_limits_close_the_socket(clock: ManualClock) -> None:
    app = make_app(clock, websocket_message_limits="3/minute")
    conn = Connection(app, "/chat/a", "198.51.100.7")
    assert (await conn.open())["type"] == "websocket.accept"
    for n in range(3):
        await conn.send(f"m{n}")
        assert (await conn.receive())["text"] == f"m{n}"
    await conn.send("one too many")
    # Sliding window: the next minute starts with the three weighed in full, down to two after 20 s.
    assert await conn.receive() == {
        "type": "websocket.close",
        "code": 1008,
        "reason": "Rate limit exceeded; retry in 80 seconds.",
    }
    # The app saw a disconnect and ended on its own.
    await asyncio.wait_for(conn.task, 5)


async def test_decorated_websocket_endpoint(clock: ManualClock) -> None:
    app = make_app(clock)
    conn = Connection(app, "/lobby", "198.51.100.7")
    assert (await conn.open())["type"] == "websocket.accept"
    assert (await conn.receive())["text"] == "welcome"
    assert (await conn.receive())["type"] == "websocket.close"
    await asyncio.wait_for(conn.task, 5)
    assert (await refusal(app, "/lobby"))["code"] == 1008


async def test_websocket_limits_are_per_client(clock: ManualClock) -> None:
    app = make_app(clock, default_limits="1/minute", algorithm="fixed_window")
    assert (await chat(app, ip="198.51.100.7"))["type"] == "websocket.accept"
    assert (await chat(app, ip="198.51.100.8"))["type"] == "websocket.accept"
    assert (await refusal(app, ip="198.51.100.7"))["code"] == 1008


async def test_the_outage_policy_answers_websockets_too() -> None:
    limiter = AsyncLimiter.from_url(f"redis://127.0.0.1:{free_port()}/0")

    def on_dead_storage(on_outage: str) -> Starlette:
        return Starlette(
            routes=[WebSocketRoute("/chat/{room}", echo)],
            middleware=[
                Middleware(RateLimitMiddleware, limiter=limiter, default_limits="1/day", on_outage=on_outage)
            ],
        )

    try:
        opened = on_dead_storage("open")
        assert [(await chat(opened))["type"] for _ in range(2)] == ["websocket.accept", "websocket.accept"]
        closed = await refusal(on_dead_storage("closed"))
        assert closed == {
            "type": "websocket.close",
            "code": 1013,
            "reason": "The server is over its request capacity; retry in 1 second.",
        }
        counted = on_dead_storage("fallback")
        assert (await chat(counted))["type"] == "websocket.accept"
        assert (await refusal(counted))["code"] == 1008
    finally:
        await limiter.aclose()
