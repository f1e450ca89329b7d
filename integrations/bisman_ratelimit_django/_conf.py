"""The ``BISMAN_RATELIMIT`` setting, validated once.

::

    BISMAN_RATELIMIT = {
        "ENABLED": True,                             # default: BISMAN_RATELIMIT_ENABLED, else on
        "STORAGE_URL": "redis://localhost:6379/0",   # default: BISMAN_RATELIMIT_STORAGE_URL, else "memory://"
        "CONFIG": BASE_DIR / "ratelimits.toml",      # per-route limits, optional
        "DEFAULT_LIMITS": ["100/minute"],            # for routes the file does not list
        "TRUSTED_PROXIES": 1,                        # a hop count, or CIDRs such as ["10.0.0.0/8"]
    }

:func:`read_settings` checks every field and reports each problem with the
field's name; the system checks show them all at startup, and
:func:`get_settings` raises the first one. Values are read once per
process and read again only when a test changes the setting.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast, get_args

from django.core.signals import setting_changed

from bisman_ratelimit import AsyncLimiter, Limiter
from bisman_ratelimit.backends import backend_schemes
from bisman_ratelimit.core import (
    ALGORITHMS,
    Algorithm,
    BismanRateLimitError,
    ConfigurationError,
    Limit,
    OutagePolicy,
    parse_limits,
)
from bisman_ratelimit.web import (
    KEY_KINDS,
    STORAGE_URL_ENV,
    ClientIP,
    HeaderStyle,
    enabled_from_env,
    parse_switch,
    storage_url_from_env,
)

SETTING = "BISMAN_RATELIMIT"


@dataclass(frozen=True)
class RateLimitSettings:
    """The validated ``BISMAN_RATELIMIT`` setting."""

    storage_url: str = "memory://"
    # Whether STORAGE_URL, LIMITER or BISMAN_RATELIMIT_STORAGE_URL named the storage (else: memory).
    storage_configured: bool = False
    # False: no checks, no headers, no storage traffic. ENABLED, else BISMAN_RATELIMIT_ENABLED, else on.
    enabled: bool = True
    config: str | None = None
    default_limits: tuple[Limit, ...] = ()
    default_key: str = "ip"
    default_algorithm: Algorithm = "sliding_window"
    global_limits: tuple[Limit, ...] = ()
    client_ip: ClientIP = field(default_factory=ClientIP)
    headers: HeaderStyle = "draft"
    # (request, verdict) -> HttpResponse for 429 and 503, instead of the problem+json body.
    response: Callable[[Any, Any], Any] | None = None
    # request -> user id or None, instead of request.user.get_username(); may be async.
    user: Callable[[Any], Any] | None = None
    api_key_header: str = "x-api-key"
    # When the storage fails: let requests through (True) or answer 503 (False); on_outage, when
    # given, says it instead, and may send requests to counters in this process.
    fail_open: bool = True
    on_outage: OutagePolicy | None = None
    metrics: Any = None
    # Built elsewhere and handed over, e.g. in tests or to share one client.
    limiter: Limiter | None = None
    async_limiter: AsyncLimiter | None = None

    @property
    def outage_policy(self) -> OutagePolicy:
        """What a storage error means for a request: ``ON_OUTAGE``, else what ``FAIL_OPEN`` says."""
        return self.on_outage if self.on_outage is not None else OutagePolicy.from_fail_open(self.fail_open)


@dataclass(frozen=True)
class SettingProblem:
    """One bad field of the setting."""

    field: str
    problem: str

    def __str__(self) -> str:
        where = f"{SETTING}[{self.field!r}]" if self.field else SETTING
        return f"{where}: {self.problem}"


def _storage_url(value: object) -> str:
    if not isinstance(value, str) or "://" not in value:
        raise ConfigurationError(
            f"expected a URL such as 'memory://' or 'redis://host:port/0', got {value!r}"
        )
    scheme = value.split("://", 1)[0].lower()
    if scheme not in ("memory", "redis", "rediss", "unix"):
        # Third-party schemes register themselves; only their factory can judge the rest.
        schemes = backend_schemes()
        if scheme not in schemes:
            raise ConfigurationError(
                f"unsupported scheme {scheme + '://'!r} in {value!r}: expected one of "
                f"{', '.join(s + '://' for s in sorted(schemes))}"
            )
    return value


def _config(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigurationError(f"expected the path of a .toml or .yaml file, got {value!r}")
    return os.fspath(value)


def _default_limits(value: object) -> tuple[Limit, ...]:
    if value is None:
        return ()
    if not isinstance(value, (str, Limit, list, tuple)):
        raise ConfigurationError(
            f"expected a rate limit such as '100/minute' or a list of them, got {value!r}"
        )
    return parse_limits(value)


def _default_key(value: object) -> str:
    if isinstance(value, str) and value in ("ip", "user", "api_key"):
        return value
    if isinstance(value, str) and value.startswith("header:") and len(value) > len("header:"):
        return value.lower()
    raise ConfigurationError(f"expected one of {', '.join(KEY_KINDS)}, got {value!r}")


def _algorithm(value: object) -> Algorithm:
    if not isinstance(value, str) or value not in ALGORITHMS:
        raise ConfigurationError(f"unknown algorithm {value!r}: expected one of {', '.join(ALGORITHMS)}")
    # One of the names just checked.
    return cast(Algorithm, value)


def _on_outage(value: object) -> OutagePolicy:
    if isinstance(value, OutagePolicy):
        return value
    try:
        return OutagePolicy.of(value)  # type: ignore[arg-type]
    except BismanRateLimitError:
        raise ConfigurationError(
            f"expected 'open', 'closed', 'fallback' or a bisman_ratelimit.core.OutagePolicy, got {value!r}"
        ) from None


def _headers(value: object) -> HeaderStyle:
    styles = get_args(HeaderStyle)
    if value not in styles:
        raise ConfigurationError(f"expected one of {', '.join(map(repr, styles))}, got {value!r}")
    return value  # type: ignore[return-value]


def _callable(what: str) -> Callable[[object], Callable[..., Any] | None]:
    def parse(value: object) -> Callable[..., Any] | None:
        if value is None:
            return None
        if isinstance(value, str):
            from django.utils.module_loading import import_string

            try:
                value = import_string(value)
            except ImportError as exc:
                raise ConfigurationError(f"cannot import {value!r}: {exc}") from None
        if not callable(value):
            raise ConfigurationError(f"expected a callable {what} or its dotted path, got {value!r}")
        return value

    return parse


def _header_name(value: object) -> str:
    if not isinstance(value, str) or not value or not all(c.isalnum() or c in "-_" for c in value):
        raise ConfigurationError(f"expected a header name such as 'x-api-key', got {value!r}")
    return value.lower()


def _switch(value: object) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return parse_switch(value, where="a string value")
    raise ConfigurationError(f"expected True, False or a string such as 'off', got {value!r}")


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"expected True or False, got {value!r}")
    return value


def _metrics(value: object) -> Any:
    if value is None:
        return None
    from bisman_ratelimit.metrics import RateLimitMetrics

    if not isinstance(value, RateLimitMetrics):
        raise ConfigurationError(
            f"expected a bisman_ratelimit.metrics._prometheus.RateLimitMetrics, got {value!r}"
        )
    return value


def _limiter(value: object) -> Limiter | None:
    if value is not None and not isinstance(value, Limiter):
        raise ConfigurationError(f"expected a bisman_ratelimit.Limiter, got {value!r}")
    return value


def _async_limiter(value: object) -> AsyncLimiter | None:
    if value is not None and not isinstance(value, AsyncLimiter):
        raise ConfigurationError(f"expected a bisman_ratelimit.AsyncLimiter, got {value!r}")
    return value


# setting field -> (RateLimitSettings attribute, parser)
_FIELDS: dict[str, tuple[str, Callable[[object], Any]]] = {
    "ENABLED": ("enabled", _switch),
    "STORAGE_URL": ("storage_url", _storage_url),
    "CONFIG": ("config", _config),
    "DEFAULT_LIMITS": ("default_limits", _default_limits),
    "DEFAULT_KEY": ("default_key", _default_key),
    "DEFAULT_ALGORITHM": ("default_algorithm", _algorithm),
    "GLOBAL_LIMITS": ("global_limits", _default_limits),
    "HEADERS": ("headers", _headers),
    "RESPONSE": ("response", _callable("(request, verdict) -> HttpResponse")),
    "USER": ("user", _callable("(request) -> user id or None")),
    "API_KEY_HEADER": ("api_key_header", _header_name),
    "FAIL_OPEN": ("fail_open", _boolean),
    "ON_OUTAGE": ("on_outage", _on_outage),
    "METRICS": ("metrics", _metrics),
    "LIMITER": ("limiter", _limiter),
    "ASYNC_LIMITER": ("async_limiter", _async_limiter),
}
# Read together into one ClientIP.
_CLIENT_IP_FIELDS = {
    "TRUSTED_PROXIES": "trusted_proxies",
    "FORWARDED_HEADER": "header",
    "IPV6_PREFIX": "ipv6_prefix",
    "IPV4_PREFIX": "ipv4_prefix",
}
FIELDS = (*_FIELDS, *_CLIENT_IP_FIELDS)


def read_settings(raw: object) -> tuple[RateLimitSettings, list[SettingProblem]]:
    """Validate the setting's value; every bad field gives one problem."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        return RateLimitSettings(), [SettingProblem("", f"expected a dict, got {type(raw).__name__}")]
    problems: list[SettingProblem] = []
    values: dict[str, Any] = {}
    for name in raw:
        if name not in FIELDS:
            import difflib

            close = difflib.get_close_matches(str(name), FIELDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(SettingProblem(str(name), f"unknown field{hint}; allowed: {', '.join(FIELDS)}"))
    for name, (attribute, parse) in _FIELDS.items():
        if name in raw:
            try:
                values[attribute] = parse(raw[name])
            except BismanRateLimitError as exc:
                problems.append(SettingProblem(name, str(exc)))
    try:
        values["enabled"] = enabled_from_env(values.get("enabled"))
    except BismanRateLimitError as exc:
        problems.append(SettingProblem("ENABLED", str(exc)))
    values["storage_configured"] = "STORAGE_URL" in raw or "LIMITER" in raw
    if "STORAGE_URL" not in raw and "LIMITER" not in raw:
        from_env = storage_url_from_env()
        if from_env is not None:
            values["storage_configured"] = True
            try:
                values["storage_url"] = _storage_url(from_env)
            except BismanRateLimitError as exc:
                problems.append(SettingProblem("STORAGE_URL", f"(from {STORAGE_URL_ENV}) {exc}"))
    options = {_CLIENT_IP_FIELDS[name]: raw[name] for name in _CLIENT_IP_FIELDS if name in raw}
    if "header" in options and isinstance(options["header"], str):
        options["header"] = options["header"].lower()
    try:
        values["client_ip"] = ClientIP(**options)
    except BismanRateLimitError as exc:
        problems.append(SettingProblem(_client_ip_field(str(exc)), str(exc)))
    except TypeError as exc:
        problems.append(SettingProblem("", str(exc)))
    if values.get("config") is not None:
        for name in ("DEFAULT_LIMITS", "GLOBAL_LIMITS", "DEFAULT_KEY", "DEFAULT_ALGORITHM"):
            if raw.get(name) is not None:
                problems.append(
                    SettingProblem(
                        name, "CONFIG is set too: the config file's [defaults] and [global] sections say this"
                    )
                )
    if "FAIL_OPEN" in raw and raw.get("ON_OUTAGE") is not None:
        problems.append(
            SettingProblem("FAIL_OPEN", "ON_OUTAGE is set too: give one ('open' is FAIL_OPEN=True)")
        )
    if "async_limiter" in values and values.get("limiter") is None and values["async_limiter"] is not None:
        problems.append(
            SettingProblem("LIMITER", "ASYNC_LIMITER is set, so LIMITER must be too (for sync views)")
        )
    if values.get("limiter") is not None and values.get("async_limiter") is None:
        problems.append(
            SettingProblem("ASYNC_LIMITER", "LIMITER is set, so ASYNC_LIMITER must be too (for async views)")
        )
    return RateLimitSettings(**values), problems


def _client_ip_field(message: str) -> str:
    for name, option in _CLIENT_IP_FIELDS.items():
        if message.startswith(option):
            return name
    return "FORWARDED_HEADER" if message.startswith("header") else ""


_cached: RateLimitSettings | None = None


def get_settings() -> RateLimitSettings:
    """The validated setting, read on first use; raises the first problem found."""
    global _cached
    if _cached is None:
        from django.conf import settings

        value, problems = read_settings(getattr(settings, SETTING, None))
        if problems:
            raise ConfigurationError(str(problems[0]))
        _cached = value
    return _cached


def _reset(*, setting: str, **kwargs: object) -> None:
    global _cached
    if setting == SETTING:
        _cached = None


setting_changed.connect(_reset)
