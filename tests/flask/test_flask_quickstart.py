"""Flask-Limiter's quickstart, as its documentation writes and describes it, on this plugin."""

from __future__ import annotations

import json

import pytest
import redis
from flask import Flask, jsonify, make_response
from support import ManualClock

from bisman_ratelimit import Limiter as Engine
from bisman_ratelimit.backends import MemoryStorage
from bisman_ratelimit_flask import Limiter, RateLimitExceeded
from bisman_ratelimit_flask.util import get_remote_address


def quickstart(*, storage_uri: str, strategy: str, engine: Engine | None = None) -> Flask:
    app = Flask(__name__)
    limiter = Limiter(
        get_remote_address,
        app=app,
        default_limits=["2 per minute", "1 per second"],
        storage_uri=storage_uri,
        strategy=strategy,
        engine=engine,
    )

    @app.route("/slow")
    @limiter.limit("1 per day")
    def slow() -> str:
        return "24"

    @app.route("/fast")
    def fast() -> str:
        return "42"

    @app.route("/ping")
    @limiter.exempt
    def ping() -> str:
        return "PONG"

    return app


def test_the_curl_session_of_the_quickstart_on_memory() -> None:
    clock = ManualClock()
    app = quickstart(
        storage_uri="memory://", strategy="fixed-window", engine=Engine(MemoryStorage(clock=clock))
    )
    client = app.test_client()
    seen = []
    for path in ("/fast", "/fast", "/fast", "/slow", "/slow", "/ping", "/ping", "/ping", "/ping"):
        response = client.get(path)
        seen.append((path, response.status_code, response.get_data(as_text=True)))
        clock.advance(2)  # the curl commands are typed a second or more apart
    bodies = {path: body for path, status, body in seen if status == 200}
    assert [(path, status) for path, status, _ in seen] == [
        ("/fast", 200),
        ("/fast", 200),
        ("/fast", 429),
        ("/slow", 200),
        ("/slow", 429),
        ("/ping", 200),
        ("/ping", 200),
        ("/ping", 200),
        ("/ping", 200),
    ]
    assert bodies == {"/fast": "42", "/slow": "24", "/ping": "PONG"}
    problem = json.loads(seen[2][2])
    assert problem == {
        "type": "https://iana.org/assignments/http-problem-types#quota-exceeded",
        "title": "Too Many Requests",
        "status": 429,
        "detail": "Rate limit exceeded; retry in 56 seconds.",
        "violated-policies": ["default-60s"],
    }


def test_exact_headers_of_the_quickstart() -> None:
    clock = ManualClock()
    app = quickstart(
        storage_uri="memory://", strategy="fixed-window", engine=Engine(MemoryStorage(clock=clock))
    )
    client = app.test_client()
    first = client.get("/fast")
    second = client.get("/fast")
    slow = client.get("/slow")
    ping = client.get("/ping")
    policy = '"default-60s";q=2;w=60, "default-1s";q=1;w=1'
    assert first.headers.get_all("RateLimit-Policy") == [policy]
    assert first.headers.get_all("RateLimit") == ['"default-60s";r=1;t=60, "default-1s";r=0;t=1']
    assert second.status_code == 429
    assert second.headers["Content-Type"] == "application/problem+json"
    assert second.headers.get_all("RateLimit") == ['"default-60s";r=1;t=60, "default-1s";r=0;t=1']
    assert second.headers.get_all("Retry-After") == ["1"]
    assert slow.headers["RateLimit-Policy"] == '"slow";q=1;w=86400'
    assert slow.headers["RateLimit"] == '"slow";r=0;t=86400'
    assert "RateLimit" not in ping.headers and "RateLimit-Policy" not in ping.headers


def test_the_documented_429_handler_gets_the_limit_in_words() -> None:
    clock = ManualClock()
    app = quickstart(
        storage_uri="memory://", strategy="fixed-window", engine=Engine(MemoryStorage(clock=clock))
    )
    caught: list[RateLimitExceeded] = []

    @app.errorhandler(429)
    def ratelimit_handler(e: RateLimitExceeded):  # type: ignore[no-untyped-def]
        caught.append(e)
        return make_response(jsonify(error=f"ratelimit exceeded {e.description}"), 429)

    client = app.test_client()
    assert client.get("/slow").status_code == 200
    refused = client.get("/slow")
    assert refused.status_code == 429
    assert refused.get_json() == {"error": "ratelimit exceeded 1 per 1 day"}
    # The handler's response keeps the rate-limit fields.
    assert refused.headers["Retry-After"] == "86400"
    assert refused.headers["RateLimit"] == '"slow";r=0;t=86400'
    assert isinstance(caught[0], RateLimitExceeded) and caught[0].code == 429


@pytest.mark.redis
def test_the_quickstart_on_redis_with_its_moving_window(redis_url: str, redis_client: redis.Redis) -> None:
    # The quickstart's other strategy: a window that moves with time, so the
    # two requests a few milliseconds apart meet the "1 per second" limit on
    # the server's clock wherever its second boundaries fall.
    app = quickstart(storage_uri=redis_url, strategy="moving-window")
    client = app.test_client()
    statuses = [
        client.get(path).status_code for path in ("/fast", "/fast", "/slow", "/slow", "/ping", "/ping")
    ]
    assert statuses == [200, 429, 200, 429, 200, 200]
    keys = sorted(key.decode() for key in redis_client.keys("*"))
    # One counter per limit, under the endpoint's scope; the defaults apart from the route's own.
    assert keys == [
        "rl:ip:{127.0.0.1}:api:default/fast:l1m",
        "rl:ip:{127.0.0.1}:api:default/fast:l1s",
        "rl:ip:{127.0.0.1}:api:slow:l1d",
    ]
