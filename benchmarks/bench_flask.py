"""Per-request cost of rate limiting a minimal Flask view, against Flask-Limiter.

    python benchmarks/bench_flask.py [--quick] [--server any|redis|valkey]

Each contender is a Flask app answering one fresh WSGI environ per call
through ``app.wsgi_app``: routing, the extension's hooks and the view all
run, in this process. The client address changes with every request (1000
addresses in turn) and the one limit, on the client address, is far above
what the run uses, so every timed request is allowed (the warm-up checks it).

- *bare Flask*: no rate limiting; every other row is reported as what it
  adds to it;
- *bisman*: ``bisman_ratelimit_flask.Limiter(get_remote_address,
  default_limits=[...])`` on ``memory://`` and on Redis (its default IETF
  ``RateLimit`` header fields on);
- *Flask-Limiter*: the same code with ``flask_limiter`` imports, on
  ``memory://`` and on the same Redis (its default: no headers), with the
  fixed window, its default strategy;
- *3 limits*: both on Redis with an application limit and two default
  limits, which Flask-Limiter checks one after the other.

Rounds interleave the contenders in rotating order; each figure is the
median of its rounds (CPU time of this process per request, which a busy
machine disturbs far less than wall time; on Redis it leaves out the wait
for the server), and the overhead the median of the per-round differences
with the bare app. Round trips are the commands redis-py sends
(pipelines count once) per request. Goal: on memory, at most 0.2 x
Flask-Limiter's overhead; on Redis, one round trip per request.

Needs the ``bench`` extra: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from time import process_time
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis.connection
from _common import machine_summary, markdown_table, private_server, progress, source_revision, us
from flask import Flask

AMOUNT = 1_000_000
ADDRESSES = [f"10.{i // 250}.{i % 250}.1" for i in range(1000)]
TARGET_RATIO = 0.2
PLANS = {"full": (15, 4000), "quick": (5, 1500)}


def bare_app() -> Flask:
    app = Flask("bare")

    @app.route("/")
    def index() -> str:
        return "ok"

    return app


def limits(many: bool) -> dict[str, Any]:
    """One limit on the client address; or three: an application limit and two defaults."""
    if not many:
        return {"default_limits": [f"{AMOUNT} per minute"]}
    return {
        "default_limits": [f"{AMOUNT} per minute", f"{AMOUNT} per hour"],
        "application_limits": [f"{AMOUNT} per day"],
    }


def bisman_app(storage_uri: str, many: bool = False) -> Flask:
    from bisman_ratelimit_flask import Limiter
    from bisman_ratelimit_flask.util import get_remote_address

    app = Flask("bisman")
    Limiter(get_remote_address, app=app, storage_uri=storage_uri, **limits(many))

    @app.route("/")
    def index() -> str:
        return "ok"

    return app


def flask_limiter_app(storage_uri: str, many: bool = False) -> Flask:
    from flask_limiter import Limiter
    from flask_limiter.util import get_remote_address

    app = Flask("flask_limiter")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Limiter(get_remote_address, app=app, storage_uri=storage_uri, **limits(many))

    @app.route("/")
    def index() -> str:
        return "ok"

    return app


def caller(app: Flask) -> Callable[[str], int]:
    """One request to ``app`` from ``address``; its status."""
    base = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "SERVER_NAME": "bench",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "bench",
        "wsgi.url_scheme": "http",
        "wsgi.input": None,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }
    wsgi = app.wsgi_app
    status: list[str] = []

    def start_response(line: str, headers: Any, exc_info: Any = None) -> None:
        status.append(line)

    def call(address: str) -> int:
        environ = base.copy()
        environ["REMOTE_ADDR"] = address
        body = wsgi(environ, start_response)
        for _ in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()
        return int(status.pop()[:3])

    return call


@contextmanager
def counted_sends() -> Iterator[list[int]]:
    """Count the commands (or pipelines) redis-py sends: the round trips."""
    sent = [0]
    original = redis.connection.Connection.send_packed_command

    def send(self: Any, command: Any, check_health: bool = True) -> None:
        sent[0] += 1
        original(self, command, check_health)

    redis.connection.Connection.send_packed_command = send  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        redis.connection.Connection.send_packed_command = original  # type: ignore[method-assign]


def timed(call: Callable[[str], int], calls: int) -> float:
    addresses = [ADDRESSES[i % len(ADDRESSES)] for i in range(calls)]
    gc.collect()
    # CPU time of this process: on a shared machine, wall time mostly measures the neighbours.
    start = process_time()
    for address in addresses:
        call(address)
    return (process_time() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--server", default="any", choices=["any", "redis", "valkey"])
    args = parser.parse_args()
    rounds, calls = PLANS["quick" if args.quick else "full"]
    with private_server(args.server) as server:
        url = server.url
        contenders = {
            "bare Flask": caller(bare_app()),
            "bisman, memory": caller(bisman_app("memory://")),
            "Flask-Limiter, memory": caller(flask_limiter_app("memory://")),
            "bisman, Redis": caller(bisman_app(url)),
            "Flask-Limiter, Redis": caller(flask_limiter_app(url)),
            "bisman, Redis, 3 limits": caller(bisman_app(url, many=True)),
            "Flask-Limiter, Redis, 3 limits": caller(flask_limiter_app(url, many=True)),
        }
        trips: dict[str, float] = {}
        for name, call in contenders.items():
            for address in ADDRESSES:
                if call(address) != 200:
                    raise SystemExit(f"{name}: a warm-up request was refused")
            with counted_sends() as sent:
                for address in ADDRESSES:
                    call(address)
            trips[name] = sent[0] / len(ADDRESSES)
        names = list(contenders)
        samples: dict[str, list[float]] = {name: [] for name in names}
        for index in range(rounds):
            progress(f"round {index + 1}/{rounds}")
            order = names[index % len(names) :] + names[: index % len(names)]
            for name in order:
                samples[name].append(timed(contenders[name], calls))
        bare = samples["bare Flask"]

        def overhead(name: str) -> float:
            return statistics.median(s - b for s, b in zip(samples[name], bare, strict=True))

        rows = []
        for name in names:
            extra = "" if name == "bare Flask" else us(overhead(name))
            rows.append([name, us(statistics.median(samples[name])), extra, f"{trips[name]:g}"])
        print(markdown_table(["app", "CPU µs per request", "overhead µs", "round trips"], rows))
        ratio = overhead("bisman, memory") / overhead("Flask-Limiter, memory")
        print()
        print(
            f"memory: bisman's overhead is {ratio:.2f} x Flask-Limiter's (goal <= {TARGET_RATIO}); "
            f"Redis: {trips['bisman, Redis']:g} round trip per request"
        )
        print(f"{rounds} rounds x {calls} requests; {machine_summary()}; {source_revision()}")


if __name__ == "__main__":
    main()
