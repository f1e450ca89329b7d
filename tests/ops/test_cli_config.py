"""``bisman-ratelimit config check`` and ``config docs``: output and exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bisman_ratelimit.ops.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "example_apps"

SMALL = """\
[defaults]
limits = "100/minute"

[global]
limits = "10000/minute"

[[routes]]
path = "/auth/login"
methods = ["POST"]
limits = ["5/minute", "20/hour"]
deduct_when = { status = [403, 401] }
description = "Failed logins | per client IP"

[[routes]]
path = "/api/calls"
methods = ["post", "PUT"]
limits = "30/minute"
algorithm = "token_bucket"
key = "user"
cost = 2
shadow = true
exempt = { ips = ["10.0.0.0/8", "::1"], users = ["admin", "ops"] }

[[routes]]
path = "/health"
exempt = true
description = "Load balancer probe"
"""

SMALL_DOCS = """\
# Rate limit tuning

<!-- Generated from ratelimits.toml by `bisman-ratelimit config docs`. Edit ratelimits.toml, then \
regenerate. -->

| route | methods | limits | algorithm | key | cost | shadow | exemptions | description |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
| (defaults) | any | 100/minute | sliding_window | ip | 1 | no | none | Routes not listed below, and every \
field a route leaves out |
| (global) | any | 10000/minute | fixed_window | one counter | 1 | no | none | Shared by every request, \
checked before the route's own limits |
| `/auth/login` | POST | 5/minute; 20/hour | sliding_window | ip | 1 on status 401, 403 | no | none | \
Failed logins \\| per client IP |
| `/api/calls` | POST, PUT | 30/minute | token_bucket | user | 2 | yes | ips 10.0.0.0/8, ::1/128; users \
admin, ops |  |
| `/health` | any | - | - | - | - | - | all (never limited) | Load balancer probe |
"""


SUMMARY_TAIL = "defaults 100/minute (sliding_window by ip), global 10000/minute (fixed_window)"


@pytest.fixture
def small(tmp_path: Path) -> Path:
    path = tmp_path / "ratelimits.toml"
    path.write_text(SMALL, encoding="utf-8")
    return path


def test_check_prints_one_line_summary(small: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(small)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{small}: OK: 3 routes, {SUMMARY_TAIL}\n"
    assert err == ""


def test_check_summary_without_defaults_or_global(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "one.yaml"
    path.write_text("routes:\n  - path: /a\n    limits: 1/second\n", encoding="utf-8")
    assert main(["config", "check", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: OK: 1 route, no default limit, no global limit\n"


def test_check_reports_invalid_file_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ratelimits.toml"
    path.write_text('[[routes]]\npath = "/a"\nlimts = "1/minute"\n', encoding="utf-8")
    assert main(["config", "check", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"bisman-ratelimit: error: {path}: routes[0] (/a): unknown field 'limts' (did you mean 'limits'?); "
        "allowed: path, methods, limits, algorithm, key, cost, shadow, exempt, deduct_when, description\n"
    )


def test_check_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "missing.toml"
    assert main(["config", "check", str(path)]) == 1
    assert capsys.readouterr().err == f"bisman-ratelimit: error: {path}: file not found\n"


def test_check_the_example_config(capsys: pytest.CaptureFixture[str]) -> None:
    path = EXAMPLES / "ratelimits.toml"
    assert main(["config", "check", str(path)]) == 0
    assert capsys.readouterr().out == (
        f"{path}: OK: 6 routes, {SUMMARY_TAIL}\n"
        "warning: routes[2] (POST /chat/threads/{thread_id}/messages): the window of 300/hour (3600 s) "
        "outlives the TTL of its namespace rl:user (300 s); the window wins: the limiter sets each key's TTL "
        "from its window, so these keys live longer than rl:user's policy says\n"
    )


def test_docs_prints_the_table(small: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "docs", str(small)]) == 0
    assert capsys.readouterr().out == SMALL_DOCS


def test_docs_defaults_without_limits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "limits.toml"
    path.write_text(
        '[defaults]\nexempt = { users = ["ops"] }\n\n'
        '[[routes]]\npath = "users/<int:id>/"\nlimits = "1/5 seconds"\n',
        encoding="utf-8",
    )
    assert main(["config", "docs", str(path)]) == 0
    table = capsys.readouterr().out.splitlines()[-2:]
    assert table == [
        "| (defaults) | any | none | - | - | - | - | users ops | "
        "Routes not listed below, and every field a route leaves out |",
        "| `users/<int:id>/` | any | 1/5 seconds | sliding_window | ip | 1 | no | users ops |  |",
    ]


def test_docs_writes_output_file(small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "RATE_LIMIT_TUNING.md"
    assert main(["config", "docs", str(small), "-o", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == SMALL_DOCS
    assert capsys.readouterr().out == f"wrote {out} from {small}\n"


def test_docs_output_into_missing_directory(
    small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "no" / "such" / "dir.md"
    assert main(["config", "docs", str(small), "--output", str(out)]) == 1
    assert (
        capsys.readouterr().err == f"bisman-ratelimit: error: cannot write {out}: No such file or directory\n"
    )


def test_docs_check_up_to_date(small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "RATE_LIMIT_TUNING.md"
    out.write_text(SMALL_DOCS, encoding="utf-8")
    assert main(["config", "docs", str(small), "--check", str(out)]) == 0
    assert capsys.readouterr().out == f"{out} is up to date with {small}\n"


def test_docs_check_out_of_date(small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "RATE_LIMIT_TUNING.md"
    out.write_text(SMALL_DOCS.replace("30/minute", "60/minute"), encoding="utf-8")
    assert main(["config", "docs", str(small), "--check", str(out)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert lines[0] == (
        f"bisman-ratelimit: {out} is out of date with {small}; "
        f"run: bisman-ratelimit config docs {small} -o {out}"
    )
    assert lines[1:3] == [f"--- {out}", f"+++ {out} (expected)"]
    assert [line[:41] for line in lines if line[:1] in "+-" and not line.startswith(("---", "+++"))] == [
        "-| `/api/calls` | POST, PUT | 60/minute |",
        "+| `/api/calls` | POST, PUT | 30/minute |",
    ]
    # Checking never rewrites the file.
    assert "60/minute" in out.read_text(encoding="utf-8")


def test_docs_check_missing_output(small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "RATE_LIMIT_TUNING.md"
    assert main(["config", "docs", str(small), "--check", str(out)]) == 1
    assert capsys.readouterr().err == (
        f"bisman-ratelimit: {out} does not exist; run: bisman-ratelimit config docs {small} -o {out}\n"
    )
    assert not out.exists()


def test_docs_invalid_config_fails_before_writing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ratelimits.toml"
    path.write_text('[global]\nlimits = "lots"\n', encoding="utf-8")
    out = tmp_path / "out.md"
    assert main(["config", "docs", str(path), "-o", str(out)]) == 1
    assert capsys.readouterr().err.startswith(
        f"bisman-ratelimit: error: {path}: global: field 'limits': invalid rate limit 'lots': expected "
    )
    assert not out.exists()


def test_docs_output_and_check_are_exclusive(small: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["config", "docs", str(small), "-o", "a.md", "--check", "b.md"])
    assert info.value.code == 2
    assert "argument --check: not allowed with argument -o/--output" in capsys.readouterr().err


def test_config_needs_a_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["config"])
    assert info.value.code == 2
    assert "the following arguments are required: SUBCOMMAND" in capsys.readouterr().err


def test_example_tuning_doc_matches_example_config(capsys: pytest.CaptureFixture[str]) -> None:
    config, doc = EXAMPLES / "ratelimits.toml", EXAMPLES / "RATE_LIMIT_TUNING.md"
    assert main(["config", "docs", str(config), "--check", str(doc)]) == 0, capsys.readouterr().err


def test_installed_console_script(small: Path, tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "bisman-ratelimit"
    ok = subprocess.run(
        [str(script), "config", "check", str(small)], capture_output=True, text=True, check=False
    )
    assert (ok.returncode, ok.stderr) == (0, "")
    assert ok.stdout.startswith(f"{small}: OK: 3 routes")

    bad = tmp_path / "bad.toml"
    bad.write_text('[defaults]\nlimits = "1/minute"\nkey = ip\n', encoding="utf-8")
    failed = subprocess.run(
        [str(script), "config", "check", str(bad)], capture_output=True, text=True, check=False
    )
    assert failed.returncode == 1
    assert failed.stdout == ""
    assert failed.stderr.startswith(f"bisman-ratelimit: error: {bad}: invalid TOML: ")
    assert "(at line 3, column " in failed.stderr
