"""Verdicts as ASGI: encoded headers, the problem+json refusal, and the custom-response hook."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bisman_ratelimit.web import CONTENT_TYPE, Verdict

# on_limited(connection, verdict) -> Response (or an awaitable of one)
OnLimited = Callable[[HTTPConnection, Verdict], Any]

_NAMES: dict[str, bytes] = {
    name: name.lower().encode("latin-1")
    for name in (
        "RateLimit-Policy",
        "RateLimit",
        "Retry-After",
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
    )
}
_CONTENT_TYPE = (b"content-type", CONTENT_TYPE.encode("latin-1"))


def encode_headers(headers: tuple[tuple[str, str], ...]) -> list[tuple[bytes, bytes]]:
    names = _NAMES
    return [
        (names.get(name) or name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in headers
    ]


async def call_with_headers(
    app: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    added: Sequence[tuple[bytes, bytes]],
    *,
    start: str = "http.response.start",
) -> None:
    """Run ``app`` with ``added`` appended to the headers of its ``start`` message."""
    if not added:
        await app(scope, receive, send)
        return

    async def send_with_headers(message: Message) -> None:
        if message["type"] == start:
            message["headers"] = [*message.get("headers", ()), *added]
        await send(message)

    await app(scope, receive, send_with_headers)


async def refuse(
    scope: Scope, receive: Receive, send: Send, verdict: Verdict, on_limited: OnLimited | None
) -> None:
    """Answer a refused request: the hook's response, else an RFC 9457 problem."""
    headers = encode_headers(verdict.headers)
    if on_limited is not None:
        connection = HTTPConnection(scope, receive)
        response = on_limited(connection, verdict)
        if inspect.isawaitable(response):
            response = await response
        if not isinstance(response, Response):
            raise TypeError(f"on_limited must return a starlette Response, got {response!r}")
        present = {name for name, _ in response.raw_headers}
        # The rate-limit fields, Retry-After above all, are added unless the hook set them.
        response.raw_headers.extend(item for item in headers if item[0] not in present)
        await response(scope, receive, send)
        return
    problem = verdict.problem()
    body = problem.body() if problem is not None else b""
    await send(
        {
            "type": "http.response.start",
            "status": verdict.status,
            "headers": [_CONTENT_TYPE, (b"content-length", str(len(body)).encode("latin-1")), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})
