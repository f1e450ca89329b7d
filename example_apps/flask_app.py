"""A small Flask app protected by bisman-ratelimit, written as a Flask-Limiter app would be.

Run it on the in-memory default::

    flask --app example_apps/flask_app.py run --port 8000

or on Redis::

    BISMAN_RATELIMIT_STORAGE_URL=redis://127.0.0.1:6379/0 flask --app example_apps/flask_app.py run

Then ``curl -i localhost:8000/fast`` shows the ``RateLimit-Policy`` and
``RateLimit`` fields; past the defaults (2 a minute, 1 a second, both
sliding windows: a second request a second later may still be refused) a
request gets a 429 with a problem+json body and ``Retry-After``.
"""

from __future__ import annotations

from flask import Blueprint, Flask, request

from bisman_ratelimit.web import storage_url_from_env
from bisman_ratelimit_flask import Limiter
from bisman_ratelimit_flask.util import get_remote_address

app = Flask(__name__)
limiter = Limiter(
    get_remote_address,
    app=app,
    default_limits=["2 per minute", "1 per second"],
    storage_uri=storage_url_from_env("memory://"),
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


@app.route("/login", methods=["POST"])
@limiter.limit("5 per minute", deduct_when=lambda response: response.status_code == 401)
def login() -> tuple[str, int]:
    # Only failed logins count against the limit.
    return ("welcome", 200) if request.form.get("password") == "demo" else ("wrong password", 401)


api = Blueprint("api", __name__, url_prefix="/api")


@api.route("/items")
def items() -> dict[str, list[int]]:
    return {"items": [1, 2, 3]}


limiter.limit("10 per minute")(api)
app.register_blueprint(api)
