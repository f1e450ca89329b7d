"""The code blocks of docs/migrating.md (the slowapi and fastapi-limiter sections) run as written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx

DOC = Path(__file__).resolve().parents[2] / "docs" / "migrating.md"


def section_block(heading: str) -> str:
    text = DOC.read_text()
    start = text.index(f"## {heading}")
    end = text.find("\n## ", start + 1)
    found = re.findall(r"```python\n(.*?)```", text[start : end if end > 0 else None], flags=re.S)
    assert len(found) == 1
    return str(found[0])


async def test_the_slowapi_example_limits_as_slowapi_does() -> None:
    namespace: dict[str, Any] = {}
    exec(compile(section_block("From slowapi"), str(DOC), "exec"), namespace)
    app = namespace["app"]
    transport = httpx.ASGITransport(app, client=("198.51.100.7", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        answers = [await c.get("/home") for _ in range(6)]
    await namespace["limiter"].aclose()
    assert [(r.status_code, r.text) for r in answers[:5]] == [(200, "test")] * 5
    assert (answers[5].status_code, answers[5].json()) == (
        429,
        {"error": "Rate limit exceeded: 5 per 1 minute"},
    )


async def test_the_fastapi_limiter_example_limits_as_fastapi_limiter_does(redis_url: str) -> None:
    source = section_block("From fastapi-limiter")
    namespace: dict[str, Any] = {"REDIS_URL": redis_url}
    exec(compile(source, str(DOC), "exec"), namespace)
    app = namespace["app"]
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app, client=("198.51.100.7", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            answers = [await c.get("/") for _ in range(3)]
    assert [(r.status_code, r.json()) for r in answers] == [
        (200, {"msg": "Hello World"}),
        (200, {"msg": "Hello World"}),
        (429, {"detail": "Too Many Requests"}),
    ]
