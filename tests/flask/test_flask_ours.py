"""What the Flask extension adds to Flask-Limiter's surface: the limits file, trusted proxies,
metrics, the global limit and the outage policy."""

from __future__ import annotations

import hashlib

from flask import Flask
from prometheus_client import CollectorRegistry
from support import ManualClock

from bisman_ratelimit import Limiter as Engine
from bisman_ratelimit.backends import MemoryStorage
from bisman_ratelimit.metrics import RateLimitMetrics
from bisman_ratelimit.testing import free_port
from bisman_ratelimit.web import parse_config
from bisman_ratelimit_flask import Limiter
from bisman_ratelimit_flask.util import get_remote_address


def engine() -> Engine:
    return Engine(MemoryStorage(clock=ManualClock()))


def test_the_limits_file_names_flask_routes_in_either_spelling() -> None:
    config = parse_config(
        {
            "defaults": {"limits": "5/minute"},
            "routes": [
                {"path": "/users/{user_id}", "limits": "2/minute"},
                {"path": "/health", "exempt": True},
            ],
        }
    )
    app = Flask(__name__)
    limiter = Limiter(get_remote_address, app=app, engine=engine(), config=config)

    @app.route("/users/<int:user_id>")
    def user(user_id: int) -> str:
        return str(user_id)

    @app.route("/health")
    def health() -> str:
        return "ok"

    @app.route("/other")
    @limiter.limit("1/minute", override_defaults=False)
    def other() -> str:
        return "other"

    client = app.test_client()
    # Every id shares the route's counter.
    assert [client.get(f"/users/{i}").status_code for i in (1, 2, 3)] == [200, 200, 429]
    assert client.get("/users/1").headers["RateLimit-Policy"] == '"/users/{user_id}";q=2;w=60'
    assert [client.get("/health").status_code for _ in range(7)] == [200] * 7
    first = client.get("/other")
    assert first.headers["RateLimit-Policy"] == '"default";q=5;w=60, "other";q=1;w=60'
    assert client.get("/other").status_code == 429


def test_trusted_proxies_name_the_client() -> None:
    app = Flask(__name__)
    Limiter(get_remote_address, app=app, engine=engine(), default_limits=["1/minute"], trusted_proxies=1)

    @app.route("/")
    def index() -> str:
        return "i"

    client = app.test_client()

    def status(forwarded: str) -> int:
        return client.get("/", headers={"X-Forwarded-For": forwarded}).status_code

    # Behind one proxy the last address it appends is the client; what the client wrote is not believed.
    assert [status("1.1.1.1"), status("9.9.9.9, 1.1.1.1"), status("2.2.2.2")] == [200, 429, 200]


def test_metrics_global_limit_and_an_outage_refused() -> None:
    registry = CollectorRegistry()
    metrics = RateLimitMetrics(registry=registry)
    app = Flask(__name__)
    Limiter(
        get_remote_address,
        app=app,
        engine=engine(),
        default_limits=["2/minute"],
        global_limits="3/minute",
        metrics=metrics,
    )

    @app.route("/items/<int:item_id>")
    def item(item_id: int) -> str:
        return "item"

    client = app.test_client()
    statuses = [
        client.get("/items/1", environ_base={"REMOTE_ADDR": address}).status_code
        for address in ("10.0.0.1", "10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.3")
    ]
    assert statuses == [200, 200, 429, 200, 503]
    route = "/items/<int:item_id>"
    assert registry.get_sample_value("app_rate_limit_block_total", {"route": route, "reason": "client"}) == 1
    assert registry.get_sample_value("app_rate_limit_block_total", {"route": route, "reason": "global"}) == 1

    dead = Flask(__name__)
    Limiter(
        get_remote_address,
        app=dead,
        storage_uri=f"redis://127.0.0.1:{free_port()}/0",
        default_limits=["2/minute"],
        fail_open=False,
    )

    @dead.route("/")
    def index() -> str:
        return "i"

    refused = dead.test_client().get("/")
    assert (refused.status_code, refused.headers["Retry-After"]) == (503, "1")
    assert (
        refused.get_json()["type"]
        == "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity"
    )


def test_a_limit_keyed_by_a_header_takes_the_single_check_and_keys_as_the_general_path() -> None:
    config = parse_config(
        {"defaults": {"limits": "3/minute", "algorithm": "fixed_window", "key": "header:X-Client"}}
    )
    storage = MemoryStorage(clock=ManualClock())
    app = Flask(__name__)
    limiter = Limiter(get_remote_address, app=app, engine=Engine(storage), config=config)

    @app.route("/")
    def index() -> str:
        return "i"

    client = app.test_client()
    tenant = [client.get("/", headers={"X-Client": "tenant-7"}) for _ in range(4)]
    assert [r.status_code for r in tenant] == [200, 200, 200, 429]
    assert client.get("/", headers={"X-Client": "tenant-8"}).headers["RateLimit"] == '"default";r=2;t=60'
    assert [client.get("/").status_code for _ in range(4)] == [200, 200, 200, 429]
    target = limiter.runtime.targets[("index", "GET", "/")]
    assert target is not None and target.single is not None and target.single.header == "x-client"
    digest = {name: hashlib.sha256(name).hexdigest()[:32] for name in (b"tenant-7", b"tenant-8")}
    assert {key for key, _ in storage._map} == {
        f"rl:header:x-client:{{{digest[b'tenant-7']}}}:api:default",
        f"rl:header:x-client:{{{digest[b'tenant-8']}}}:api:default",
        "rl:ip:{127.0.0.1}:api:default",
    }
