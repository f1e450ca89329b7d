"""A demo login: the user the session names (after a log in at ``/login``), else the one
``Authorization: Bearer <name>`` names (for curl).

It stands in for ``django.contrib.auth.middleware.AuthenticationMiddleware``
(and subclasses it, so that the system checks and the admin site know that it
sets ``request.user``). The user is read from the database only when a view or
a limit keyed by user asks: the demo users' staff flag and permissions are
there, so the admin site and the panel see them; a name with no account is a
user with no rights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.auth.models import AnonymousUser, User
from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

# Two demo accounts: one staff (may open the operator pages), one not. Start-up adds them to the database.
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


def load_user(name: str) -> User | AnonymousUser:
    if not name:
        return AnonymousUser()
    # A name without an account (a bearer token's) is unsaved: never staff, no permissions.
    return User.objects.filter(username=name).first() or User(username=name)


class DemoUserMiddleware(AuthenticationMiddleware):
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        # The session is read lazily: a request with no cookie and a bearer token never loads one.
        def name() -> str:
            return bearer_name(request) or str(request.session.get("user", ""))

        request.user = SimpleLazyObject(lambda: load_user(name()))  # type: ignore[assignment]

        async def auser() -> User | AnonymousUser:
            # The async path (Django's auser()): the database is read off the event loop.
            user = await sync_to_async(load_user)(await sync_to_async(name)())
            request.user = user
            return user

        request.auser = auser  # type: ignore[attr-defined]
        return self.get_response(request)
