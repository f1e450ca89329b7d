"""A demo login: ``Authorization: Bearer <name>`` makes the request that user.

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


class BearerUserMiddleware(AuthenticationMiddleware):
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        scheme, _, name = request.headers.get("Authorization", "").partition(" ")
        name = name.strip()
        request.user = User(username=name) if scheme.lower() == "bearer" and name else AnonymousUser()
        return self.get_response(request)
