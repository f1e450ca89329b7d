"""``--url`` as the commands read and print it: passwords masked, bad URLs refused in one line, unix://."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest
import redis

from bisman_ratelimit.ops.cli import main
from bisman_ratelimit.testing import RedisServer, free_port


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_sentinel_password_in_the_query_is_masked(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    for argv in (["doctor", "--memory-limit", "1Gi"], ["flags", "list"], ["inspect", "k"]):
        url = f"redis+sentinel://127.0.0.1:{port}/cache?sentinel_password=TOPSECRET1"
        assert run(capsys, *argv, "--url", url) == (
            1,
            "",
            f"bisman-ratelimit: error: no Sentinel of redis+sentinel://127.0.0.1:{port}/cache"
            "?sentinel_password=*** answered with a master named 'cache': "
            "check that the Sentinels run and that the name after the hosts is the master's\n",
        )
    # A Redis server given as the Sentinel.
    url = redis_url.replace("redis://", "redis+sentinel://").replace(
        "/0", "/cache?sentinel_password=TOPSECRET1"
    )
    code, out, err = run(capsys, "failover", "--url", url)
    assert (code, out) == (2, "")
    shown = url.replace("TOPSECRET1", "***")
    assert err.startswith(
        f"bisman-ratelimit: error: failover needs a Sentinel, and {shown} is a Redis server (standalone)"
    )


@pytest.fixture(scope="module")
def locked_server() -> Iterator[RedisServer]:
    with RedisServer(args=("--requirepass", "TOP@SECRET2")) as server:
        yield server


@pytest.mark.redis
def test_a_password_with_an_at_sign_is_masked_whole(
    locked_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    port = locked_server.port
    code, out, err = run(
        capsys, "doctor", "--memory-limit", "1Gi", "--url", f"redis://:TOP@SECRET2@127.0.0.1:{port}/0"
    )
    assert (code, err) == (1, "")
    assert out.splitlines()[0] == f"doctor: redis://:***@127.0.0.1:{port}/0"
    assert "SECRET" not in out
    assert run(capsys, "inspect", "k", "--url", f"redis://:no@pe@127.0.0.1:{port}/0") == (
        2,
        "",
        f"bisman-ratelimit: error: the server at redis://:***@127.0.0.1:{port}/0 refused the user name and "
        f"password in the URL: check them (redis://USERNAME:PASSWORD@127.0.0.1:{port}/0, or "
        f"redis://:PASSWORD@127.0.0.1:{port}/0 for the default user)\n",
    )
    code, _, err = run(capsys, "inspect", "k", "--url", f"redis://127.0.0.1:{port}/0?password=WRONG3")
    assert code == 2
    assert "WRONG3" not in err
    assert err.startswith(
        f"bisman-ratelimit: error: the server at redis://127.0.0.1:{port}/0?password=*** refused"
    )


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (
            "redis://:s3cret@[::1:6390/0",
            "it cannot be read (Invalid IPv6 URL): an IPv6 address goes in brackets, e.g. redis://[::1]:6380/0",
        ),
        ("redis+sentinel://:s3cret@[::1:6390/cache", "it cannot be read (Invalid IPv6 URL)"),
        (
            "redis://:s3cret@127.0.0.1:6390/0?socket_timout=1",
            "unknown query parameter 'socket_timout' (did you mean socket_timeout?); accepted: ",
        ),
        (
            "redis://:s3cret@127.0.0.1:6390/0?foo=bar",
            "unknown query parameter 'foo'; accepted: blocked_cache, ",
        ),
    ],
)
def test_a_malformed_url_is_one_line_and_exit_2(
    url: str, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (
        ["doctor", "--memory-limit", "1Gi"],
        ["inspect", "k"],
        ["flags", "list"],
        ["failover", "--master", "m"],
    ):
        code, out, err = run(capsys, *argv, "--url", url)
        assert (code, out) == (2, ""), argv
        masked = url.replace(":s3cret@", ":***@")
        assert err.startswith(f"bisman-ratelimit: error: --url: bad storage URL {masked!r}: {problem}"), err
        assert err.count("\n") == 1 and "s3cret" not in err


@pytest.fixture(scope="module")
def unix_server() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "redis.sock")
        with RedisServer(args=("--unixsocket", path, "--unixsocketperm", "700")):
            yield path


@pytest.mark.redis
def test_the_commands_take_a_unix_socket_url(unix_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    with redis.Redis(unix_socket_path=unix_server, db=2) as client:
        client.set("chat:ctx:thread:1", "x", ex=120)
    url = f"unix://{unix_server}?db=2&timeout=50ms"
    code, out, err = run(capsys, "inspect", "chat:ctx:thread:1", "--url", url)
    assert (code, err) == (0, "")
    assert out.splitlines()[-2:] == ["namespace  chat:ctx", "policy     follows its namespace's TTL policy"]
    code, out, _ = run(capsys, "audit", "cardinality", "--url", url)
    assert code == 0
    assert out.splitlines()[0] == f"{url}: scanned all 1 keys"
    assert run(capsys, "flush", "--namespace", "chat:ctx", "--yes", "--url", url)[0] == 0
    with redis.Redis(unix_socket_path=unix_server, db=2) as client:
        assert client.dbsize() == 0
