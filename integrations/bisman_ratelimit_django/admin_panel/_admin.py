"""The panel's entry in the admin index: its link opens the first page the user may see.

Registered by the app's ``ready()`` when ``django.contrib.admin`` is installed.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from ._permissions import allowed_pages
from .models import Panel


class PanelAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(allowed_pages(request))

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(allowed_pages(request))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        return HttpResponseRedirect(reverse(f"bisman_ratelimit_admin:{allowed_pages(request)[0]}"))


def register() -> None:
    admin.site.register(Panel, PanelAdmin)
