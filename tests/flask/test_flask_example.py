"""The example app of example_apps/flask_app.py answers as its docstring says."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from bisman_ratelimit.web import STORAGE_URL_ENV

APP = Path(__file__).resolve().parents[2] / "example_apps" / "flask_app.py"


def load(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.delenv(STORAGE_URL_ENV, raising=False)
    spec = importlib.util.spec_from_file_location("flask_example_app", APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_app(monkeypatch: pytest.MonkeyPatch) -> None:
    client = load(monkeypatch).app.test_client()
    first = client.get("/fast")
    assert first.status_code == 200
    assert first.headers["RateLimit-Policy"] == '"default-60s";q=2;w=60, "default-1s";q=1;w=1'
    assert client.get("/slow").status_code == 200
    refused = client.get("/slow")
    assert refused.status_code == 429
    assert refused.headers["Content-Type"] == "application/problem+json"
    assert [client.get("/ping").status_code for _ in range(3)] == [200, 200, 200]
    logins = [client.post("/login", data={"password": "demo"}).status_code for _ in range(6)]
    assert logins == [200] * 6
    wrong = [client.post("/login", data={"password": "x"}).status_code for _ in range(6)]
    assert wrong == [401] * 5 + [429]
    assert [client.get("/api/items").status_code for _ in range(11)] == [200] * 10 + [429]
