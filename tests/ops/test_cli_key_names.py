"""Key names as the reports print them: one line each, cut when very long, and read back by ``inspect``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import redis

from bisman_ratelimit.ops._grouping import read_key, show_key
from bisman_ratelimit.ops.cli import main

BINARY = b"rl:user:\xff\xfebin"
FORGED = b"chat:ctx:thread:1\nPOLICY VIOLATION: forged line"
LONG = b"rl:user:" + b"L" * 100_000


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        (b"rl:user:{u1}:api:/calls:s1m", "rl:user:{u1}:api:/calls:s1m"),
        (BINARY, "rl:user:\\xff\\xfebin"),
        (FORGED, "chat:ctx:thread:1\\nPOLICY VIOLATION: forged line"),
        (b"a\\xffb", "a\\\\xffb"),  # a backslash of its own is doubled: not the byte 0xff
        (b"tab\t\r\x00\x7f", "tab\\t\\r\\x00\\x7f"),
        ("rtl\u202eok\u00e9\u0085".encode(), "rtl\\u202eok\u00e9\\u0085"),
    ],
)
def test_a_key_is_shown_on_one_line_and_read_back(key: bytes, shown: str) -> None:
    assert show_key(key) == shown
    assert read_key(shown) == key


def test_a_long_name_is_cut_with_a_marker() -> None:
    assert show_key(LONG, limit=20) == "rl:user:LLLLLLLLLLLL...[99988 more]"
    assert show_key(b"rl:user:1", limit=20) == "rl:user:1"


def test_a_backslash_that_starts_no_escape_stays_and_a_bad_code_point_is_refused() -> None:
    assert read_key("C:\\path") == b"C:\\path"
    with pytest.raises(ValueError, match=r"bad key 'k\\\\ud800': \\ud800 names no character"):
        read_key("k\\ud800")


@pytest.fixture
def odd_keys(redis_client: redis.Redis) -> redis.Redis:
    redis_client.set(FORGED, b"x" * 5000)  # no TTL in an ephemeral namespace
    redis_client.set(BINARY, 1)  # not UTF-8, no TTL
    redis_client.set(LONG, 1, ex=100)
    return redis_client


def test_audit_prints_each_key_on_one_line_and_cuts_long_ones(
    odd_keys: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "audit", "cardinality", "--url", redis_url)
    assert code == 1
    lines = out.splitlines()
    violation = lines.index("POLICY VIOLATION: 2 keys without a TTL in ephemeral namespaces, e.g.:")
    assert sorted(lines[violation + 1 : violation + 3]) == [
        "  chat:ctx:thread:1\\nPOLICY VIOLATION: forged line",
        "  rl:user:\\xff\\xfebin",
    ]
    assert lines[violation + 3] == ""
    assert [line for line in lines if line.startswith("POLICY")] == [lines[violation]]
    biggest = lines[lines.index("Biggest keys") + 3 :]
    assert biggest[0].startswith("rl:user:" + "L" * 112 + "...[99888 more]  ")
    assert max(len(line) for line in lines) < 200


def test_inspect_opens_a_key_as_the_audit_printed_it(
    odd_keys: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "inspect", "--url", redis_url, "rl:user:\\xff\\xfebin")
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == "key        rl:user:\\xff\\xfebin"
    code, out, _ = run(
        capsys, "inspect", "--url", redis_url, "chat:ctx:thread:1\\nPOLICY VIOLATION: forged line"
    )
    assert code == 0
    assert out.splitlines()[:2] == [
        "key        chat:ctx:thread:1\\nPOLICY VIOLATION: forged line",
        "type       string (raw)",
    ]
    code, _, err = run(capsys, "inspect", "--url", redis_url, "rl:user:\\xfe")
    assert code == 1
    assert err == f"bisman-ratelimit: no such key 'rl:user:\\xfe' on {redis_url}\n"


def test_inspect_takes_the_raw_bytes_of_argv(odd_keys: redis.Redis, redis_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bisman_ratelimit", "inspect", BINARY, "--url", redis_url],
        capture_output=True,
        env={**os.environ, "PYTHONUTF8": "1"},
    )
    assert (done.returncode, done.stderr) == (0, b"")
    assert done.stdout.splitlines()[0] == b"key        rl:user:\\xff\\xfebin"
