"""``RateLimitMiddleware``: the limits of the settings and the limits file, on every request.

Add it to ``MIDDLEWARE``. It is natively sync and async: the mode is decided
once from ``get_response``, so under ASGI it never hops to a thread and
under WSGI it never starts an event loop.

The check runs in ``process_view``, after Django has resolved the URL: the
route template (``request.resolver_match.route``, e.g. ``users/<int:id>/``)
picks the policy, so every id shares one. Limits written with
``@ratelimit`` on the view are counted in the same storage call. Paths that
match no URL pattern are counted under the defaults once their 404 is
ready, and a client over its limit gets the 429 instead.

With limiting switched off (``BISMAN_RATELIMIT["ENABLED"] = False`` or
``BISMAN_RATELIMIT_ENABLED=0``), the middleware takes itself out of the
chain at start-up: no checks, no headers, no storage traffic.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.exceptions import MiddlewareNotUsed
from django.http import HttpRequest
from django.http.response import HttpResponseBase

from bisman_ratelimit.core import Decision, StorageError
from bisman_ratelimit.web import SingleCheck

from ._decorators import DECLARED, EXEMPT, Declaration
from ._guard import (
    COVERED,
    STATE,
    Counted,
    Guard,
    GuardResult,
    Passed,
    State,
    Target,
    apply_passed,
    view_identity,
)
from ._runtime import get_runtime

__all__ = ["RateLimitMiddleware"]

_UNMATCHED = object()


class RateLimitMiddleware:
    """Counts every request against the configured limits; refuses with 429 or 503."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        runtime = get_runtime()
        if not runtime.enabled:
            raise MiddlewareNotUsed("rate limiting is switched off")
        self.runtime = runtime
        self.planner = runtime.planner
        self.guard = Guard(runtime)
        self.outages = runtime.outages
        self.limiter = runtime.limiter
        self.quick = self.guard.quick
        self.forwarded_meta = runtime.forwarded_meta
        self._targets: dict[tuple[Any, ...], Target | None] = {}
        self.is_async = iscoroutinefunction(get_response)
        if not self.is_async:
            runtime.warm()
        self.process_view: Callable[..., Any]
        if self.is_async:
            markcoroutinefunction(self)
            self.process_view = self._aprocess_view
        else:
            self.process_view = self._process_view

    def _target(self, request: HttpRequest, view: Any) -> Target | None:
        match = request.resolver_match
        route = match.route if match is not None else None
        cache_key = (route, request.method, view)
        try:
            return self._targets[cache_key]
        except KeyError:
            target = self._build(route, request.method or "GET", view)
            if len(self._targets) >= 4096:
                self._targets.clear()
            self._targets[cache_key] = target
            return target

    def _build(self, route: str | None, method: str, view: Any) -> Target | None:
        declared: list[tuple[Declaration, Any]] = []
        if view is not _UNMATCHED:
            identity = view_identity(view)
            for declaration in getattr(view, DECLARED, ()):
                # Async key functions can only be awaited by the view's own wrapper in a sync stack.
                if declaration.applies_to(method) and (self.is_async or not declaration.needs_async):
                    declared.append((declaration, declaration.rule_for(identity)))
        template = self.runtime.template(route) if route is not None else None
        plan = self.planner.plan(
            template,
            method,
            tuple(rule for _, rule in declared),
            exempt=bool(getattr(view, EXEMPT, False)),
        )
        return Target(plan, declared, client_ip=self.runtime.client_ip) if plan.limited else None

    def _unmatched(self, request: HttpRequest) -> Target | None:
        """The defaults, for a request that reached no view (no URL pattern matched)."""
        if request.resolver_match is not None:
            return None
        return self._target(request, _UNMATCHED)

    def _view_target(self, request: HttpRequest, view: Any) -> Target | None:
        """What ``process_view`` counts; tells the view's own decorators which limits it covers."""
        target = self._target(request, view)
        if target is not None and target.covered:
            request.__dict__[COVERED] = target.covered
        return target

    def _passed(
        self, request: HttpRequest, target: Target, single: SingleCheck, decision: Decision
    ) -> HttpResponseBase | None:
        """Settle a quick single check: an allowed request keeps only its decision for the response."""
        if decision.allowed:
            request.__dict__[STATE] = Passed(single, decision)
            return None
        return self._settle(request, target, Counted(single.verdict(decision)))

    def _settle(self, request: HttpRequest, target: Target, counted: GuardResult) -> HttpResponseBase | None:
        """The refusal for a counted request, if any; remembered for the response on the way out."""
        refusal = self.guard.decide(request, target, counted)
        request.__dict__[STATE] = State(target, counted, refusal is not None)
        return refusal

    # -- sync

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        response: HttpResponseBase = self.get_response(request)
        state: State | Passed | None = request.__dict__.get(STATE)
        if isinstance(state, Passed):
            apply_passed(response, state)
            return response
        if state is None:
            target = self._unmatched(request)
            if target is None:
                return response
            counted = self.guard.check(request, target)
            refusal = self.guard.decide(request, target, counted)
            if refusal is not None:
                return refusal
            state = State(target, counted, False)
        if not state.refused:
            self.guard.finish(request, state.target, state.counted, response)
        return response

    def _process_view(
        self, request: HttpRequest, view: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> HttpResponseBase | None:
        # _view_target() and _passed() inlined: this runs on every request.
        match = request.resolver_match
        try:
            target = self._targets[(match.route if match is not None else None, request.method, view)]
        except KeyError:
            target = self._target(request, view)
        if target is None:
            return None
        if target.covered:
            request.__dict__[COVERED] = target.covered
        single = target.quick
        if single is not None and self.quick:
            args = single.hit_args_in(request.META, self.forwarded_meta)
            try:
                decision = self.limiter.hit(*args)
            except StorageError as exc:
                failed = self.guard.outage(request, (args[0],), exc)
                if failed is not None:
                    return self._settle(request, target, failed)
                decision = self.runtime.local()[0].hit(*args)
            else:
                if self.outages.down:
                    self.outages.recovered()
            if decision.allowed:
                request.__dict__[STATE] = Passed(single, decision)
                return None
            return self._settle(request, target, Counted(single.verdict(decision)))
        return self._settle(request, target, self.guard.check(request, target))

    # -- async

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]] = self.get_response
        response = await get_response(request)
        state: State | Passed | None = request.__dict__.get(STATE)
        if isinstance(state, Passed):
            apply_passed(response, state)
            return response
        if state is None:
            target = self._unmatched(request)
            if target is None:
                return response
            counted = await self.guard.acheck(request, target)
            refusal = self.guard.decide(request, target, counted)
            if refusal is not None:
                return refusal
            state = State(target, counted, False)
        if not state.refused:
            await self.guard.afinish(request, state.target, state.counted, response)
        return response

    async def _aprocess_view(
        self, request: HttpRequest, view: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> HttpResponseBase | None:
        target = self._view_target(request, view)
        if target is None:
            return None
        single = target.quick
        if single is not None and self.quick:
            args = single.hit_args_in(request.META, self.forwarded_meta)
            try:
                decision = await self.runtime.ahit(request, *args)
            except StorageError as exc:
                failed = self.guard.outage(request, (args[0],), exc)
                if failed is not None:
                    return self._settle(request, target, failed)
                decision = await self.runtime.local()[1].hit(*args)
            else:
                if self.outages.down:
                    self.outages.recovered()
            return self._passed(request, target, single, decision)
        return self._settle(request, target, await self.guard.acheck(request, target))
