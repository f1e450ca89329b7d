"""Limits files that are too deep or too large end in one ConfigFileError naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from bisman_ratelimit import ConfigFileError
from bisman_ratelimit.ops.cli import main
from bisman_ratelimit.web import load_config, parse_config
from bisman_ratelimit.web._config import MAX_CONFIG_BYTES


def deep_toml(depth: int) -> str:
    return "x = " + "[" * depth + "]" * depth + "\n"


def deep_yaml(depth: int) -> str:
    return "x: " + "[" * depth + "]" * depth + "\n"


@pytest.mark.parametrize(
    ("suffix", "text"),
    [
        (".toml", deep_toml(2000)),
        (".yaml", deep_yaml(500)),
        (".yml", deep_yaml(5000)),
        (".toml", deep_toml(40)),
    ],
)
def test_a_deeply_nested_file_is_one_config_error(tmp_path: Path, suffix: str, text: str) -> None:
    path = tmp_path / f"limits{suffix}"
    path.write_text(text)
    with pytest.raises(ConfigFileError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: nested more than 32 levels deep: not a limits file"


def test_a_nested_dict_written_in_code_is_refused_too() -> None:
    data: dict[str, object] = {}
    inner = data
    for _ in range(100):
        inner["x"] = {}
        inner = inner["x"]  # type: ignore[assignment]
    with pytest.raises(ConfigFileError, match="<dict>: nested more than 32 levels deep"):
        parse_config(data)


def test_a_file_over_the_size_cap_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "limits.toml"
    path.write_bytes(b"#" * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(ConfigFileError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: larger than 1048576 bytes: not a limits file"


def test_a_file_at_the_size_cap_is_read(tmp_path: Path) -> None:
    path = tmp_path / "limits.toml"
    path.write_bytes(b"#" * MAX_CONFIG_BYTES)
    assert load_config(path).routes == ()


def test_config_check_prints_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "limits.toml"
    path.write_text(deep_toml(2000))
    assert main(["config", "check", str(path)]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err == f"bisman-ratelimit: error: {path}: nested more than 32 levels deep: not a limits file\n"
