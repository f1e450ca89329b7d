"""The admin panel in the Django admin site, on memory and Redis.

The admin site needs a database and its own apps, so the panel runs in a
child process with admin_panel_settings.py; admin_panel_child.py drives it
with Django's test client and prints what it saw.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
# Sliding logs count exactly the last minute: no window boundary can reset them mid-test.
LIMITS = """
[global]
limits = "8/minute"
algorithm = "sliding_log"

[[routes]]
path = "/api/items"
limits = "2/minute"
algorithm = "sliding_log"
key = "ip"
"""


@pytest.fixture
def seen(backend: tuple[str, str | None], tmp_path: Path) -> dict[str, object]:
    # On Redis, a budget a loaded test machine always meets.
    url = "memory://" if backend[1] is None else backend[1] + "?timeout=2s"
    result = run_child("admin_panel_child.py", tmp_path, PANEL_STORAGE_URL=url)
    result["url"] = url
    return result


def run_child(script: str, tmp_path: Path, **env: str) -> dict[str, object]:
    """What ``script`` (a child process with the panel's Django project and LIMITS) printed."""
    config = tmp_path / "limits.toml"
    config.write_text(LIMITS)
    done = subprocess.run(
        [sys.executable, str(HERE / script)],
        env={
            **os.environ,
            **env,
            "PANEL_CONFIG": str(config),
            "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path]),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_the_django_panel(seen: dict[str, object]) -> None:
    assert seen["permissions"] == [
        "view_flags",
        "view_health",
        "view_limits",
        "view_namespaces",
        "view_sessions",
    ]
    pages = seen["pages"]
    assert isinstance(pages, dict)
    assert {name: (page["status"], page["cache"]) for name, page in pages.items()} == {
        name: (200, "max-age=0, no-cache, no-store, must-revalidate, private")
        for name in ("flags", "limits", "sessions", "namespaces", "health")
    }
    assert pages["flags"]["tables"]["flags"] == [
        ["Name", "Type", "Value", "Edit", "Delete"],
        ["theme", "str", '"blue"', "Save", "Delete"],
    ]
    assert pages["limits"]["tables"]["routes"] == [
        ["Route", "Methods", "Limits", "Key", "Algorithm", "Shadow", "Exempt"],
        ["(global)", "*", "8/minute", "-", "sliding_log", "no", "-"],
        ["/api/items", "*", "2/minute", "ip", "sliding_log", "no", "-"],
    ]
    assert pages["sessions"]["tables"]["users"] == [
        ["User", "Sessions", ""],
        ["u1", "2", "Log out everywhere"],
        ["u2", "1", "Log out everywhere"],
    ]
    assert [row[0] for row in pages["namespaces"]["tables"]["namespaces"]] == [
        "Namespace",
        "auth:sess",
        "auth:sess:user",
        "call:room",
        "chat:ctx",
        "flags:config",
        "rl:api_key",
        "rl:custom",
        "rl:global",
        "rl:header",
        "rl:ip",
        "rl:user",
    ]
    if seen["url"] == "memory://":
        assert pages["health"]["tables"]["checks"] == [["Check", "Verdict", "Why"], ["Nothing to check."]]
    else:
        assert [row[0] for row in pages["health"]["tables"]["checks"]][:3] == [
            "Check",
            "maxmemory",
            "eviction policy",
        ]
    assert seen["secret_shown"] is False
    assert seen["index_lists_panel"] is True

    assert seen["reader_before"] is None
    no_store = "max-age=0, no-cache, no-store, must-revalidate, private"
    assert seen["set"] == [302, "/admin/ratelimit/flags?note=set%20darkMode", no_store]
    assert seen["reader_after"] is True
    assert seen["reader_last"] == [False, None]
    assert seen["history"] == [
        ["Who", "Flag", "Old value", "New value"],
        ["alice", "theme", '"blue"', "(deleted)"],
        ["alice", "darkMode", "true", "false"],
        ["alice", "darkMode", "-", "true"],
        ["setup", "theme", "-", '"blue"'],
    ]
    assert seen["no_token"] == [403, no_store]
    assert seen["flags_after_refusal"] == ["darkMode"]

    assert seen["items"] == [200, 200, 429]
    assert seen["clients"] == [["Limit", "Algorithm", "Remaining"], ["2/60s", "sliding_log", "0"]]
    assert seen["client_key_has_ip"] is True
    assert seen["ask"] == [200, True]
    assert seen["before_reset"] == 429
    assert seen["reset"] == 302
    assert seen["after_reset"] == 200

    assert seen["logout"] == [302, "/admin/ratelimit/sessions?note=logged%20u1%20out%20of%202%20sessions"]
    assert seen["sessions_left"] == [["u2", "1", "Log out everywhere"]]
    # Four of the earlier requests were counted: four more reach the global limit, which sheds with 503.
    assert seen["global_tripped"] == [200] * 4 + [503] * 4
    assert seen["panel_under_overload"] == 200

    assert seen["bob"] == [403, no_store]
    assert seen["carl"] == [302, "/admin/login/?next=/admin/ratelimit/flags", no_store]
    assert seen["anonymous"] == "/admin/login/?next=/admin/ratelimit/limits"
    assert seen["audit"] == [
        "alice set flag 'darkMode' to True (bool)",
        "alice set flag 'darkMode' to False (bool)",
        "alice deleted flag 'theme'",
        seen["audit"][3],  # type: ignore[index]
        "alice logged 'u1' out everywhere (2 sessions)",
    ]
    assert str(seen["audit"][3]).startswith("alice reset the limit 2/60s (sliding_log) of 'rl:ip:")  # type: ignore[index]


@pytest.mark.redis
def test_with_redis_down_the_pages_answer_503_never_cached(tmp_path: Path) -> None:
    seen: dict[str, Any] = run_child("admin_panel_down_child.py", tmp_path)
    reason = f"Redis is unavailable: Error 111 connecting to 127.0.0.1:{seen['port']}. Connection refused"
    message = f"The storage is unavailable ({reason}): this page works again once it answers."
    no_store = "max-age=0, no-cache, no-store, must-revalidate, private"
    failed = {"status": 503, "cache": no_store, "error": [message], "password_shown": False}
    shown = {"status": 200, "cache": no_store, "error": [], "password_shown": False}
    assert seen["answers"] == {
        "flags": failed,
        "limits": shown,
        "sessions": failed,
        "namespaces": failed,
        "health": shown,
        "set": failed,
        "logout": failed,
    }
