"""Views matching the routes of ``example_apps/ratelimits.toml``, and the pages a person clicks
through: log in, session, chat, call room, the theme flag.

The JSON API authenticates with ``Authorization: Bearer <name>`` and so needs no
CSRF token; a form posted with the session cookie does (see :func:`csrf_unless_bearer`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.shortcuts import render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from bisman_ratelimit_django import ratelimit

from . import stores
from .auth import bearer_name, check_password

View = Callable[..., HttpResponse]


def csrf_unless_bearer(view: View) -> View:
    """CSRF checks for cookie-authenticated posts only: a bearer token cannot be forged cross-site."""
    check = CsrfViewMiddleware(lambda request: HttpResponse())

    @csrf_exempt
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not bearer_name(request):
            refused = check.process_view(request, view, args, kwargs)
            if refused is not None:
                return refused
        return view(request, *args, **kwargs)

    return wrapper


def wants_html(request: HttpRequest) -> bool:
    return "text/html" in request.headers.get("Accept", "")


def page(request: HttpRequest, template: str, title: str, status: int = 200, **context: Any) -> HttpResponse:
    theme = "dark" if stores.flags.is_enabled("darkMode") else "light"
    response = render(request, template, {"title": title, "theme": theme, **context}, status=status)
    response["Cache-Control"] = "no-store"
    return response


def index(request: HttpRequest) -> HttpResponse:
    storage = stores.STORAGE_URL.split("://", 1)[0]
    if wants_html(request):
        return page(request, "home.html", "bisman-ratelimit example", storage=storage, keep=stores.CHAT_KEEP)
    return JsonResponse({"app": "django", "try": ["/auth/login", "/api/calls", "/chat/threads/1/messages"]})


@csrf_exempt  # the API's login answers a token, and sets no cookie
@require_http_methods(["POST"])
def login(request: HttpRequest) -> JsonResponse:
    # Only failed logins count towards the limit (deduct_when in the file).
    username = request.POST.get("username", "")
    if check_password(username, request.POST.get("password", "")):
        return JsonResponse({"token": username})
    return JsonResponse({"error": "wrong username or password"}, status=401)


@require_http_methods(["GET", "POST"])
def login_page(request: HttpRequest) -> HttpResponse:
    # Where the admin site sent the user from; only a path on this site, never another host.
    next_url = request.POST.get("next") or request.GET.get("next", "")
    if not url_has_allowed_host_and_scheme(next_url, allowed_hosts=None):
        next_url = ""
    if request.method == "GET":
        if next_url and request.user.is_authenticated:
            # Signed in, yet sent here by the admin site: this user may not open that page.
            refused = f"{request.user.get_username()} may not open {next_url}: log in as a staff user."
            return page(request, "login.html", "Log in", status=403, error=refused, next=next_url)
        return page(request, "login.html", "Log in", next=next_url)
    username = request.POST.get("username", "")
    if not check_password(username, request.POST.get("password", "")):
        # A 401 is what the limits file counts (deduct_when): only failed logins use up the limit.
        error = "Wrong user or password."
        return page(request, "login.html", "Log in", status=401, error=error, next=next_url)
    # A new id at every change of privilege, so that an id planted before the login is worthless.
    request.session.cycle_key()
    request.session["user"] = username
    # Joins the user's session index, so that "log out everywhere" finds this session.
    request.session["_auth_user_id"] = username
    request.session["logged_in_at"] = int(time.time())
    return HttpResponseRedirect(next_url or "/session", status=303)


@require_http_methods(["POST"])
def logout(request: HttpRequest) -> HttpResponse:
    request.session.flush()  # deletes the session from the store and clears the cookie
    return HttpResponseRedirect("/", status=303)


def fingerprint(session_key: str | None) -> str:
    """A short digest of the session id: it shows the id change without showing the id."""
    return "none" if not session_key else hashlib.sha256(session_key.encode()).hexdigest()[:10]


def session_page(request: HttpRequest) -> HttpResponse:
    session = request.session
    session["views"] = session.get("views", 0) + 1
    data = sorted((name, value) for name, value in session.items() if not name.startswith("_"))
    return page(
        request,
        "session.html",
        "Session",
        fingerprint=fingerprint(session.session_key),
        ttl=session.get_expiry_age(),
        data=data,
    )


async def calls(request: HttpRequest) -> HttpResponse:
    # require_http_methods wraps async views only from Django 5.0 on.
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    return JsonResponse({"call": "started"}, status=201)


# An API call, which changes nothing a forged request could abuse. Set by hand: csrf_exempt
# wraps async views only from Django 5.0 on.
calls.csrf_exempt = True  # type: ignore[attr-defined]


def _author(request: HttpRequest) -> str:
    return request.user.username if request.user.is_authenticated else "anonymous"


@csrf_unless_bearer
def messages(request: HttpRequest, thread_id: str) -> HttpResponse:
    """``GET``: the last messages as JSON; ``POST`` (JSON ``{"text": ...}`` or a form): append one."""
    if request.method == "GET":
        return JsonResponse({"thread": thread_id, "messages": stores.chat.last(thread_id)})
    if request.method != "POST":
        return HttpResponseNotAllowed(["GET", "POST"])
    if request.content_type == "application/json":
        text = str(json.loads(request.body or b"{}").get("text", ""))
    else:
        text = request.POST.get("text", "")
    if not text.strip():
        return JsonResponse({"error": "a message needs some text"}, status=422)
    number = stores.chat.append(thread_id, {"by": _author(request), "text": text[:500], "at": time.time()})
    if wants_html(request):
        return HttpResponseRedirect(f"/chat/{thread_id}", status=303)
    return JsonResponse({"thread": thread_id, "posted": True, "number": number}, status=201)


def chat_page(request: HttpRequest, thread_id: str) -> HttpResponse:
    return page(
        request,
        "chat.html",
        f"Chat: {thread_id}",
        thread=thread_id,
        messages=stores.chat.last(thread_id),
        keep=stores.CHAT_KEEP,
    )


def call_page(request: HttpRequest, room: str) -> HttpResponse:
    actions = [("join", "Join"), ("heartbeat", "Heartbeat"), ("leave", "Leave")]
    participants = stores.presence.participants(room)
    return page(
        request, "call.html", f"Call room: {room}", room=room, participants=participants, actions=actions
    )


@csrf_unless_bearer
@require_http_methods(["POST"])
def call_action(request: HttpRequest, room: str, action: str) -> HttpResponse:
    """Join, heartbeat or leave a room as the signed-in user."""
    if not request.user.is_authenticated:
        return JsonResponse({"error": "log in to take part in a call"}, status=401)
    operations = {"join": stores.presence.join, "heartbeat": stores.presence.heartbeat}
    operations["leave"] = stores.presence.leave
    if action not in operations:
        return JsonResponse({"error": f"unknown action {action!r}: join, heartbeat or leave"}, status=404)
    state = operations[action](room, request.user.username)
    if wants_html(request):
        return HttpResponseRedirect(f"/calls/{room}", status=303)
    return JsonResponse({"room": room, "present": state.present, "participants": state.participants})


def participants(request: HttpRequest, room: str) -> JsonResponse:
    return JsonResponse({"room": room, "participants": [p.id for p in stores.presence.participants(room)]})


def flags_view(request: HttpRequest) -> HttpResponse:
    flags = {name: flag.value for name, flag in stores.flags.all().items()}
    if not wants_html(request):
        return JsonResponse({"flags": flags})
    return page(request, "flags.html", "Feature flags", flags=sorted(flags.items()))


def health(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok", content_type="text/plain")


@ratelimit("10/minute", key="ip", block=False)
def search(request: HttpRequest) -> JsonResponse:
    # Over the limit, answer from a cheaper path instead of refusing.
    cheap = request.ratelimit.limited  # type: ignore[attr-defined]
    return JsonResponse({"q": request.GET.get("q", ""), "results": [], "degraded": cheap})
