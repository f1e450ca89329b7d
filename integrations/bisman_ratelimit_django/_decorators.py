"""``@ratelimit``: limits written on a view.

::

    @ratelimit("5/minute", key="ip")
    def login(request): ...

    @ratelimit("100/hour", key="user", block=False)
    async def search(request):
        if request.ratelimit.limited: ...

    @method_decorator(ratelimit("10/minute", methods=["POST"]), name="dispatch")
    class Upload(View): ...

The decorator is built from the middleware's own parts, as Django builds
``decorator_from_middleware``: the same targets, checks and responses. It
declares its limits on the view too, so when ``RateLimitMiddleware`` runs,
the middleware counts them in its own storage call and the decorator only
steps aside; without the middleware it checks on its own.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest

from bisman_ratelimit.core import Algorithm, InvalidArgument, LimitLike
from bisman_ratelimit.web import KeySource, LimitOptions, RoutePlan, Rule, Verdict, covers

from ._guard import COVERED, Guard, Passed, RateLimitResult, Target, apply_passed, view_identity
from ._runtime import Runtime, get_runtime

# View attributes the middleware reads.
DECLARED = "bisman_ratelimit_declared"
EXEMPT = "bisman_ratelimit_exempt"

V = TypeVar("V", bound=Callable[..., Any])

_NOT_CHECKED = RateLimitResult(False, (), Verdict(200, ()))
_NONE: frozenset[Declaration] = frozenset()


class Declaration:
    """One ``@ratelimit(...)``: its options, and its rule for each view it decorates.

    ``block=False`` is ``options.shadow``: such limits never refuse.
    """

    def __init__(self, options: LimitOptions, *, methods: Iterable[str] | None = None) -> None:
        if not isinstance(options, LimitOptions):
            raise InvalidArgument(f"options must be a LimitOptions, got {options!r}")
        if isinstance(methods, str):
            methods = [methods]
        if methods is not None:
            methods = [m for m in methods]
            if not methods or not all(isinstance(m, str) and m.strip() for m in methods):
                raise InvalidArgument(f"methods must be HTTP method names such as 'POST', got {methods!r}")
        self.methods = frozenset(m.strip().upper() for m in methods) if methods is not None else None
        self.options = options
        self.group = options.group
        self.block = not options.shadow
        self.needs_async = iscoroutinefunction(options.key) or iscoroutinefunction(options.cost)
        self._rules: dict[str, Rule] = {}
        self._runtime: Runtime | None = None
        self._guard: Guard | None = None
        self._targets: dict[tuple[str, tuple[Declaration, ...]], Target] = {}

    def applies_to(self, method: str) -> bool:
        """Whether this declaration counts a ``method`` request (what is written for GET counts HEAD)."""
        return covers(self.methods, method)

    def rule_for(self, identity: str) -> Rule:
        """The rule for a view: counters named after the group, else after the view."""
        scope = self.group or identity
        rule = self._rules.get(scope)
        if rule is None:
            name = self.group or identity.rsplit(".", 1)[-1]
            rule = Rule.declared(self.options, scope=scope, name=name)
            self._rules[scope] = rule
        return rule

    def _target(self, identity: str, declarations: tuple[Declaration, ...]) -> tuple[Guard, Target]:
        runtime = get_runtime()
        if runtime is not self._runtime or self._guard is None:
            self._guard, self._targets, self._runtime = Guard(runtime), {}, runtime
        cache_key = (identity, declarations)
        target = self._targets.get(cache_key)
        if target is None:
            pairs = [(declaration, declaration.rule_for(identity)) for declaration in declarations]
            plan = RoutePlan(
                route=self.group or identity,
                rules=tuple(rule for _, rule in pairs),
                global_policy=None,
                header_style=runtime.settings.headers,
            )
            target = self._targets[cache_key] = Target(plan, pairs, client_ip=runtime.client_ip)
        return self._guard, target

    def _pending(
        self,
        request: HttpRequest,
        stack: tuple[Declaration, ...],
        members: frozenset[Declaration],
        unfiltered: bool,
    ) -> tuple[Declaration, ...]:
        """What this stack of decorators must count now: nothing if the middleware or an outer one did,
        or if limiting is switched off."""
        if not get_runtime().enabled:
            if "ratelimit" not in request.__dict__ and not all(d.block for d in stack):
                request.ratelimit = _NOT_CHECKED  # type: ignore[attr-defined]
            return ()
        covered: frozenset[Declaration] | None = request.__dict__.get(COVERED)
        if covered is None:
            # The usual case: nothing counted yet, no method filter.
            request.__dict__[COVERED] = members
            if unfiltered:
                return stack
            covered = _NONE
        elif self in covered:
            return ()
        else:
            request.__dict__[COVERED] = covered | members
        method = request.method or "GET"
        pending = tuple(d for d in stack if d not in covered and d.applies_to(method))
        if "ratelimit" not in request.__dict__ and not all(d.block for d in stack):
            request.ratelimit = _NOT_CHECKED  # type: ignore[attr-defined]
        return pending

    def __call__(self, view: V) -> V:
        identity = view_identity(view)
        # The outermost decorator of a stack counts them all in one storage call.
        stack: tuple[Declaration, ...] = (*getattr(view, DECLARED, ()), self)
        members = frozenset(stack)
        unfiltered = all(d.methods is None for d in stack)
        wrapper: Callable[..., Any]
        if iscoroutinefunction(view):

            async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                pending = self._pending(request, stack, members, unfiltered)
                if not pending:
                    return await view(request, *args, **kwargs)
                guard, target = self._target(identity, pending)
                counted = await guard.acheck(request, target)
                if isinstance(counted, Passed):  # allowed by a quick check
                    response = await view(request, *args, **kwargs)
                    apply_passed(response, counted)
                    return response
                refusal = guard.decide(request, target, counted)
                if refusal is not None:
                    return refusal
                response = await view(request, *args, **kwargs)
                await guard.afinish(request, target, counted, response)
                return response

        else:

            def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                pending = self._pending(request, stack, members, unfiltered)
                if not pending:
                    return view(request, *args, **kwargs)
                guard, target = self._target(identity, pending)
                counted = guard.check(request, target)
                if isinstance(counted, Passed):  # allowed by a quick check
                    response = view(request, *args, **kwargs)
                    apply_passed(response, counted)
                    return response
                refusal = guard.decide(request, target, counted)
                if refusal is not None:
                    return refusal
                response = view(request, *args, **kwargs)
                guard.finish(request, target, counted, response)
                return response

        functools.update_wrapper(wrapper, view)
        setattr(wrapper, DECLARED, stack)
        return wrapper  # type: ignore[return-value]


def ratelimit(
    limits: LimitLike | Sequence[LimitLike] | None = None,
    *,
    rate: LimitLike | Sequence[LimitLike] | None = None,
    key: KeySource = "ip",
    group: str | None = None,
    methods: Iterable[str] | None = None,
    method: str | Iterable[str] | None = None,
    block: bool = True,
    algorithm: Algorithm = "sliding_window",
    cost: int | Callable[..., Any] = 1,
    exempt_ips: Sequence[str] = (),
    exempt_users: Sequence[str] = (),
    deduct_when: Sequence[int] = (),
) -> Declaration:
    """Limit a view: ``@ratelimit("5/minute", key="ip")``.

    ``key`` is ``"ip"``, ``"user"``, ``"api_key"``, ``"header:<name>"`` or a
    function of the request (async for async views) returning a string, or
    None to count by address. ``group`` names the counters, so views with
    the same group share them (default: one set per view). ``methods``
    limits only those methods. ``block=False`` never refuses: the view finds
    ``request.ratelimit.limited`` set instead. ``cost`` is a number or a
    function of the request; ``deduct_when`` lists the response statuses
    that count (e.g. ``[401, 403]`` for failed logins).

    ``rate=`` and ``method=`` are django-ratelimit's names for ``limits``
    and ``methods``; the short notation (``"5/m"``, ``"100/5m"``) works in
    either. This decorator keeps its own defaults (429 with headers); for
    django-ratelimit's own behaviour use ``bisman_ratelimit_django.compat``.
    """
    if limits is not None and rate is not None:
        raise InvalidArgument(
            f"give the limits once, as the first argument or as rate=, not both: got {limits!r} and {rate!r}"
        )
    if methods is not None and method is not None:
        raise InvalidArgument(
            f"give the methods once, as methods= or as method=, not both: got {methods!r} and {method!r}"
        )
    limits = limits if limits is not None else rate
    if limits is None:
        raise InvalidArgument("@ratelimit needs limits, e.g. ratelimit('5/minute') or ratelimit(rate='5/m')")
    if method is not None:
        methods = [method] if isinstance(method, str) else method
    if not isinstance(block, bool):
        raise InvalidArgument(f"block must be True or False, got {block!r}")
    options = LimitOptions(
        limits=limits,
        key=key,
        algorithm=algorithm,
        cost=cost,
        shadow=not block,
        exempt_ips=exempt_ips,
        exempt_users=exempt_users,
        deduct_when=deduct_when,
        group=group,
    )
    return Declaration(options, methods=methods)


def ratelimit_exempt(view: V) -> V:
    """Never limit this view, neither by the file's defaults nor by the global limit."""
    setattr(view, EXEMPT, True)
    return view
