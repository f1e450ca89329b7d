"""Drives the Django admin panel in a process of its own (it needs the admin site and a database),
and prints what it saw as JSON for test_admin_panel_django.py."""

from __future__ import annotations

import html.parser
import json
import logging
import os
import re
import sys
from typing import Any

import django

os.environ["DJANGO_SETTINGS_MODULE"] = "admin_panel_settings"
django.setup()

from django.contrib.auth.models import Permission, User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402
from support import soon  # noqa: E402

from bisman_ratelimit.stores import Flags  # noqa: E402
from bisman_ratelimit_django.admin_panel._views import get_engine  # noqa: E402


class Tables(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.table: list[list[str]] | None = None
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.table = self.tables.setdefault(dict(attrs).get("id") or "", [])
        elif tag == "tr" and self.table is not None:
            self.table.append([])
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.cell is not None and self.table is not None:
            self.table[-1].append(" ".join("".join(self.cell).split()))
            self.cell = None
        elif tag == "table":
            self.table = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def tables(page: Any) -> dict[str, list[list[str]]]:
    parser = Tables()
    parser.feed(page.content.decode())
    return parser.tables


def token(page: Any) -> str:
    found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())
    assert found is not None
    return found.group(1)


class Audit(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def main() -> None:
    seen: dict[str, Any] = {}
    audit = Audit()
    logging.getLogger("bisman_ratelimit.admin").addHandler(audit)
    logging.getLogger("bisman_ratelimit.admin").setLevel(logging.INFO)
    call_command("migrate", verbosity=0, run_syncdb=True)
    alice = User.objects.create_user("alice", is_staff=True)
    alice.user_permissions.set(Permission.objects.filter(content_type__app_label="bisman_ratelimit_admin"))
    User.objects.create_user("bob", is_staff=True)
    User.objects.create_user("carl", is_staff=False)
    seen["permissions"] = sorted(
        Permission.objects.filter(content_type__app_label="bisman_ratelimit_admin").values_list(
            "codename", flat=True
        )
    )
    engine = get_engine()
    engine.flags.set("theme", "blue", by="setup")
    for user in ("u1", "u1", "u2"):
        assert engine.sessions is not None
        engine.sessions.create({"cart": "secret-cart-content"}, user_id=user)

    client = Client(enforce_csrf_checks=True, REMOTE_ADDR="198.51.100.7")
    client.force_login(User.objects.get(username="alice"))
    pages = {}
    for page in ("flags", "limits", "sessions", "namespaces", "health"):
        answer = client.get(f"/admin/ratelimit/{page}")
        pages[page] = {
            "status": answer.status_code,
            "cache": answer["Cache-Control"],
            "tables": tables(answer),
        }
    seen["pages"] = pages
    seen["secret_shown"] = "secret-cart-content" in client.get("/admin/ratelimit/sessions").content.decode()
    seen["index_lists_panel"] = "Rate limits and flags" in client.get("/admin/").content.decode()

    url = os.environ["PANEL_STORAGE_URL"]
    reader = Flags(engine.flags.backend if url.startswith("memory") else url)
    seen["reader_before"] = reader.get("darkMode")
    csrf = token(client.get("/admin/ratelimit/flags"))
    write = client.post(
        "/admin/ratelimit/flags/set",
        {"csrfmiddlewaretoken": csrf, "name": "darkMode", "type": "bool", "value": "true"},
    )
    seen["set"] = [write.status_code, write["Location"], write["Cache-Control"]]
    # The change message reaches the reader's connection moments after the write returns.
    seen["reader_after"] = soon(lambda: reader.get("darkMode"), True)
    client.post(
        "/admin/ratelimit/flags/set",
        {"csrfmiddlewaretoken": csrf, "name": "darkMode", "type": "bool", "value": "false"},
    )
    client.post("/admin/ratelimit/flags/delete", {"csrfmiddlewaretoken": csrf, "name": "theme"})
    seen["reader_last"] = soon(lambda: [reader.get("darkMode"), reader.get("theme")], [False, None])
    seen["history"] = [row[1:] for row in tables(client.get("/admin/ratelimit/flags"))["history"]]
    no_token = client.post("/admin/ratelimit/flags/set", {"name": "x", "type": "str", "value": "y"})
    seen["no_token"] = [no_token.status_code, no_token.get("Cache-Control")]
    seen["flags_after_refusal"] = sorted(engine.flags.all())

    seen["items"] = [client.get("/api/items").status_code for _ in range(3)]
    clients = tables(client.get("/admin/ratelimit/limits"))["clients"]
    seen["clients"] = [row[1:4] for row in clients]
    seen["client_key_has_ip"] = "198.51.100.7" in clients[1][0]
    choice = re.search(
        r'name="client" value="([^"]+)"', client.get("/admin/ratelimit/limits").content.decode()
    )
    assert choice is not None
    client_token = html.unescape(choice.group(1))
    ask = client.post("/admin/ratelimit/limits/reset", {"csrfmiddlewaretoken": csrf, "client": client_token})
    seen["ask"] = [ask.status_code, "<h1>Reset a client's limit?</h1>" in ask.content.decode()]
    seen["before_reset"] = client.get("/api/items").status_code
    done = client.post(
        "/admin/ratelimit/limits/reset",
        {"csrfmiddlewaretoken": csrf, "client": client_token, "confirm": "yes"},
    )
    seen["reset"] = done.status_code
    seen["after_reset"] = client.get("/api/items").status_code

    logout = client.post("/admin/ratelimit/sessions/logout", {"csrfmiddlewaretoken": csrf, "user": "u1"})
    seen["logout"] = [logout.status_code, logout["Location"]]
    seen["sessions_left"] = tables(client.get("/admin/ratelimit/sessions"))["users"][1:]

    # New clients, each within the route's limit, use up the global one (8 requests a minute).
    seen["global_tripped"] = [
        Client(REMOTE_ADDR=f"203.0.113.{i}").get("/api/items").status_code for i in range(8)
    ]
    seen["panel_under_overload"] = client.get("/admin/ratelimit/flags").status_code

    bob = Client()
    bob.force_login(User.objects.get(username="bob"))
    refused = bob.get("/admin/ratelimit/flags")
    seen["bob"] = [refused.status_code, refused["Cache-Control"]]
    carl = Client()
    carl.force_login(User.objects.get(username="carl"))
    redirected = carl.get("/admin/ratelimit/flags")
    seen["carl"] = [redirected.status_code, redirected["Location"], redirected["Cache-Control"]]
    seen["anonymous"] = Client().get("/admin/ratelimit/limits")["Location"]
    seen["audit"] = audit.lines
    reader.close()
    json.dump(seen, sys.stdout)


if __name__ == "__main__":
    main()
