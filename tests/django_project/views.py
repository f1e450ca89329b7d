"""Views under test: plain, async, class-based and decorated ones."""

from __future__ import annotations

import threading

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.decorators import method_decorator
from django.views import View

from bisman_ratelimit_django import ratelimit, ratelimit_exempt


def plain(request: HttpRequest, **kwargs: object) -> HttpResponse:
    return HttpResponse("ok")


async def plain_async(request: HttpRequest, **kwargs: object) -> HttpResponse:
    return HttpResponse("ok")


def login(request: HttpRequest) -> HttpResponse:
    if request.POST.get("password") == "right":
        return HttpResponse("welcome")
    return HttpResponse("wrong password", status=401)


class Gate:
    """Holds gated views until ``expected`` requests have reached the project.

    So that no concurrent request is answered before all are checked.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.expected = 0
        self.arrived = 0
        self.open = threading.Event()

    def reset(self, expected: int) -> None:
        with self._lock:
            self.expected, self.arrived = expected, 0
            self.open.clear()

    def arrive(self) -> None:
        with self._lock:
            self.arrived += 1
            if self.arrived >= self.expected:
                self.open.set()

    def wait(self) -> None:
        if not self.open.wait(timeout=30):
            raise RuntimeError(f"only {self.arrived} of {self.expected} requests arrived")


GATE = Gate()


def gated_login(request: HttpRequest) -> HttpResponse:
    GATE.wait()
    return login(request)


async def gated_login_async(request: HttpRequest) -> HttpResponse:
    await sync_to_async(GATE.wait, thread_sensitive=False)()
    return login(request)


@ratelimit(["5/minute", "20/hour"], key="ip", deduct_when=[401, 403])
def decorated_login(request: HttpRequest) -> HttpResponse:
    return gated_login(request)


@ratelimit(["5/minute", "20/hour"], key="ip", deduct_when=[401, 403])
async def decorated_login_async(request: HttpRequest) -> HttpResponse:
    return await gated_login_async(request)


@ratelimit_exempt
def health(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


@ratelimit("3/minute", key="ip", algorithm="fixed_window")
def limited(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


@ratelimit("3/minute", key="ip", algorithm="fixed_window")
async def limited_async(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


def _report(request: HttpRequest) -> JsonResponse:
    result = request.ratelimit  # type: ignore[attr-defined]
    return JsonResponse({"limited": result.limited, "over": list(result.over)})


@ratelimit("2/minute", key="ip", algorithm="fixed_window", block=False)
def annotated(request: HttpRequest) -> JsonResponse:
    return _report(request)


@ratelimit("2/minute", key="ip", algorithm="fixed_window", block=False)
async def annotated_async(request: HttpRequest) -> JsonResponse:
    return _report(request)


@ratelimit("2/minute", key="ip", algorithm="fixed_window", methods=["POST"])
def post_only(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


@ratelimit(rate="2/m", key="ip", method="POST", algorithm="fixed_window")
def aliases(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


@ratelimit("3/minute", key="ip", algorithm="fixed_window", group="shared")
def shared_a(request: HttpRequest) -> HttpResponse:
    return HttpResponse("a")


@ratelimit("3/minute", key="ip", algorithm="fixed_window", group="shared")
def shared_b(request: HttpRequest) -> HttpResponse:
    return HttpResponse("b")


@ratelimit("2/minute", key=lambda request: request.GET.get("tenant"), algorithm="sliding_log")
def by_tenant(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


async def _tenant(request: HttpRequest) -> str | None:
    return request.GET.get("tenant")


@ratelimit("2/minute", key=_tenant, algorithm="sliding_log")
async def by_tenant_async(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


@ratelimit(
    "10/minute", key="ip", algorithm="fixed_window", cost=lambda request: int(request.GET.get("n", "1"))
)
def weighted(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


@ratelimit("2/minute", key="user", algorithm="fixed_window")
def per_user(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


@ratelimit("5/minute", algorithm="fixed_window")
@ratelimit("2/minute", key="user", algorithm="fixed_window", methods=["POST"])
def stacked(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


@method_decorator(ratelimit("2/minute", key="ip", algorithm="fixed_window"), name="dispatch")
class LimitedView(View):
    def get(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse("get")

    def post(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse("post")


class GetLimitedView(View):
    @method_decorator(ratelimit("2/minute", key="ip", algorithm="fixed_window"))
    def get(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse("get")

    def post(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse("post")


class AsyncView(View):
    async def get(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse("async get")


limited_async_view = ratelimit("2/minute", key="ip", algorithm="fixed_window")(AsyncView.as_view())
