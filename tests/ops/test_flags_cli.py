"""``bisman-ratelimit flags``: set, get, list, delete on a real server."""

from __future__ import annotations

import json

import pytest
import redis

from bisman_ratelimit.ops.cli import main
from bisman_ratelimit.stores import Flag, FlagAdmin


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["flags", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_set_get_list_delete(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "set", "darkMode", "on", "--type", "bool", "--url", redis_url) == (
        0,
        "darkMode = true (bool)\n",
        "",
    )
    assert run(capsys, "set", "limits", '{"max": 3}', "--type", "json", "--url", redis_url)[0] == 0
    assert run(capsys, "set", "theme", "dark blue", "--type", "str", "--url", redis_url)[0] == 0
    # An existing flag keeps its type.
    assert run(capsys, "set", "darkMode", "off", "--url", redis_url) == (0, "darkMode = false (bool)\n", "")

    assert run(capsys, "get", "theme", "--url", redis_url) == (0, '"dark blue"\n', "")
    assert run(capsys, "get", "darkMode", "--url", redis_url) == (0, "false\n", "")
    assert run(capsys, "list", "--url", redis_url) == (
        0,
        'darkMode\tbool\tfalse\nlimits\tjson\t{"max": 3}\ntheme\tstr\t"dark blue"\n',
        "",
    )
    code, out, _ = run(capsys, "list", "--json", "--url", redis_url)
    assert code == 0 and json.loads(out)["limits"] == {"type": "json", "value": {"max": 3}}

    assert run(capsys, "delete", "theme", "--url", redis_url) == (0, "deleted theme\n", "")
    with redis.Redis.from_url(redis_url) as client:
        assert FlagAdmin(client).all() == {
            "darkMode": Flag("darkMode", "bool", False),
            "limits": Flag("limits", "json", {"max": 3}),
        }


def test_errors(redis_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert run(capsys, "get", "nope", "--url", redis_url) == (
        1,
        "",
        "bisman-ratelimit: error: no flag named 'nope' in 'flags:config'\n",
    )
    assert run(capsys, "delete", "nope", "--url", redis_url)[2].endswith(
        "no flag named 'nope' in 'flags:config'\n"
    )
    # Bad arguments exit 2; a flag that is not there is a failed lookup, 1.
    assert run(capsys, "set", "new", "1", "--url", redis_url) == (
        2,
        "",
        "bisman-ratelimit: error: 'new' is a new flag: give its type with --type {bool,str,json}\n",
    )
    assert run(capsys, "set", "b", "maybe", "--type", "bool", "--url", redis_url) == (
        2,
        "",
        "bisman-ratelimit: error: bad bool flag value 'maybe': use true/false, on/off, yes/no or 1/0\n",
    )
    assert run(capsys, "list", "--url", "memory://") == (
        2,
        "",
        "bisman-ratelimit: error: flags commands need a Redis URL: memory:// lives inside one process\n",
    )
    monkeypatch.delenv("BISMAN_RATELIMIT_STORAGE_URL", raising=False)
    assert run(capsys, "list") == (
        2,
        "",
        "bisman-ratelimit: error: give --url redis://host:port/db (or set BISMAN_RATELIMIT_STORAGE_URL)\n",
    )
    with pytest.raises(SystemExit):
        main(["flags", "set", "x", "1", "--type", "int", "--url", redis_url])
    assert "invalid choice: 'int'" in capsys.readouterr().err


def test_unreachable_server(capsys: pytest.CaptureFixture[str]) -> None:
    from bisman_ratelimit.testing import free_port

    code, out, err = run(capsys, "list", "--url", f"redis://127.0.0.1:{free_port()}/0")
    assert (code, out) == (1, "")
    assert err.startswith("bisman-ratelimit: error: Redis is unavailable: ")


def test_list_shows_a_foreign_field_and_keeps_the_flags(
    redis_url: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "set", "beta", "on", "--type", "bool", "--url", redis_url)[0] == 0
    redis_client.hset("flags:config", "darkMode", "true")
    assert run(capsys, "list", "--url", redis_url) == (
        0,
        "beta\tbool\ttrue\n",
        "darkMode: not written by bisman-ratelimit, skipped by flag readers: 'true'\n",
    )
    assert run(capsys, "get", "beta", "--url", redis_url) == (0, "true\n", "")
