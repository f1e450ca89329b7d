"""Sets ``request.user`` from an ``X-Test-User`` header, so tests need no database; counts gated arrivals."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.auth.models import AnonymousUser, User
from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from .views import GATE


def _user(request: HttpRequest) -> Any:
    name = request.headers.get("X-Test-User")
    return User(username=name) if name else AnonymousUser()


class HeaderUserMiddleware(AuthenticationMiddleware):
    """Sets request.user as AuthenticationMiddleware would (a subclass: the system checks know it)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if request.headers.get("X-Test-Gate"):
            GATE.arrive()
        if request.headers.get("X-Test-Lazy-User"):
            # Like AuthenticationMiddleware: a lazy user and an awaitable auser().
            request.user = SimpleLazyObject(lambda: _user(request))

            async def auser() -> Any:
                return _user(request)

            request.auser = auser  # type: ignore[attr-defined]
        else:
            request.user = _user(request)
        return self.get_response(request)
