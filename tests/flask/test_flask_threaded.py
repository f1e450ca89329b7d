"""The plugin under werkzeug's threaded server, with many clients at once, on memory and Redis."""

from __future__ import annotations

import http.client
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

from bisman_ratelimit_flask import Limiter
from bisman_ratelimit_flask.util import get_remote_address

CLIENTS = 40
REQUESTS_EACH = 5


def build_app(storage_uri: str) -> Flask:
    app = Flask(__name__)
    limiter = Limiter(
        get_remote_address,
        app=app,
        storage_uri=storage_uri,
        default_limits=["1000 per hour"],
        application_limits=["5000 per hour"],
    )

    @app.route("/scarce")
    @limiter.limit("37 per hour")
    def scarce() -> str:
        return "ok"

    @app.route("/plenty")
    @limiter.limit("1000 per hour", override_defaults=False)
    def plenty() -> str:
        return "ok"

    return app


@pytest.fixture
def server(backend: tuple[str, str | None]) -> Iterator[BaseWSGIServer]:
    served = make_server("127.0.0.1", 0, build_app(backend[1] or "memory://"), threaded=True)
    thread = threading.Thread(target=served.serve_forever, daemon=True)
    thread.start()
    yield served
    served.shutdown()
    thread.join()


def _statuses(port: int, path: str) -> list[int]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        statuses = []
        for _ in range(REQUESTS_EACH):
            connection.request("GET", path, headers={"Connection": "close"})
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
            connection.close()
        return statuses
    finally:
        connection.close()


def _storm(port: int, path: str) -> Counter[int]:
    barrier = threading.Barrier(CLIENTS)

    def one_client() -> list[int]:
        barrier.wait()
        return _statuses(port, path)

    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(lambda _: one_client(), range(CLIENTS)))
    return Counter(status for statuses in results for status in statuses)


def _stats_after(client: redis.Redis, evalsha: int) -> dict[str, dict[str, int]]:
    """INFO commandstats once it shows ``evalsha`` calls: a server with I/O threads may add
    the last replies' commands to its statistics a moment after sending them."""
    for _ in range(100):
        stats: dict[str, dict[str, int]] = client.info("commandstats")
        if stats.get("cmdstat_evalsha", {}).get("calls", 0) >= evalsha:
            break
    return stats


def test_many_concurrent_clients_get_exactly_the_limit(server: BaseWSGIServer) -> None:
    counts = _storm(server.port, "/scarce")
    assert counts == {200: 37, 429: CLIENTS * REQUESTS_EACH - 37}


@pytest.mark.redis
def test_every_limit_of_a_request_in_one_round_trip(redis_url: str, redis_client: redis.Redis) -> None:
    # /plenty has three limits (the application's, the defaults and its own): one EVALSHA for all.
    served = make_server("127.0.0.1", 0, build_app(redis_url), threaded=True)
    thread = threading.Thread(target=served.serve_forever, daemon=True)
    thread.start()
    try:
        _statuses(served.port, "/plenty")  # the script is loaded once, before counting
        redis_client.config_resetstat()
        counts = _storm(served.port, "/plenty")
        stats = _stats_after(redis_client, CLIENTS * REQUESTS_EACH)
    finally:
        served.shutdown()
        thread.join()
    assert counts == {200: CLIENTS * REQUESTS_EACH}
    calls = {name: int(stats[name]["calls"]) for name in stats if name.startswith("cmdstat_")}
    calls.pop("cmdstat_info", None)
    calls.pop("cmdstat_config|resetstat", None)
    # New connections, opened when more requests ran at once than the pool held: per connection,
    # not per request.
    opened = calls.pop("cmdstat_hello", 0)
    assert opened <= CLIENTS
    assert calls.pop("cmdstat_client|setinfo", 0) <= 2 * opened
    requests = CLIENTS * REQUESTS_EACH
    # One EVALSHA per request; the rest runs inside it, on the server: its clock, one read of the
    # three counters, one write each.
    assert calls == {
        "cmdstat_evalsha": requests,
        "cmdstat_time": requests,
        "cmdstat_mget": requests,
        "cmdstat_set": 3 * requests,
    }
