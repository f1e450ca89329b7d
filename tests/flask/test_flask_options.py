"""The extension's options and RATELIMIT_* settings, against exact statuses and headers."""

from __future__ import annotations

import pytest
import redis
from flask import Blueprint, Flask, request
from support import ManualClock

from bisman_ratelimit import Limiter as Engine
from bisman_ratelimit.backends import MemoryStorage
from bisman_ratelimit.core import ConfigurationError, InvalidArgument
from bisman_ratelimit.web import ENABLED_ENV
from bisman_ratelimit_flask import Limiter
from bisman_ratelimit_flask.util import get_remote_address


def engine() -> Engine:
    return Engine(MemoryStorage(clock=ManualClock()))


def statuses(app: Flask, *paths: str, method: str = "GET") -> list[int]:
    client = app.test_client()
    return [client.open(path, method=method).status_code for path in paths]


def test_shared_limit_counts_every_view_of_its_scope_together() -> None:
    app = Flask(__name__)
    limiter = Limiter(get_remote_address, app=app, engine=engine())
    shared = limiter.shared_limit("3 per minute", scope="search")

    @app.route("/a")
    @shared
    def a() -> str:
        return "a"

    @app.route("/b")
    @shared
    def b() -> str:
        return "b"

    assert statuses(app, "/a", "/b", "/a", "/b", "/a") == [200, 200, 200, 429, 429]


def test_blueprint_limits_and_exempt_blueprints() -> None:
    app = Flask(__name__)
    limiter = Limiter(get_remote_address, engine=engine(), default_limits=["1 per minute"])
    api = Blueprint("api", __name__)
    health = Blueprint("health", __name__)

    @api.route("/items")
    def items() -> str:
        return "items"

    @api.route("/orders")
    @limiter.limit("3 per minute")
    def orders() -> str:
        return "orders"

    @health.route("/live")
    def live() -> str:
        return "yes"

    limiter.limit("2 per minute")(api)
    limiter.exempt(health)
    app.register_blueprint(api)
    app.register_blueprint(health)
    limiter.init_app(app)
    # The blueprint's limit replaces the defaults; a route's own limit replaces the blueprint's.
    assert statuses(app, "/items", "/items", "/items") == [200, 200, 429]
    assert statuses(app, "/orders", "/orders", "/orders", "/orders") == [200, 200, 200, 429]
    assert statuses(app, "/live", "/live", "/live") == [200, 200, 200]


def test_deduct_when_cost_methods_exempt_when_and_error_message() -> None:
    app = Flask(__name__)
    limiter = Limiter(get_remote_address, app=app, engine=engine())

    @app.route("/login", methods=["GET", "POST"])
    @limiter.limit(
        "2 per minute",
        methods=["POST"],
        deduct_when=lambda response: response.status_code == 401,
        error_message="too many failed logins",
    )
    def login() -> tuple[str, int]:
        return ("no", 401) if request.form.get("password") != "right" else ("yes", 200)

    @app.route("/report")
    @limiter.limit("10 per minute", cost=4, exempt_when=lambda: request.headers.get("X-Admin") == "1")
    def report() -> str:
        return "report"

    client = app.test_client()
    # Only failed logins stay counted; GET is not limited at all.
    assert [client.post("/login", data={"password": "right"}).status_code for _ in range(4)] == [200] * 4
    assert [client.post("/login", data={"password": "x"}).status_code for _ in range(3)] == [401, 401, 429]
    refused = client.post("/login", data={"password": "right"})
    assert refused.status_code == 429
    assert refused.get_json()["detail"] == "too many failed logins"
    assert statuses(app, "/login", "/login", "/login") == [401, 401, 401]
    assert [client.get("/report").status_code for _ in range(3)] == [200, 200, 429]
    assert client.get("/report", headers={"X-Admin": "1"}).status_code == 200


def test_settings_are_read_from_app_config() -> None:
    app = Flask(__name__)
    app.config.update(
        RATELIMIT_DEFAULT="2 per minute",
        RATELIMIT_APPLICATION="3 per minute",
        RATELIMIT_HEADERS_ENABLED=True,
        RATELIMIT_STRATEGY="fixed-window",
    )
    Limiter(get_remote_address, app=app, engine=engine())

    @app.route("/one")
    def one() -> str:
        return "1"

    @app.route("/two")
    def two() -> str:
        return "2"

    client = app.test_client()
    first = client.get("/one")
    # Headers enabled: Flask-Limiter's X-RateLimit-* names beside the IETF fields.
    assert first.headers["X-RateLimit-Limit"] == "2"
    assert first.headers["X-RateLimit-Remaining"] == "1"
    assert first.headers["RateLimit"] == '"application";r=2;t=60, "default";r=1;t=60'
    # Defaults count per endpoint; the application limit counts across all of them.
    assert statuses(app, "/one", "/one", "/two", "/two") == [200, 429, 200, 429]


def test_headers_enabled_false_sends_none_but_retry_after() -> None:
    app = Flask(__name__)
    Limiter(
        get_remote_address,
        app=app,
        engine=engine(),
        default_limits=["1 per minute"],
        headers_enabled=False,
        strategy="fixed-window",
    )

    @app.route("/")
    def index() -> str:
        return "i"

    client = app.test_client()
    allowed, refused = client.get("/"), client.get("/")
    assert [name for name, _ in allowed.headers if "RateLimit" in name] == []
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "60"


def test_unsupported_and_bad_settings_are_named() -> None:
    app = Flask(__name__)
    app.config["RATELIMIT_STORAGE_OPTIONS"] = {"socket_timeout": 1}
    with pytest.raises(
        ConfigurationError, match="RATELIMIT_STORAGE_OPTIONS is not supported: put connection"
    ):
        Limiter(get_remote_address, app=app)
    app = Flask(__name__)
    app.config["RATELIMIT_STRATEGY"] = "leaky"
    with pytest.raises(ConfigurationError, match="unknown rate-limiting strategy 'leaky'"):
        Limiter(get_remote_address, app=app)
    with pytest.raises(InvalidArgument, match="shared_limit needs a scope"):
        Limiter(get_remote_address).shared_limit("1/second", scope="")


@pytest.mark.redis
@pytest.mark.parametrize("how", ["argument", "config", "environment"])
def test_turned_off_no_headers_and_no_redis_traffic(
    how: str, redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = Flask(__name__)
    app.config["RATELIMIT_STORAGE_URI"] = redis_url
    enabled = None
    if how == "argument":
        enabled = False
    elif how == "config":
        app.config["RATELIMIT_ENABLED"] = False
    else:
        monkeypatch.setenv(ENABLED_ENV, "off")
    redis_client.config_resetstat()
    limiter = Limiter(get_remote_address, app=app, default_limits=["1 per minute"], enabled=enabled)

    @app.route("/")
    def index() -> str:
        return "i"

    client = app.test_client()
    responses = [client.get("/") for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert [
        name for r in responses for name, _ in r.headers if "RateLimit" in name or name == "Retry-After"
    ] == []
    stats = redis_client.info("commandstats")
    assert sorted(name for name in stats if name != "cmdstat_info") == ["cmdstat_config|resetstat"]
    assert limiter.enabled is False


@pytest.mark.redis
def test_storage_outage_follows_the_fallback_setting(redis_url: str) -> None:
    app = Flask(__name__)
    app.config.update(
        RATELIMIT_STORAGE_URI="redis://127.0.0.1:1/0", RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=True
    )
    Limiter(get_remote_address, app=app, default_limits=["2 per minute"])

    @app.route("/")
    def index() -> str:
        return "i"

    # Nothing listens on port 1: the process's own counters decide.
    assert statuses(app, "/", "/", "/") == [200, 200, 429]


def test_deduct_when_gives_back_without_headers_too() -> None:
    app = Flask(__name__)
    limiter = Limiter(get_remote_address, app=app, engine=engine(), headers_enabled=False)

    @app.route("/login", methods=["POST"])
    @limiter.limit("1 per minute", deduct_when=lambda response: response.status_code == 401)
    def login() -> tuple[str, int]:
        return ("no", 401) if request.form.get("password") != "right" else ("yes", 200)

    client = app.test_client()
    assert [client.post("/login", data={"password": "right"}).status_code for _ in range(3)] == [200] * 3
    assert [client.post("/login", data={"password": "x"}).status_code for _ in range(2)] == [401, 429]


def test_init_app_twice_counts_once_and_scope_splits_a_route() -> None:
    app = Flask(__name__)
    limiter = Limiter(get_remote_address, engine=engine(), strategy="fixed-window")

    @app.route("/a", methods=["GET", "POST"])
    @limiter.limit("2 per minute")
    @limiter.limit("1 per minute", scope="other", methods=["POST"])
    def a() -> str:
        return "a"

    limiter.init_app(app)
    limiter.init_app(app)
    client = app.test_client()
    first = client.post("/a")
    # The POST-only limit has counters of its own, apart from the route's.
    # Decorators register from the innermost out.
    assert first.headers["RateLimit-Policy"] == '"a:other";q=1;w=60, "a";q=2;w=60'
    assert first.headers["RateLimit"] == '"a:other";r=0;t=60, "a";r=1;t=60'
    assert statuses(app, "/a", method="POST") == [429]
    assert statuses(app, "/a", "/a") == [200, 429]
