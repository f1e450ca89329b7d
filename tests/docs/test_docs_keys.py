"""The storage keys docs/starlette.md shows are the keys the library stores.

The test builds each key the way the docs say (``rl:<kind>``, the identity
inside a ``hash_tag``, the scope escaped with ``make_key``, then the limit's
tag: algorithm letter and window), checks the docs' examples against that,
and drives the request the docs describe against a real server to compare
with what it stored. A change of the key layout fails here until the docs
show the new keys.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import redis
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bisman_ratelimit import AsyncLimiter
from bisman_ratelimit.core import hash_tag, make_key
from bisman_ratelimit.web import parse_config
from bisman_ratelimit_starlette import RateLimitMiddleware

DOC = Path(__file__).resolve().parents[2] / "docs" / "starlette.md"


def documented() -> dict[str, str]:
    text = " ".join(DOC.read_text(encoding="utf-8").split())
    names = re.search(r"e\.g\. `(rl:ip:[^`]+)` or `(rl:user:[^`]+)`", text)
    assert names is not None, "docs/starlette.md no longer shows its key examples"
    return {"ip": names.group(1), "user": names.group(2)}


def stored_key(kind: str, identity: str, scope: str, tag: str) -> str:
    """`rl:<kind>:{<identity>}:api:<scope>:<tag>`, as the docs say."""
    return f"{make_key('rl', kind)}:{hash_tag(identity)}:{make_key('api', scope)}:{tag}"


async def user(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


class Bearer(AuthenticationBackend):
    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        name = conn.headers.get("authorization", "").removeprefix("Bearer ")
        return (AuthCredentials(["authenticated"]), SimpleUser(name)) if name else None


def test_documented_names_are_built_as_the_docs_say() -> None:
    docs = documented()
    assert docs["ip"] == stored_key("ip", "198.51.100.7", "/users/{id}", "s1m")
    assert docs["user"] == stored_key("user", "alice", "default", "s1m")
    assert docs["ip"] == "rl:ip:{198.51.100.7}:api:/users/%7Bid%7D:s1m"


async def test_documented_keys_are_the_stored_keys(redis_url: str) -> None:
    docs = documented()
    config = parse_config(
        {
            "defaults": {"limits": "10/minute", "key": "user"},
            "routes": [{"path": "/users/{id}", "limits": "10/minute"}],
        }
    )
    app = Starlette(routes=[Route("/users/{id}", user), Route("/me", user)])
    limiter = AsyncLimiter.from_url(redis_url)
    app.add_middleware(RateLimitMiddleware, limiter=limiter, config=config)
    app.add_middleware(AuthenticationMiddleware, backend=Bearer())
    client = redis.Redis.from_url(redis_url)
    try:
        transport = httpx.ASGITransport(app, client=("198.51.100.7", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            assert (await http.get("/users/42")).status_code == 200
            assert client.keys("*") == [docs["ip"].encode()]
            client.flushall()
            assert (await http.get("/me", headers={"Authorization": "Bearer alice"})).status_code == 200
            assert client.keys("*") == [docs["user"].encode()]
    finally:
        client.close()
        await limiter.aclose()
