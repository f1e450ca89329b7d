"""Views for the session engine tests."""

from __future__ import annotations

import json
import threading

from django.http import HttpRequest, JsonResponse
from django.urls import path


def show(request: HttpRequest) -> JsonResponse:
    return JsonResponse(dict(request.session.items()))


def put(request: HttpRequest) -> JsonResponse:
    request.session.update(json.loads(request.body))
    return JsonResponse(dict(request.session.items()))


# Set by a test: each request waits there once it has loaded its session, so that all have
# loaded before any saves.
BARRIER: list[threading.Barrier] = []


def put_together(request: HttpRequest) -> JsonResponse:
    request.session.get("anything")
    BARRIER[0].wait(timeout=10)
    request.session.update(json.loads(request.body))
    return JsonResponse({"ok": True})


def login(request: HttpRequest) -> JsonResponse:
    # What django.contrib.auth.login() does to the session.
    request.session.cycle_key()
    request.session["_auth_user_id"] = request.GET["user"]
    return JsonResponse({"ok": True})


def logout(request: HttpRequest) -> JsonResponse:
    request.session.flush()
    return JsonResponse({"ok": True})


async def ashow(request: HttpRequest) -> JsonResponse:
    return JsonResponse(dict(await request.session.aitems()))


async def aput(request: HttpRequest) -> JsonResponse:
    await request.session.aupdate(json.loads(request.body))
    return JsonResponse(dict(await request.session.aitems()))


async def alogin(request: HttpRequest) -> JsonResponse:
    await request.session.acycle_key()
    await request.session.aset("_auth_user_id", request.GET["user"])
    return JsonResponse({"ok": True})


urlpatterns = [
    path("show", show),
    path("put", put),
    path("put-together", put_together),
    path("login", login),
    path("logout", logout),
    path("ashow", ashow),
    path("aput", aput),
    path("alogin", alogin),
]
