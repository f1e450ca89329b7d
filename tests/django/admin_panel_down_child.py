"""Drives the Django admin panel over a Redis server that it stops, in a process of its own,
and prints what it saw as JSON for test_admin_panel_django.py."""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

import django
import redis

from bisman_ratelimit.testing import RedisServer

PASSWORD = "pw-not-to-show"


def main() -> None:
    with RedisServer() as server:
        with redis.Redis.from_url(server.url) as setup:
            setup.config_set("requirepass", PASSWORD)
        os.environ["PANEL_STORAGE_URL"] = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"
        os.environ["DJANGO_SETTINGS_MODULE"] = "admin_panel_settings"
        django.setup()

        from django.contrib.auth.models import Permission, User
        from django.core.management import call_command
        from django.test import Client

        call_command("migrate", verbosity=0, run_syncdb=True)
        alice = User.objects.create_user("alice", is_staff=True)
        alice.user_permissions.set(
            Permission.objects.filter(content_type__app_label="bisman_ratelimit_admin")
        )
        client = Client(enforce_csrf_checks=True, raise_request_exception=False)
        client.force_login(alice)
        up = client.get("/admin/ratelimit/flags")
        found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', up.content.decode())
        assert up.status_code == 200 and found is not None
        csrf = found.group(1)
        server.stop()

        answers: dict[str, Any] = {
            page: client.get(f"/admin/ratelimit/{page}")
            for page in ("flags", "limits", "sessions", "namespaces", "health")
        }
        answers["set"] = client.post(
            "/admin/ratelimit/flags/set",
            {"csrfmiddlewaretoken": csrf, "name": "a", "type": "str", "value": "b"},
        )
        answers["logout"] = client.post(
            "/admin/ratelimit/sessions/logout", {"csrfmiddlewaretoken": csrf, "user": "u1"}
        )
    seen = {
        "port": server.port,
        "answers": {
            name: {
                "status": answer.status_code,
                "cache": answer.get("Cache-Control"),
                "error": re.findall(r'<p class="errornote">(.*?)</p>', answer.content.decode(), re.S),
                "password_shown": PASSWORD in answer.content.decode(),
            }
            for name, answer in answers.items()
        },
    }
    json.dump(seen, sys.stdout)


if __name__ == "__main__":
    main()
