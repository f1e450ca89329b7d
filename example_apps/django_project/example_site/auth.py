"""A demo login: the user the session names (after a log in at ``/login``), else the one
``Authorization: Bearer <name>`` names (for curl).

It stands in for ``django.contrib.auth.middleware.AuthenticationMiddleware``
so that the example runs without a database; limits keyed by ``user`` read
``request.user`` the same way with either. It subclasses it (and replaces
all it does) so that the system checks know that it sets ``request.user``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.auth.models import AnonymousUser, User
from django.http import HttpRequest

# Two demo accounts: one staff (may open the operator pages), one not.
DEMO_USERS = {
    "alice": {"password": "correct horse", "staff": True},
    "bob": {"password": "battery staple", "staff": False},
}


def check_password(username: str, password: str) -> bool:
    user = DEMO_USERS.get(username)
    return user is not None and user["password"] == password


def bearer_name(request: HttpRequest) -> str:
    scheme, _, name = request.headers.get("Authorization", "").partition(" ")
    return name.strip() if scheme.lower() == "bearer" else ""


class DemoUserMiddleware(AuthenticationMiddleware):
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        # The session is read lazily: a request with no cookie and a bearer token never loads one.
        name = bearer_name(request) or request.session.get("user", "")
        if name:
            staff = bool(DEMO_USERS.get(name, {}).get("staff", False))
            request.user = User(username=name, is_staff=staff)
        else:
            request.user = AnonymousUser()
        return self.get_response(request)
