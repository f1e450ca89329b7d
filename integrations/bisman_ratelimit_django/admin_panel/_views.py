"""The panel's views: the admin site's staff check and CSRF, a permission per page, no caching.

The data and the writes are :class:`bisman_ratelimit.ops.PanelEngine`'s,
built once from ``BISMAN_RATELIMIT`` (the storage URL, the limits file and
the plugin's own limiter, so that a reset reaches the next request).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt, csrf_protect

from bisman_ratelimit import InvalidArgument, StorageError
from bisman_ratelimit.ops import ADMIN_KEY, PanelEngine

from .._decorators import ratelimit_exempt
from .._runtime import get_runtime
from ._permissions import PAGE_PERMISSIONS, allowed_pages

RATE = "120/minute"
"""How many requests a user may make to the panel."""

View = Callable[[HttpRequest, PanelEngine], HttpResponse]

_engine: PanelEngine | None = None


def get_engine() -> PanelEngine:
    """The engine of the current settings, built at the first request."""
    global _engine
    if _engine is None:
        runtime = get_runtime()
        _engine = PanelEngine.from_url(
            runtime.settings.storage_url, limiter=runtime.limiter, config=runtime.config
        )
    return _engine


def _reset(**kwargs: Any) -> None:
    global _engine
    if kwargs.get("setting") == "BISMAN_RATELIMIT" and _engine is not None:
        _engine.close()
        _engine = None


setting_changed.connect(_reset)


def _page(
    request: HttpRequest, page: str, template: str, context: dict[str, Any], status: int = 200
) -> HttpResponse:
    return render(
        request,
        f"bisman_ratelimit_admin/{template}",
        {
            **admin.site.each_context(request),
            "page": page,
            "pages": allowed_pages(request),
            "title": f"Rate limits and flags: {page}",
            "note": request.GET.get("note", ""),
            **context,
        },
        status=status,
    )


def panel_view(page: str, *, write: bool = False) -> Callable[[View], Callable[[HttpRequest], HttpResponse]]:
    def decorate(handler: View) -> Callable[[HttpRequest], HttpResponse]:
        @functools.wraps(handler)
        def view(request: HttpRequest) -> HttpResponse:
            user: Any = request.user
            if not user.has_perm(f"bisman_ratelimit_admin.{PAGE_PERMISSIONS[page]}"):
                return _page(request, page, "error.html", {"message": "You may not see this page."}, 403)
            if write and request.method != "POST":
                return _page(request, page, "error.html", {"message": "Writes are POSTs."}, 405)
            try:
                decision = get_runtime().limiter.hit(ADMIN_KEY + user.get_username(), RATE)
            except StorageError:
                decision = None  # the panel helps most during an outage: it stays open
            if decision is not None and not decision.allowed:
                message = f"Too many requests to the admin panel: try again in {decision.retry_after:.0f} s."
                return _page(request, page, "error.html", {"message": message}, 429)
            try:
                return handler(request, get_engine())
            except InvalidArgument as exc:
                return _page(request, page, "error.html", {"message": str(exc)}, 400)
            except StorageError as exc:
                # The panel's own error page, inside never_cache: not Django's bare 500.
                message = PanelEngine.failure_message(exc)
                return _page(request, page, "error.html", {"message": message}, 503)

        guarded: list[Callable[[HttpRequest], HttpResponse]] = []

        @functools.wraps(handler)
        def entry(request: HttpRequest) -> HttpResponse:
            # The admin site is looked up at the first request: importing the URLconf needs no admin app.
            if not guarded:
                guarded.append(csrf_protect(admin.site.admin_view(view)))
            return guarded[0](request)

        # admin_view: staff only (else the admin login) and Django's CSRF check, here inside never_cache
        # so that its refusals are not cached either (the CSRF middleware's own would be: it is told to
        # leave these views to csrf_protect). Exempt from the app's limits, the global one too.
        return ratelimit_exempt(csrf_exempt(never_cache(entry)))

    return decorate


def _done(page: str, note: str) -> HttpResponse:
    from urllib.parse import quote

    return HttpResponseRedirect(f"{reverse(f'bisman_ratelimit_admin:{page}')}?note={quote(note)}")


def _json(value: Any) -> str:
    return json.dumps(value)


def _utc(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))


@panel_view("flags")
def flags(request: HttpRequest, engine: PanelEngine) -> HttpResponse:
    data = engine.flags_page()
    rows = [
        {
            "name": f.name,
            "type": f.type,
            "json": _json(f.value),
            "value": f.value,
            "text": f.value if f.type == "str" else _json(f.value),
        }
        for f in data.flags
    ]
    history = [
        {
            "at": _utc(c.at),
            "by": c.by,
            "name": c.name,
            "old": "-" if c.old is None else _json(c.old.value),
            "new": "(deleted)" if c.new is None else _json(c.new.value),
        }
        for c in data.history
    ]
    return _page(request, "flags", "flags.html", {"flags": rows, "history": history, "types": data.types})


@panel_view("flags", write=True)
def set_flag(request: HttpRequest, engine: PanelEngine) -> HttpResponse:
    fields = request.POST
    flag = engine.set_flag(
        request.user.get_username(), fields.get("name", ""), fields.get("value", ""), fields.get("type", "")
    )
    return _done("flags", f"set {flag.name}")


@panel_view("flags", write=True)
def delete_flag(request: HttpRequest, engine: PanelEngine) -> HttpResponse:
    name = request.POST.get("name", "")
    engine.delete_flag(request.user.get_username(), name)
    return _done("flags", f"deleted {name}")


@panel_view("limits")
def limits(request: HttpRequest, engine: PanelEngine) -> HttpResponse:
    data = engine.limits_page()
    share = None if data.fallback_share is None else f"{data.fallback_share * 100:.1f} %"
    return _page(request, "limits", "limits.html", {"data": data, "share": share})


@panel_view("limits", write=True)
def reset_client(request: HttpRequest, engine: PanelEngine) -> HttpResponse:
    token = request.POST.get("client", "")
    if request.POST.get("confirm") != "yes":
        return _page(request, "limits", "confirm_reset.html", {"client": engine.client(token)})
    client = engine.reset_client(request.user.get_username(), token)
    return _done("limits", f"reset {client.key} ({client.limit})")


@panel_view("sessions")
def sessions(request: HttpRequest, engine: PanelEngine) -> HttpResponse:
    return _page(request, "sessions", "sessions.html", {"data": engine.sessions_page()})


@panel_view("sessions", write=True)
def logout_everywhere(request: HttpRequest, engine: PanelEngine) -> HttpResponse:
    user = request.POST.get("user", "")
    ended = engine.logout_everywhere(request.user.get_username(), user)
    return _done("sessions", f"logged {user} out of {ended} sessions")


@panel_view("namespaces")
def namespaces(request: HttpRequest, engine: PanelEngine) -> HttpResponse:
    return _page(request, "namespaces", "namespaces.html", {"data": engine.namespaces_page()})


@panel_view("health")
def health(request: HttpRequest, engine: PanelEngine) -> HttpResponse:
    return _page(request, "health", "health.html", {"data": engine.health_page()})
