"""System checks: a bad setting or limits file is reported at startup, not on the first request.

- ``bisman_ratelimit.E001``: a field of ``BISMAN_RATELIMIT`` is wrong;
- ``bisman_ratelimit.E002``: the limits file cannot be used (file, entry and field named);
- ``bisman_ratelimit.W001``: an entry of the limits file matches no URL pattern;
- ``bisman_ratelimit.W002``: limits are configured but ``RateLimitMiddleware`` is not installed;
- ``bisman_ratelimit.W003``: limits are keyed or exempted by user, but no ``AuthenticationMiddleware``
  comes before ``RateLimitMiddleware`` (nor a ``USER`` function): their requests would fail with 500.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils.module_loading import import_string

from bisman_ratelimit.core import BismanRateLimitError, ConfigFileError
from bisman_ratelimit.web import Planner, RateLimitConfig, Rule, load_config, template_forms

from ._conf import SETTING, RateLimitSettings, read_settings
from ._decorators import DECLARED

MIDDLEWARE = "bisman_ratelimit_django.middleware.RateLimitMiddleware"
AUTHENTICATION = "django.contrib.auth.middleware.AuthenticationMiddleware"


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Validate ``BISMAN_RATELIMIT`` and the limits file it names."""
    messages: list[CheckMessage] = []
    value, problems = read_settings(getattr(settings, SETTING, None))
    for problem in problems:
        messages.append(Error(str(problem), hint=_hint(problem.field), id="bisman_ratelimit.E001"))
    failed = {problem.field for problem in problems}
    if "STORAGE_URL" not in failed and value.limiter is None:
        messages.extend(_check_storage(value.storage_url))
    config: RateLimitConfig | None = None
    if value.config is not None and "CONFIG" not in failed:
        try:
            config = load_config(value.config)
        except ConfigFileError as exc:
            messages.append(
                Error(
                    f"{SETTING}['CONFIG']: {exc}",
                    hint="Fix the file; `bisman-ratelimit config check <file>` shows the same message.",
                    id="bisman_ratelimit.E002",
                )
            )
    if config is not None:
        messages.extend(_check_routes(config))
    configured = value.config is not None or bool(value.default_limits) or bool(value.global_limits)
    if configured and MIDDLEWARE not in getattr(settings, "MIDDLEWARE", ()):
        messages.append(
            Warning(
                f"{SETTING} sets limits, but {MIDDLEWARE} is not in MIDDLEWARE: "
                "only @ratelimit views are limited.",
                hint=f"Add {MIDDLEWARE!r} to MIDDLEWARE.",
                id="bisman_ratelimit.W002",
            )
        )
    if not failed and (value.config is None or config is not None):
        messages.extend(_check_user_source(value, config))
    return messages


def _check_user_source(value: RateLimitSettings, config: RateLimitConfig | None) -> list[CheckMessage]:
    """Limits by user need request.user, set by AuthenticationMiddleware before RateLimitMiddleware."""
    if value.user is not None:
        return []
    middleware = list(getattr(settings, "MIDDLEWARE", ()))
    installed = MIDDLEWARE in middleware
    # Without the middleware, @ratelimit views read request.user: anything in MIDDLEWARE may set it.
    before = middleware[: middleware.index(MIDDLEWARE)] if installed else middleware
    if any(_authenticates(path) for path in before):
        return []
    if config is not None:
        planner = Planner(config=config)
    else:
        planner = Planner(default_limits=value.default_limits or None, key=value.default_key)
    names = planner.by_user(_declared_rules())
    if not names:
        return []
    return [
        Warning(
            f"limits keyed or exempted by user ({', '.join(names)}) need request.user, but no "
            f"AuthenticationMiddleware {f'comes before {MIDDLEWARE} in' if installed else 'is in'} "
            "MIDDLEWARE: requests they apply to will fail with 500.",
            hint=f"Put {AUTHENTICATION!r} in MIDDLEWARE (before {MIDDLEWARE!r}), or set "
            f"{SETTING}['USER'] to a function of the request that returns the user id. A middleware "
            "of your own that sets request.user can subclass AuthenticationMiddleware, or add "
            "'bisman_ratelimit.W003' to SILENCED_SYSTEM_CHECKS.",
            id="bisman_ratelimit.W003",
        )
    ]


def _authenticates(path: str) -> bool:
    """Whether the middleware at ``path`` sets request.user: Django's, or a subclass of it."""
    if path == AUTHENTICATION:
        return True
    try:
        found = import_string(path)
        # Imported here: it needs django.contrib.auth installed, which limits by user do not.
        from django.contrib.auth.middleware import AuthenticationMiddleware
    except (ImportError, RuntimeError):
        return False
    return isinstance(found, type) and issubclass(found, AuthenticationMiddleware)


def _declared_rules() -> Iterator[Rule]:
    """The rules of the @ratelimit views found in the URL patterns."""
    if not getattr(settings, "ROOT_URLCONF", None):
        return
    for route, view in _url_views(get_resolver()):
        for declaration in getattr(view, DECLARED, ()):
            yield Rule.declared(declaration.options, scope=declaration.group or route)


def _url_views(resolver: URLResolver, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for pattern in resolver.url_patterns:
        route = _join(prefix, str(pattern.pattern))
        if isinstance(pattern, URLResolver):
            yield from _url_views(pattern, route)
        elif isinstance(pattern, URLPattern):
            yield route, pattern.callback


def _hint(field: str) -> str | None:
    return {
        "STORAGE_URL": "For example 'memory://' or 'redis://localhost:6379/0'.",
        "CONFIG": "The path of a .toml or .yaml limits file.",
        "DEFAULT_LIMITS": "For example '100/minute' or ['100/minute', '1000/day'].",
        "TRUSTED_PROXIES": "A hop count such as 1, or CIDRs such as ['10.0.0.0/8'].",
    }.get(field)


def _check_storage(url: str) -> list[CheckMessage]:
    from bisman_ratelimit.backends import storage_from_url

    try:
        storage = storage_from_url(url)  # builds the client; connects on first use only
    except BismanRateLimitError as exc:
        return [Error(f"{SETTING}['STORAGE_URL']: {exc}", id="bisman_ratelimit.E001")]
    storage.close()
    return []


def _join(route1: str, route2: str) -> str:
    # As Django joins the routes of nested URL patterns into resolver_match.route.
    return route2 if not route1 else route1 + route2.removeprefix("^")


def _url_routes(resolver: URLResolver, prefix: str = "") -> Iterator[str]:
    for pattern in resolver.url_patterns:
        route = _join(prefix, str(pattern.pattern))
        if isinstance(pattern, URLResolver):
            yield from _url_routes(pattern, route)
        elif isinstance(pattern, URLPattern):
            yield route


def _check_routes(config: RateLimitConfig) -> list[CheckMessage]:
    if not getattr(settings, "ROOT_URLCONF", None):
        return []
    known: set[str] = set()
    for route in _url_routes(get_resolver()):
        known.update(template_forms(route))
    messages: list[CheckMessage] = []
    for index, entry in enumerate(config.routes):
        if entry.path not in known:
            messages.append(
                Warning(
                    f"{config.source}: routes[{index}] ({entry.path}): field 'path': "
                    "matches no URL pattern, so this entry never applies",
                    hint="Write the route as in urls.py, e.g. 'users/<int:id>/', or as '/users/{id}'.",
                    id="bisman_ratelimit.W001",
                )
            )
    return messages
