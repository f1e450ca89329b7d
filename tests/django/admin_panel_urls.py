"""The admin site, the panel under it, and one limited route."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import include, path


def items(request: HttpRequest) -> HttpResponse:
    return HttpResponse("items")


urlpatterns = [
    path("admin/ratelimit/", include("bisman_ratelimit_django.admin_panel.urls")),
    path("admin/", admin.site.urls),
    path("api/items", items),
]
