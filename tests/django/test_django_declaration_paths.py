"""``HEADERS = "none"`` takes the single check of the default headers: what it answers and what it costs."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

from django.test import AsyncClient, Client


def calls_in(request: Callable[[], Any], where: str = "") -> tuple[int, Any]:
    """Python function calls made by ``request()`` (in files whose path holds ``where``), and its response."""
    count = 0

    def trace(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal count
        if event == "call" and where in frame.f_code.co_filename:
            count += 1

    sys.setprofile(trace)
    try:
        response = request()
    finally:
        sys.setprofile(None)
    return count, response


def test_no_headers_answer_as_before_and_cost_less_than_the_headers(configure) -> None:
    configure(DEFAULT_LIMITS="3/minute", DEFAULT_ALGORITHM="fixed_window")
    client = Client()
    client.get("/plain/")
    with_headers, shown = calls_in(lambda: client.get("/plain/"))
    assert shown["RateLimit"] == '"default";r=1;t=60'
    configure(DEFAULT_LIMITS="3/minute", DEFAULT_ALGORITHM="fixed_window", HEADERS="none")
    client = Client()
    client.get("/plain/")
    without, allowed = calls_in(lambda: client.get("/plain/"))
    assert without < with_headers
    assert (allowed.status_code, allowed.content) == (200, b"ok")
    assert not [name for name in allowed.headers if name.lower().startswith(("ratelimit", "retry-after"))]
    assert client.get("/plain/").status_code == 200
    refused = client.get("/plain/")
    assert refused.status_code == 429
    assert [(n, v) for n, v in refused.headers.items() if n.lower().startswith(("ratelimit", "retry"))] == [
        ("Retry-After", "60")
    ]
    assert refused.json()["violated-policies"] == ["default"]


async def test_no_headers_under_asgi(configure) -> None:
    configure(DEFAULT_LIMITS="2/minute", DEFAULT_ALGORITHM="fixed_window", HEADERS="none")
    client = AsyncClient()
    answers = [await client.get("/async/") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert ["RateLimit" in a or "RateLimit-Policy" in a for a in answers] == [False, False, False]
    assert answers[2]["Retry-After"] == "60"


def test_a_limit_keyed_by_a_header_costs_what_one_keyed_by_the_address_costs(configure) -> None:
    configure(DEFAULT_LIMITS="3/minute", DEFAULT_ALGORITHM="fixed_window")
    client = Client(HTTP_X_CLIENT="tenant-7")
    client.get("/plain/")
    # Ours only: Django's own calls vary with the signal receivers other tests left behind.
    by_ip, _ = calls_in(lambda: client.get("/plain/"), "bisman_ratelimit")
    value = configure(
        DEFAULT_LIMITS="3/minute", DEFAULT_ALGORITHM="fixed_window", DEFAULT_KEY="header:x-client"
    )
    client = Client(HTTP_X_CLIENT="tenant-7")
    client.get("/plain/")
    by_header, shown = calls_in(lambda: client.get("/plain/"), "bisman_ratelimit")
    # The header's META key known ahead, its digest remembered: no call more (the general
    # path, which a header-keyed limit took before, cost 33 more: 50 calls of ours against 17).
    assert by_header == by_ip
    assert shown["RateLimit"] == '"default";r=1;t=60'
    assert [client.get("/plain/").status_code for _ in range(2)] == [200, 429]
    assert Client(HTTP_X_CLIENT="tenant-8").get("/plain/")["RateLimit"] == '"default";r=2;t=60'
    assert [Client().get("/plain/").status_code for _ in range(4)] == [200, 200, 200, 429]
    digest = {name: hashlib.sha256(name).hexdigest()[:32] for name in (b"tenant-7", b"tenant-8")}
    storage = value["LIMITER"].storage
    assert {key for key, _ in storage._map} == {
        f"rl:header:x-client:{{{digest[b'tenant-7']}}}:api:default",
        f"rl:header:x-client:{{{digest[b'tenant-8']}}}:api:default",
        "rl:ip:{127.0.0.1}:api:default",
    }
