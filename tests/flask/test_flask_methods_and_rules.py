"""Which limits apply to a Flask request: HEAD falls under what is written for GET, and a view
served by several URL rules gets the file entry of the rule that was requested."""

from __future__ import annotations

from flask import Flask
from support import ManualClock

from bisman_ratelimit import Limiter as Engine
from bisman_ratelimit.backends import MemoryStorage
from bisman_ratelimit.web import parse_config
from bisman_ratelimit_flask import Limiter
from bisman_ratelimit_flask.util import get_remote_address


def engine() -> Engine:
    return Engine(MemoryStorage(clock=ManualClock()))


def test_a_head_request_counts_against_the_get_entry_of_the_file() -> None:
    config = parse_config({"routes": [{"path": "/report", "methods": ["GET"], "limits": "2/minute"}]})
    app = Flask(__name__)
    Limiter(get_remote_address, app=app, engine=engine(), config=config)
    runs: list[str] = []

    @app.route("/report")
    def report() -> str:
        runs.append("report")
        return "expensive report"

    client = app.test_client()
    first = client.head("/report")
    assert first.status_code == 200
    assert first.headers["RateLimit-Policy"] == '"/report";q=2;w=60'
    assert first.headers["RateLimit"] == '"/report";r=1;t=120'
    assert client.get("/report").headers["RateLimit"] == '"/report";r=0;t=120'
    assert [client.head("/report").status_code for _ in range(3)] == [429, 429, 429]
    assert client.get("/report").status_code == 429
    assert runs == ["report", "report"]


def test_a_limit_written_for_get_counts_head_requests_too() -> None:
    app = Flask(__name__)
    limiter = Limiter(get_remote_address, app=app, engine=engine())
    runs: list[str] = []

    @app.route("/report")
    @limiter.limit("2/minute", methods=["GET"])
    def report() -> str:
        runs.append("report")
        return "expensive report"

    @app.route("/per-method", methods=["GET", "POST"])
    @limiter.limit("1/minute", per_method=True)
    def per_method() -> str:
        return "ok"

    client = app.test_client()
    assert [client.head("/report").status_code for _ in range(3)] == [200, 200, 429]
    assert client.get("/report").status_code == 429
    assert runs == ["report", "report"]
    # per_method counts GET and POST apart; a HEAD is the GET it stands for.
    assert client.head("/per-method").status_code == 200
    assert client.get("/per-method").status_code == 429
    assert client.post("/per-method").status_code == 200


def test_a_view_with_two_url_rules_gets_the_entry_of_the_rule_requested() -> None:
    config = parse_config(
        {
            "defaults": {"limits": "100/minute"},
            "routes": [{"path": "/users/<int:page>", "limits": "2/minute"}],
        }
    )
    app = Flask(__name__)
    Limiter(get_remote_address, app=app, engine=engine(), config=config)

    @app.route("/users/", defaults={"page": 1})
    @app.route("/users/<int:page>")
    def users(page: int) -> str:
        return str(page)

    client = app.test_client()
    # The rule without an entry is requested first: the other keeps its own entry all the same.
    listing = client.get("/users/")
    assert listing.status_code == 200
    assert listing.headers["RateLimit-Policy"] == '"default";q=100;w=60'
    paged = [client.get("/users/9") for _ in range(3)]
    assert [r.status_code for r in paged] == [200, 200, 429]
    assert paged[0].headers["RateLimit-Policy"] == '"/users/<int:page>";q=2;w=60'
    assert client.get("/users/").headers["RateLimit"] == '"default";r=98;t=120'
