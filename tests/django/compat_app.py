"""django-ratelimit's documented usage examples, on ``bisman_ratelimit_django.compat``.

The views are those of its "Using Django Ratelimit" page, with only the
import changed (and distinct names where the page reuses one). Requests
carry ``X-Test-User: <pk>`` to be an authenticated user.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.contrib.auth.models import AnonymousUser, User
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.utils.decorators import method_decorator
from django.views import View

from bisman_ratelimit_django.compat import Ratelimited, get_usage, is_ratelimited, ratelimit


class UserFromHeader:
    """``request.user``: a user with the primary key of ``X-Test-User``, else anonymous."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        pk = request.headers.get("X-Test-User")
        request.user = User(pk=int(pk), username=f"user{pk}") if pk else AnonymousUser()
        return self.get_response(request)


def _limited(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"limited": getattr(request, "limited", False)})


@ratelimit(key="ip", rate="5/m", block=False)
def annotate(request: HttpRequest) -> JsonResponse:
    # Will be true if the same IP makes more than 5 requests/minute.
    return _limited(request)


@ratelimit(key="ip", rate="5/m", block=True)
def block(request: HttpRequest) -> HttpResponse:
    # If the same IP makes >5 reqs/min, will raise Ratelimited
    return HttpResponse()


@ratelimit(key="post:username", rate="5/m", method=["GET", "POST"], block=False)
def login(request: HttpRequest) -> JsonResponse:
    # If the same username is used >5 times/min, this will be True.
    return _limited(request)


@ratelimit(key="post:username", rate="5/m")
@ratelimit(key="post:tenant", rate="5/m")
def login_tenant(request: HttpRequest) -> HttpResponse:
    # Use multiple keys by stacking decorators.
    return HttpResponse()


@ratelimit(key="get:q", rate="5/m")
@ratelimit(key="post:q", rate="5/m")
def search(request: HttpRequest) -> HttpResponse:
    # The same search query can only be tried 5 times a minute, whatever the method.
    return HttpResponse()


@ratelimit(key="ip", rate="4/h")
def slow(request: HttpRequest) -> HttpResponse:
    # Allow 4 reqs/hour.
    return HttpResponse()


def get_rate(group: str, request: HttpRequest) -> str | None:
    return None if request.user.is_authenticated else "100/h"


@ratelimit(key="ip", rate=get_rate)
def skipif1(request: HttpRequest) -> HttpResponse:
    # Only rate limit anonymous requests
    return HttpResponse()


@ratelimit(key="user_or_ip", rate="10/s")
@ratelimit(key="user_or_ip", rate="100/m")
def burst_limit(request: HttpRequest) -> HttpResponse:
    # Implement a separate burst limit.
    return HttpResponse()


@ratelimit(group="expensive", key="user_or_ip", rate="10/h")
def expensive_view_a(request: HttpRequest) -> HttpResponse:
    return HttpResponse("a")


@ratelimit(group="expensive", key="user_or_ip", rate="10/h")
def expensive_view_b(request: HttpRequest) -> HttpResponse:
    # Shares a counter with expensive_view_a
    return HttpResponse("b")


@ratelimit(key="header:x-cluster-client-ip")
def post(request: HttpRequest) -> HttpResponse:
    # Uses the X-Cluster-Client-IP header value; no rate given: no limit.
    return HttpResponse()


@ratelimit(key="header:x-cluster-client-ip", rate="2/m")
def by_header(request: HttpRequest) -> HttpResponse:
    return HttpResponse()


@ratelimit(key=lambda g, r: r.META.get("HTTP_X_CLUSTER_CLIENT_IP", r.META["REMOTE_ADDR"]), rate="2/m")
def callable_key(request: HttpRequest) -> HttpResponse:
    # Use `X-Cluster-Client-IP` but fall back to REMOTE_ADDR.
    return HttpResponse()


def tenant_key(group: str, request: HttpRequest) -> str:
    return request.GET.get("tenant", "") + "@" + group


@ratelimit(key="compat_app.tenant_key", rate="2/m")
def dotted_key(request: HttpRequest) -> HttpResponse:
    return HttpResponse()


@ratelimit(key="user", rate="2/m")
def per_user(request: HttpRequest) -> HttpResponse:
    return HttpResponse()


@ratelimit(key="ip", rate="2/m", method=ratelimit.UNSAFE)  # type: ignore[attr-defined]
def unsafe_only(request: HttpRequest) -> HttpResponse:
    return HttpResponse()


@ratelimit(key="ip", rate="3/m", method=ratelimit.ALL)  # type: ignore[attr-defined]
@ratelimit(key="ip", rate="1/m", method=ratelimit.UNSAFE)  # type: ignore[attr-defined]
def method_groups(request: HttpRequest) -> HttpResponse:
    return HttpResponse()


@ratelimit(key="ip", rate="0/s")
def closed(request: HttpRequest) -> HttpResponse:
    return HttpResponse()


@ratelimit(key="ip", rate="2/m")
async def async_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse()


@ratelimit(key="user_or_ip", rate="2/m", block=False)
async def async_annotate(request: HttpRequest) -> JsonResponse:
    return _limited(request)


class MyView(View):
    @method_decorator(ratelimit(key="ip", rate="1/m", method="GET"))
    def get(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse("get")

    @method_decorator(ratelimit(key="ip", rate="1/m", method="POST"))
    def post(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse("post")


@method_decorator(ratelimit(key="ip", rate="1/m", method="GET"), name="get")
class MyOtherView(View):
    def get(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse()


class Wrapped(View):
    def get(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse()


def usage(request: HttpRequest) -> JsonResponse:
    """``get_usage`` and ``is_ratelimited`` as its "Core Methods" show them."""
    increment = request.GET.get("increment") == "1"
    found = get_usage(request, group="core", key="ip", rate="3/m", increment=increment)
    limited = is_ratelimited(request, group="core", key="ip", rate="3/m")
    return JsonResponse({"usage": found, "is_ratelimited": limited})


def usage_of_view(request: HttpRequest) -> JsonResponse:
    """``fn=`` names the group as the decorator on that view does."""
    return JsonResponse({"usage": get_usage(request, fn=block, key="ip", rate="5/m")})


class TooMany(Exception):
    """A RATELIMIT_EXCEPTION_CLASS of the project's own."""


def ratelimited_view(request: HttpRequest, exception: Exception) -> HttpResponse:
    """RATELIMIT_VIEW: what a Ratelimited request gets with RatelimitMiddleware."""
    assert isinstance(exception, Ratelimited)
    return HttpResponse("Sorry you are blocked", status=429)


urlpatterns = [
    path("annotate/", annotate),
    path("block/", block),
    path("login/", login),
    path("login-tenant/", login_tenant),
    path("search/", search),
    path("slow/", slow),
    path("skipif1/", skipif1),
    path("burst/", burst_limit),
    path("expensive/a/", expensive_view_a),
    path("expensive/b/", expensive_view_b),
    path("post/", post),
    path("by-header/", by_header),
    path("callable-key/", callable_key),
    path("dotted-key/", dotted_key),
    path("per-user/", per_user),
    path("unsafe/", unsafe_only),
    path("method-groups/", method_groups),
    path("closed/", closed),
    path("async/", async_view),
    path("async-annotate/", async_annotate),
    path("cbv/", MyView.as_view()),
    path("cbv-other/", MyOtherView.as_view()),
    path("wrapped/", ratelimit(key="ip", method="GET", rate="1/m")(Wrapped.as_view())),
    path("usage/", usage),
    path("usage-of-view/", usage_of_view),
]
