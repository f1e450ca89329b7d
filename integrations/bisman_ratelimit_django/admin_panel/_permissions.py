"""Which panel pages a user may see: one permission per page."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

PAGE_PERMISSIONS = {
    "flags": "view_flags",
    "limits": "view_limits",
    "sessions": "view_sessions",
    "namespaces": "view_namespaces",
    "health": "view_health",
}


def allowed_pages(request: HttpRequest) -> list[str]:
    user: Any = request.user
    return [
        page for page, perm in PAGE_PERMISSIONS.items() if user.has_perm(f"bisman_ratelimit_admin.{perm}")
    ]
