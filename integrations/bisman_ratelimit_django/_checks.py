"""System checks: a bad setting or limits file is reported at startup, not on the first request.

- ``bisman_ratelimit.E001``: a field of ``BISMAN_RATELIMIT`` is wrong;
- ``bisman_ratelimit.E002``: the limits file cannot be used (file, entry and field named);
- ``bisman_ratelimit.W001``: an entry of the limits file matches no URL pattern;
- ``bisman_ratelimit.W002``: limits are configured but ``RateLimitMiddleware`` is not installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning
from django.urls import URLPattern, URLResolver, get_resolver

from bisman_ratelimit.core import BismanRateLimitError, ConfigFileError
from bisman_ratelimit.web import RateLimitConfig, load_config, template_forms

from ._conf import SETTING, read_settings

MIDDLEWARE = "bisman_ratelimit_django.middleware.RateLimitMiddleware"


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
    return messages


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
