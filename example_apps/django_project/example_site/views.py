"""Views matching the routes of ``example_apps/ratelimits.toml``."""

from __future__ import annotations

import json

from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.views.decorators.http import require_http_methods

from bisman_ratelimit_django import ratelimit


def index(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"app": "django", "try": ["/auth/login", "/api/calls", "/chat/threads/1/messages"]})


@require_http_methods(["POST"])
def login(request: HttpRequest) -> JsonResponse:
    # Only failed logins count towards the limit (deduct_when in the file).
    if request.POST.get("password") == "demo":
        return JsonResponse({"token": request.POST.get("username", "demo")})
    return JsonResponse({"error": "wrong username or password"}, status=401)


async def calls(request: HttpRequest) -> HttpResponse:
    # require_http_methods wraps async views only from Django 5.0 on.
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    return JsonResponse({"call": "started"}, status=201)


async def messages(request: HttpRequest, thread_id: str) -> JsonResponse:
    if request.method == "POST":
        return JsonResponse({"thread": thread_id, "sent": json.loads(request.body or b"{}")}, status=201)
    return JsonResponse({"thread": thread_id, "messages": []})


def health(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok", content_type="text/plain")


@ratelimit("10/minute", key="ip", block=False)
def search(request: HttpRequest) -> JsonResponse:
    # Over the limit, answer from a cheaper path instead of refusing.
    cheap = request.ratelimit.limited  # type: ignore[attr-defined]
    return JsonResponse({"q": request.GET.get("q", ""), "results": [], "degraded": cheap})
