"""``Limiter``: the Flask extension, spelled as Flask-Limiter spells it, on this library's engine.

``init_app`` reads the ``RATELIMIT_*`` keys of ``app.config`` once and
registers two hooks. Before a request, the limits of its endpoint (the
application limits, the defaults, the route's and its blueprints' own, and
the limits file's) are counted in one storage call, through the shared
:class:`~bisman_ratelimit.web.Planner` and
:class:`~bisman_ratelimit.web.Evaluation` (one limit on the client address
takes the :class:`~bisman_ratelimit.web.SingleCheck` fast path). A request
over a limit raises :class:`RateLimitExceeded`. After the request,
``deduct_when`` limits whose response does not count are given back, and
the rate-limit header fields are added to the response.

What an endpoint needs checked is worked out once per endpoint, method and URL rule.
Turned off (``enabled=False``, ``RATELIMIT_ENABLED`` or
``BISMAN_RATELIMIT_ENABLED``), the extension registers no hook: no headers,
no storage traffic.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, cast

import flask
from flask import Blueprint, Flask, request
from flask.wrappers import Response

from bisman_ratelimit import Limiter as Engine
from bisman_ratelimit.backends import MemoryStorage
from bisman_ratelimit.core import (
    ALGORITHMS,
    Algorithm,
    ConfigurationError,
    Decision,
    InvalidArgument,
    Limit,
    LimitLike,
    OutagePolicy,
    OutageReaction,
    StorageError,
)
from bisman_ratelimit.web import (
    CONTENT_TYPE,
    UNAVAILABLE,
    ClientIP,
    Evaluation,
    HeaderName,
    HeaderStyle,
    OutageLog,
    Planner,
    RateLimitConfig,
    RoutePlan,
    Rule,
    SingleCheck,
    TrustedProxies,
    Verdict,
    decide,
    enabled_from_env,
    load_config,
    note_memory_default,
    outage_reaction,
    parse_switch,
    storage_url_from_env,
    template_forms,
)

from ._declare import Declaration, KeyFunc, LimitDecorator, qualified_name
from ._errors import RateLimitExceeded, limit_text

__all__ = ["Limiter"]

logger = logging.getLogger("bisman_ratelimit.flask")

# Flask-Limiter's strategy names; this library's algorithm names are taken as well.
STRATEGIES: Mapping[str, Algorithm] = {
    "fixed-window": "fixed_window",
    "moving-window": "sliding_log",
    "sliding-window-counter": "sliding_window",
}
# Flask-Limiter settings this extension does not read, and what to do instead.
_UNSUPPORTED = {
    "RATELIMIT_STORAGE_OPTIONS": "put connection options in the storage URL (RATELIMIT_STORAGE_URI)",
    "RATELIMIT_HEADER_LIMIT": "the header names are the IETF ones (RateLimit, RateLimit-Policy)",
    "RATELIMIT_HEADER_REMAINING": "the header names are the IETF ones (RateLimit, RateLimit-Policy)",
    "RATELIMIT_HEADER_RESET": "the header names are the IETF ones (RateLimit, RateLimit-Policy)",
    "RATELIMIT_HEADER_RETRY_AFTER": "Retry-After is always sent with a refusal",
    "RATELIMIT_HEADER_RETRY_AFTER_VALUE": "Retry-After is always a number of seconds",
    "RATELIMIT_META": "meta limits are not supported",
    "RATELIMIT_ON_META_BREACH_CALLBACK": "meta limits are not supported",
    "RATELIMIT_ON_BREACH_CALLBACK": "register @app.errorhandler(429); it receives RateLimitExceeded",
    "RATELIMIT_FAIL_ON_FIRST_BREACH": "every limit of a request is counted in one call, all or none",
    "RATELIMIT_IN_MEMORY_FALLBACK": (
        "the fallback counts the request's own limits: set RATELIMIT_IN_MEMORY_FALLBACK_ENABLED"
    ),
    "RATELIMIT_REQUEST_IDENTIFIER": "limits are counted per endpoint",
    "RATELIMIT_KEY_FUNC": "give the key function to Limiter(key_func)",
}
_STATE = "bisman_ratelimit.flask"
_GO_ON = Verdict(200, ())
_MISSING: Any = object()
_CACHE_SIZE = 4096


def _switch(config: Mapping[str, Any], name: str) -> bool | None:
    value = config.get(name)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return parse_switch(value, where=name)
    raise ConfigurationError(f"{name} must be True or False, got {value!r}")


def _algorithm(strategy: str) -> Algorithm:
    found = STRATEGIES.get(strategy)
    if found is not None:
        return found
    if strategy in ALGORITHMS:
        return cast(Algorithm, strategy)
    raise ConfigurationError(
        f"unknown rate-limiting strategy {strategy!r}: expected one of "
        f"{', '.join(sorted([*STRATEGIES, *ALGORITHMS]))}"
    )


def _key_text(value: object) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return str(value)
    raise InvalidArgument(f"a key function must return a string or None, got {value!r}")


def _cost_value(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgument(f"a cost function must return a whole number >= 1, got {value!r}")
    return value


class _Target:
    """What one endpoint and method need checked, worked out once."""

    __slots__ = ("callables", "conditional", "deduct", "items", "method", "plan", "route", "rules", "single")

    def __init__(
        self,
        *,
        route: str | None,
        method: str,
        plan: RoutePlan,
        declared: Sequence[tuple[Declaration, Rule]],
        client_ip: ClientIP,
    ) -> None:
        self.route = route
        self.method = method
        self.plan = plan
        self.rules = tuple(rule for _, rule in declared)
        # (rule, exempt_when) of limits a function of the request may skip: their plan is per request.
        self.conditional = tuple(
            (rule, declaration.exempt_when)
            for declaration, rule in declared
            if declaration.exempt_when is not None
        )
        self.single = None if self.conditional else SingleCheck.of(plan, client_ip=client_ip, headers=True)
        self.callables = any(rule.kind == "custom" or callable(rule.cost) for rule in plan.rules)
        self.deduct: dict[Rule, Callable[[Response], bool]] = {
            rule: declaration.deduct_when for declaration, rule in declared if declaration.deduct_when
        }
        # item name -> (limit, error message): what RateLimitExceeded reports.
        self.items: dict[str, tuple[Limit, Any]] = {}
        messages = {rule: declaration.error_message for declaration, rule in declared}
        for rule in (*plan.rules, *self.rules):
            for name, limit in zip(rule.item_names, rule.limits, strict=True):
                self.items.setdefault(name, (limit, messages.get(rule)))

    def counts(self, rule: Rule, response: Response) -> bool:
        """Whether ``response`` stays counted for a ``deduct_when`` rule."""
        judge = self.deduct.get(rule)
        return bool(judge(response)) if judge is not None else response.status_code in rule.deduct_when


class _Counted:
    """What the check before a request left for its response."""

    __slots__ = ("engine", "evaluation", "target", "verdict")

    def __init__(
        self, target: _Target, verdict: Verdict, evaluation: Evaluation | None, engine: Engine
    ) -> None:
        self.target = target
        self.verdict = verdict
        self.evaluation = evaluation
        self.engine = engine


class _Runtime:
    """One app's storage, planner and hooks, built by ``init_app`` from the extension and the config."""

    def __init__(
        self,
        limiter: Limiter,
        *,
        engine: Engine,
        planner: Planner,
        algorithm: Algorithm,
        client_ip: ClientIP,
        on_outage: OutagePolicy,
        defaults: tuple[Declaration, ...],
        application: tuple[Declaration, ...],
        metrics: Any,
        api_key_header: str,
    ) -> None:
        self.limiter = limiter
        self.engine = engine
        self.planner = planner
        self.algorithm = algorithm
        self.client_ip = client_ip
        self.forwarded = "HTTP_FORWARDED" if client_ip.header == "forwarded" else "HTTP_X_FORWARDED_FOR"
        self.on_outage = on_outage
        self.defaults = defaults
        self.application = application
        self.metrics = metrics
        # Metrics want a Verdict for every request: then no request takes the quick path.
        self.quick = metrics is None
        self.api_key_header = api_key_header
        self.outages = OutageLog(logger)
        self.paths = (
            frozenset(route.path for route in planner.config.routes) if planner.config else frozenset()
        )
        # (endpoint, method, URL rule): a view served by several URL rules may have a file entry for
        # some of them only.
        self.targets: dict[tuple[str, str, str], _Target | None] = {}
        self._local: Engine | None = None

    # -- worked out once per endpoint, method and URL rule

    def target(self, app: Flask, endpoint: str, method: str, url_rule: str) -> _Target | None:
        cache_key = (endpoint, method, url_rule)
        found = self.targets.get(cache_key, _MISSING)
        if found is _MISSING:
            found = self._build(app, endpoint, method, url_rule)
            if len(self.targets) >= _CACHE_SIZE:
                self.targets.clear()
            self.targets[cache_key] = found
        return cast("_Target | None", found)

    def _template(self, url_rule: str) -> str:
        return next((form for form in template_forms(url_rule) if form in self.paths), url_rule)

    def _build(self, app: Flask, endpoint: str, method: str, url_rule: str) -> _Target | None:
        limiter = self.limiter
        if endpoint.rsplit(".", 1)[-1] == "static":
            return None
        view = app.view_functions.get(endpoint)
        name = qualified_name(view) if view is not None else ""
        if name in limiter._exempt_views:
            return None
        parts = endpoint.split(".")
        blueprints = [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]
        blueprint_exempt = any(bp in limiter._exempt_blueprints for bp in blueprints)
        decorated = list(limiter._route_limits.get(name, ()))
        if not decorated or all(not d.override_defaults for d in decorated):
            decorated.extend(d for bp in blueprints for d in limiter._blueprint_limits.get(bp, ()))
        applicable = [d for d in decorated if d.applies_to(method)]
        template = self._template(url_rule)
        config = self.planner.config
        listed = config is not None and config.route_for(template, method) is not None
        declared: list[tuple[Declaration, Rule]] = []
        if not blueprint_exempt:
            declared.extend(
                (d, d.rule_for(endpoint, method, self.algorithm))
                for d in self.application
                if d.applies_to(method)
            )
        with_defaults = not applicable or all(not d.override_defaults for d in decorated)
        if with_defaults and not blueprint_exempt and not listed:
            if self.defaults:
                declared.extend(
                    (d, d.rule_for(endpoint, method, self.algorithm))
                    for d in self.defaults
                    if d.applies_to(method)
                )
            elif self.planner.default_rule is not None:
                # The limits file's defaults, which the planner would add only when nothing is declared.
                declared.append((_FILE_DEFAULTS, self.planner.default_rule))
        declared.extend((d, d.rule_for(endpoint, method, self.algorithm)) for d in applicable)
        plan = self.planner.plan(template, method, tuple(rule for _, rule in declared))
        target = _Target(
            route=template, method=method, plan=plan, declared=declared, client_ip=self.client_ip
        )
        if not plan.limited and not target.conditional:
            return None
        return target

    # -- per request

    def before(self) -> Response | None:
        req = request._get_current_object()  # type: ignore[attr-defined]
        rule = req.url_rule
        if rule is None:
            return None  # no endpoint (a 404): nothing to count, as in Flask-Limiter
        method = req.method
        target = self.targets.get((rule.endpoint, method, rule.rule), _MISSING)
        if target is _MISSING:
            target = self.target(flask.current_app, rule.endpoint, method, rule.rule)
        if target is None:
            return None
        filters = self.limiter._request_filters
        if filters and any(fn() for fn in filters):
            return None
        environ = req.environ
        single = target.single
        if single is not None:
            args = single.hit_args_in(environ, self.forwarded)
            engine = self.engine
            try:
                decision = engine.hit(*args)
            except StorageError as exc:
                failed = self._outage(req, (args[0],), exc)
                if failed is not None:
                    return self._settle(req, target, failed, None, engine)
                engine = self._fallback()
                decision = engine.hit(*args)
            else:
                if self.outages.down:
                    self.outages.recovered()
            if decision.allowed and self.quick:
                environ[_STATE] = (single, decision)
                return None
            return self._settle(req, target, single.verdict(decision), None, engine)
        return self._general(req, target)

    def _general(self, req: flask.Request, target: _Target) -> Response | None:
        plan = target.plan
        if target.conditional:
            skipped = {rule for rule, exempt_when in target.conditional if exempt_when()}
            if skipped:
                rules = tuple(rule for rule in target.rules if rule not in skipped)
                plan = self.planner.plan(target.route, target.method, rules)
                if not plan.limited:
                    return None
        environ = req.environ
        client_ip = self.client_ip
        ip = client_ip.client(environ.get("REMOTE_ADDR"), environ.get(self.forwarded))
        custom_keys: list[str | None] | None = None
        costs: list[int] | None = None
        if target.callables:
            custom_keys = [_key_text(rule.key()) if callable(rule.key) else None for rule in plan.rules]
            costs = [_cost_value(rule.cost()) if callable(rule.cost) else 1 for rule in plan.rules]
        headers = req.headers
        evaluation = Evaluation.start(
            plan,
            ip=ip,
            ip_key=client_ip.key(ip) if ip is not None else None,
            header=headers.get,
            api_key=headers.get(self.api_key_header) or None,
            custom_keys=custom_keys,
            costs=costs,
        )
        engine = self.engine
        try:
            decide(engine, evaluation)
        except StorageError as exc:
            failed = self._outage(req, evaluation.keys, exc)
            if failed is not None:
                return self._settle(req, target, failed, None, engine)
            engine = self._fallback()
            evaluation = evaluation.restart()
            decide(engine, evaluation)
        else:
            if self.outages.down:
                self.outages.recovered()
        return self._settle(
            req, target, evaluation.verdict, evaluation if evaluation.deducts else None, engine
        )

    def _settle(
        self,
        req: flask.Request,
        target: _Target,
        verdict: Verdict,
        evaluation: Evaluation | None,
        engine: Engine,
    ) -> Response | None:
        """Remember the verdict for the response; the refusal, if any."""
        if self.metrics is not None:
            self.metrics.record_decision(route=target.route, allowed=verdict.allowed, reason=verdict.reason)
        if verdict.headers or evaluation is not None:
            req.environ[_STATE] = _Counted(target, verdict, evaluation, engine)
        if verdict.status == 200:
            return None
        problem = verdict.problem()
        body = problem.body() if problem is not None else b""
        if verdict.status != 429:
            return Response(body, status=verdict.status, content_type=CONTENT_TYPE)
        name = verdict.violated[0] if verdict.violated else ""
        limit, message = target.items.get(name, (None, None))
        if limit is None:
            limit = target.plan.rules[0].limits[0] if target.plan.rules else Limit(amount=1, period=1)
        description = (message() if callable(message) else message) or limit_text(limit)
        if message and problem is not None:
            body = replace(problem, detail=description).body()
        response = Response(body, status=429, content_type=CONTENT_TYPE)
        raise RateLimitExceeded(limit, verdict, description=description, response=response)

    def _outage(self, req: flask.Request, keys: Sequence[str], exc: StorageError) -> Verdict | None:
        """What the outage policy makes of a storage error: a verdict, or None to count locally."""
        reaction = outage_reaction(
            self.on_outage, keys, exc, f"{req.method} {req.path}", self.outages, self.metrics
        )
        if reaction == "fallback":
            return None
        return _GO_ON if reaction == "open" else UNAVAILABLE

    def _fallback(self) -> Engine:
        """Counters of this process, for requests the outage policy sends to the fallback."""
        if self._local is None:
            self._local = Engine(MemoryStorage())
        return self._local

    def after(self, response: Response) -> Response:
        # The proxy's own attribute lookup costs several times what unwrapping it does.
        state = request._get_current_object().environ.pop(_STATE, None)  # type: ignore[attr-defined]
        if state is None:
            return response
        headers = response.headers
        if type(state) is tuple:
            single, decision = cast("tuple[SingleCheck, Decision]", state)
            if single.draft:
                headers.add("RateLimit-Policy", single.policy_header)
                headers.add("RateLimit", single.ratelimit(decision))
            return response
        counted = cast(_Counted, state)
        verdict = counted.verdict
        evaluation = counted.evaluation
        if evaluation is not None and verdict.allowed:
            target = counted.target
            evaluation.on_response(response.status_code, lambda rule: target.counts(rule, response))
            try:
                verdict = decide(counted.engine, evaluation)
            except StorageError as exc:
                # The response is made: nothing is left to refuse.
                self.outages.failed(exc, None, f"{request.method} {request.path}")
        for name, value in verdict.headers:
            headers[name] = value
        return response


# Stands for the limits file's defaults among the declarations of an endpoint.
_FILE_DEFAULTS = Declaration(limits=(Limit(amount=1, period=1),), kind="default")


class Limiter:
    """Rate limits for a Flask app, with Flask-Limiter's arguments and ``RATELIMIT_*`` settings.

    ``key_func`` gives the client's identity (``get_remote_address`` counts
    by client address, trusted proxies and IPv6 prefix applied). Arguments
    left as None are read from ``app.config`` at ``init_app``. Beyond
    Flask-Limiter's: ``config`` (a limits file), ``global_limits`` (a limit
    on the whole server, answered 503), ``trusted_proxies``,
    ``forwarded_header``, ``ipv4_prefix``/``ipv6_prefix``, ``headers`` (the
    header style), ``fail_open``/``on_outage``, ``metrics`` and ``engine`` (a
    ``bisman_ratelimit.Limiter`` built elsewhere). See docs/flask.md.
    """

    def __init__(
        self,
        key_func: KeyFunc | None = None,
        *,
        app: Flask | None = None,
        default_limits: Sequence[str | Limit] | None = None,
        default_limits_per_method: bool | None = None,
        default_limits_exempt_when: Callable[[], bool] | None = None,
        default_limits_deduct_when: Callable[[Response], bool] | None = None,
        default_limits_cost: int | Callable[[], int] | None = None,
        application_limits: Sequence[str | Limit] | None = None,
        application_limits_per_method: bool | None = None,
        application_limits_exempt_when: Callable[[], bool] | None = None,
        application_limits_deduct_when: Callable[[Response], bool] | None = None,
        application_limits_cost: int | Callable[[], int] | None = None,
        headers_enabled: bool | None = None,
        strategy: str | None = None,
        storage_uri: str | None = None,
        swallow_errors: bool | None = None,
        in_memory_fallback_enabled: bool | None = None,
        key_prefix: str = "",
        enabled: bool | None = None,
        config: str | os.PathLike[str] | RateLimitConfig | None = None,
        global_limits: LimitLike | Sequence[LimitLike] | None = None,
        trusted_proxies: TrustedProxies = None,
        forwarded_header: HeaderName = "x-forwarded-for",
        ipv6_prefix: int = 64,
        ipv4_prefix: int = 32,
        api_key_header: str = "x-api-key",
        headers: HeaderStyle | None = None,
        fail_open: bool | None = None,
        on_outage: OutageReaction | OutagePolicy | None = None,
        metrics: Any = None,
        engine: Engine | None = None,
    ) -> None:
        self._key_func = key_func
        self._args: dict[str, Any] = {
            "default_limits": default_limits,
            "default_limits_per_method": default_limits_per_method,
            "default_limits_exempt_when": default_limits_exempt_when,
            "default_limits_deduct_when": default_limits_deduct_when,
            "default_limits_cost": default_limits_cost,
            "application_limits": application_limits,
            "application_limits_per_method": application_limits_per_method,
            "application_limits_exempt_when": application_limits_exempt_when,
            "application_limits_deduct_when": application_limits_deduct_when,
            "application_limits_cost": application_limits_cost,
        }
        # Checked now, so a bad limit fails at import rather than on the first request.
        for kind in ("default", "application"):
            if self._args[f"{kind}_limits"]:
                self._declaration(kind, {})
        self._headers_enabled = headers_enabled
        self._strategy = strategy
        self._storage_uri = storage_uri
        self._swallow_errors = swallow_errors
        self._in_memory_fallback_enabled = in_memory_fallback_enabled
        self._key_prefix = key_prefix
        self._enabled = enabled
        self.enabled = enabled is not False
        self._config = (
            load_config(config) if config is not None and not isinstance(config, RateLimitConfig) else config
        )
        self._global_limits = global_limits
        self._client_ip = ClientIP(
            trusted_proxies=trusted_proxies,
            header=forwarded_header,
            ipv6_prefix=ipv6_prefix,
            ipv4_prefix=ipv4_prefix,
        )
        self._api_key_header = api_key_header
        self._headers = headers
        if on_outage is not None and fail_open is not None:
            raise InvalidArgument("give on_outage or fail_open, not both: on_outage='open' is fail_open=True")
        self._fail_open = fail_open
        self._on_outage = OutagePolicy.of(on_outage) if on_outage is not None else None
        self._metrics = metrics
        self._engine = engine
        self._route_limits: dict[str, list[Declaration]] = {}
        self._blueprint_limits: dict[str, list[Declaration]] = {}
        self._exempt_views: set[str] = set()
        self._exempt_blueprints: set[str] = set()
        self._request_filters: list[Callable[[], bool]] = []
        self.runtime: _Runtime | None = None
        if app is not None:
            self.init_app(app)

    def _declaration(self, kind: str, config: Mapping[str, Any]) -> Declaration | None:
        """The defaults or application limits, from the arguments, else from ``config``."""
        args = self._args
        prefix = "RATELIMIT_DEFAULTS" if kind == "default" else "RATELIMIT_APPLICATION"

        def pick(name: str, key: str) -> Any:
            value = args[f"{kind}_limits_{name}"]
            return config.get(key) if value is None else value

        limits = args[f"{kind}_limits"] or config.get(
            "RATELIMIT_DEFAULT" if kind == "default" else "RATELIMIT_APPLICATION"
        )
        if not limits:
            return None
        return Declaration.of(
            limits,
            kind="default" if kind == "default" else "application",
            key_func=self._key_func,
            per_method=bool(pick("per_method", prefix + "_PER_METHOD")),
            exempt_when=pick("exempt_when", prefix + "_EXEMPT_WHEN"),
            deduct_when=pick("deduct_when", prefix + "_DEDUCT_WHEN"),
            cost=pick("cost", prefix + "_COST"),
        )

    def init_app(self, app: Flask) -> None:
        """Read ``app.config`` and start limiting ``app``'s requests (unless turned off)."""
        if self in app.extensions.get("limiter", ()):
            return  # hooked once: a second set of hooks would count every request twice
        config = app.config
        unsupported = sorted(name for name in _UNSUPPORTED if config.get(name) is not None)
        if unsupported:
            raise ConfigurationError(
                "; ".join(f"{name} is not supported: {_UNSUPPORTED[name]}" for name in unsupported)
            )
        explicit = self._enabled if self._enabled is not None else _switch(config, "RATELIMIT_ENABLED")
        self.enabled = enabled_from_env(explicit)
        if not self.enabled:
            return
        strategy = self._strategy or config.get("RATELIMIT_STRATEGY")
        algorithm = _algorithm(strategy) if strategy else "sliding_window"
        headers_enabled = (
            self._headers_enabled
            if self._headers_enabled is not None
            else _switch(config, "RATELIMIT_HEADERS_ENABLED")
        )
        style: HeaderStyle = self._headers or (
            "draft" if headers_enabled is None else "both" if headers_enabled else "none"
        )
        if self._config is not None:
            if self._global_limits is not None:
                raise InvalidArgument("give either config or global_limits: put the global limit in the file")
            planner = Planner(config=self._config, header_style=style)
        else:
            planner = Planner(global_limits=self._global_limits, header_style=style)
        engine = self._engine if self._engine is not None else self._build_engine(config)
        runtime = _Runtime(
            self,
            engine=engine,
            planner=planner,
            algorithm=algorithm,
            client_ip=self._client_ip,
            on_outage=self._outage_policy(config),
            defaults=tuple(d for d in (self._declaration("default", config),) if d is not None),
            application=tuple(d for d in (self._declaration("application", config),) if d is not None),
            metrics=self._metrics,
            api_key_header=self._api_key_header,
        )
        self.runtime = runtime
        before, after = runtime.before, runtime.after

        # Plain functions: Flask checks each hook for a coroutine on every request, and a bound
        # method takes it twice as long.
        def check_request_limits() -> Response | None:
            return before()

        def add_rate_limit_headers(response: Response) -> Response:
            return after(response)

        app.before_request(check_request_limits)
        app.after_request(add_rate_limit_headers)
        app.extensions.setdefault("limiter", set()).add(self)

    def _build_engine(self, config: Mapping[str, Any]) -> Engine:
        url = self._storage_uri or config.get("RATELIMIT_STORAGE_URI") or storage_url_from_env()
        if url is None:
            note_memory_default(logger)
            url = "memory://"
        if not isinstance(url, str) or "://" not in url:
            raise ConfigurationError(
                "RATELIMIT_STORAGE_URI: expected a URL such as 'memory://' or "
                f"'redis://host:6379/0', got {url!r}"
            )
        prefix = self._key_prefix or config.get("RATELIMIT_KEY_PREFIX") or ""
        options = {"prefix": prefix} if prefix and not url.startswith("memory:") else {}
        engine = Engine.from_url(url, **options)
        try:
            # A threaded server serves a few requests at once: their connections are opened now.
            engine.warm(8)
        except StorageError as exc:
            logger.warning("could not open connections to the rate-limit storage in advance: %s", exc)
        return engine

    def _outage_policy(self, config: Mapping[str, Any]) -> OutagePolicy:
        if self._on_outage is not None:
            return self._on_outage
        fallback = self._in_memory_fallback_enabled
        if fallback is None:
            fallback = _switch(config, "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED")
        if fallback:
            return OutagePolicy.of("fallback")
        fail_open = self._fail_open
        if fail_open is None:
            swallow = self._swallow_errors
            fail_open = swallow if swallow is not None else _switch(config, "RATELIMIT_SWALLOW_ERRORS")
        return OutagePolicy.from_fail_open(True if fail_open is None else fail_open)

    # -- declarations

    def _register(self, obj: Any, declaration: Declaration) -> None:
        if isinstance(obj, Blueprint):
            self._blueprint_limits.setdefault(obj.name, []).append(declaration)
        else:
            self._route_limits.setdefault(qualified_name(obj), []).append(declaration)
        if self.runtime is not None:
            self.runtime.targets.clear()

    def limit(
        self,
        limit_value: str,
        *,
        key_func: KeyFunc | None = None,
        per_method: bool = False,
        methods: Sequence[str] | None = None,
        error_message: str | Callable[[], str] | None = None,
        exempt_when: Callable[[], bool] | None = None,
        override_defaults: bool = True,
        deduct_when: Callable[[Response], bool] | None = None,
        cost: int | Callable[[], int] = 1,
        scope: str | None = None,
    ) -> LimitDecorator:
        """A limit on a view function, or on every view of a blueprint: ``@limiter.limit("1/second")``."""
        declaration = Declaration.of(
            limit_value,
            kind="route",
            key_func=key_func or self._key_func,
            scope=scope,
            per_method=per_method,
            methods=methods,
            error_message=error_message,
            exempt_when=exempt_when,
            override_defaults=override_defaults,
            deduct_when=deduct_when,
            cost=cost,
        )
        return LimitDecorator(declaration, self._register)

    def shared_limit(
        self,
        limit_value: str,
        scope: str,
        *,
        key_func: KeyFunc | None = None,
        per_method: bool = False,
        methods: Sequence[str] | None = None,
        error_message: str | Callable[[], str] | None = None,
        exempt_when: Callable[[], bool] | None = None,
        override_defaults: bool = True,
        deduct_when: Callable[[Response], bool] | None = None,
        cost: int | Callable[[], int] = 1,
    ) -> LimitDecorator:
        """A limit whose counters every view decorated with the same ``scope`` shares."""
        return LimitDecorator(
            Declaration.of(
                limit_value,
                kind="shared",
                key_func=key_func or self._key_func,
                scope=scope,
                per_method=per_method,
                methods=methods,
                error_message=error_message,
                exempt_when=exempt_when,
                override_defaults=override_defaults,
                deduct_when=deduct_when,
                cost=cost,
            ),
            self._register,
        )

    def exempt(self, obj: Any) -> Any:
        """No limit for this view; for a blueprint, none of the defaults and application limits."""
        if isinstance(obj, Blueprint):
            self._exempt_blueprints.add(obj.name)
        elif callable(obj):
            self._exempt_views.add(qualified_name(obj))
        else:
            raise InvalidArgument(f"exempt() takes a view function or a Blueprint, got {obj!r}")
        if self.runtime is not None:
            self.runtime.targets.clear()
        return obj

    def request_filter(self, fn: Callable[[], bool]) -> Callable[[], bool]:
        """A function of no arguments; a request for which it returns True is not limited."""
        if not callable(fn):
            raise InvalidArgument(f"request_filter takes a function, got {fn!r}")
        self._request_filters.append(fn)
        return fn
