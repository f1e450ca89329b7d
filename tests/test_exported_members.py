"""The public surface, held: what each package exports, and which modules are public.

A name added to or dropped from an ``__all__`` fails here until the lists
below change with it, so the surface never changes by accident.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import types

import django
import pytest

# The public modules below import Django's request and session machinery.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_project.settings")
django.setup()

# Packages whose __init__ re-exports what users import, with their __all__.
PACKAGES: dict[str, list[str]] = {
    "bisman_ratelimit": [
        "ALGORITHMS",
        "DEFAULT_ALGORITHM",
        "Algorithm",
        "AsyncLease",
        "AsyncLimiter",
        "BismanRateLimitError",
        "ConfigFileError",
        "ConfigurationError",
        "Decision",
        "InvalidArgument",
        "InvalidLimit",
        "Lease",
        "Limit",
        "Limiter",
        "MultiDecision",
        "StorageBusy",
        "StorageError",
        "StorageReadOnly",
        "StorageResponseError",
        "StorageUnavailable",
        "TTLPolicyError",
        "parse_limits",
    ],
    "bisman_ratelimit.core": [
        "ALGORITHMS",
        "DEFAULT_ALGORITHM",
        "OUTAGE_REACTIONS",
        "REFUNDS",
        "UNDECIDED_CAUSES",
        "Algorithm",
        "BismanRateLimitError",
        "BreakerState",
        "BreakerStats",
        "CircuitBreaker",
        "ConfigFileError",
        "ConfigurationError",
        "Decision",
        "InvalidArgument",
        "InvalidLimit",
        "Limit",
        "LimitLike",
        "MultiDecision",
        "OutagePolicy",
        "OutageReaction",
        "StorageBusy",
        "StorageError",
        "StorageReadOnly",
        "StorageResponseError",
        "StorageUnavailable",
        "TTLPolicyError",
        "Transition",
        "UndecidedCause",
        "adrive",
        "drive",
        "escape",
        "has_hash_tag",
        "hash_tag",
        "limit_tag",
        "make_decision",
        "make_key",
        "most_restrictive",
        "pack_state",
        "parse_limit_tag",
        "parse_limits",
        "redis_keys",
        "scan_pattern",
        "undecided_cause",
        "unescape",
        "unpack_state",
    ],
    "bisman_ratelimit.backends": [
        "DEFAULT_BUDGET",
        "RATELIMIT",
        "REDIS_SCHEMES",
        "AsyncAdapter",
        "AsyncFallbackStorage",
        "AsyncRedisStorage",
        "AsyncRefundable",
        "AsyncRoutingStorage",
        "AsyncStorage",
        "BlockedKeys",
        "BoundedMap",
        "Check",
        "FallbackStorage",
        "MemoryStorage",
        "NamespaceRouter",
        "RedisConnection",
        "RedisStorage",
        "Refundable",
        "RoutingStorage",
        "Script",
        "Spec",
        "Storage",
        "async_command",
        "backend_schemes",
        "caches_in",
        "is_async_client",
        "is_cluster_client",
        "is_sync_client",
        "masked_url",
        "memory_options",
        "redis_from_url",
        "register_backend",
        "routed_storage",
        "storage_from_url",
        "sync_command",
        "translate_errors",
    ],
    "bisman_ratelimit.web": [
        "CONTENT_TYPE",
        "ENABLED_ENV",
        "KEY_KINDS",
        "STORAGE_URL_ENV",
        "UNAVAILABLE",
        "ClientIP",
        "CostSource",
        "EnvironmentWarning",
        "Evaluation",
        "Exemptions",
        "HeaderName",
        "HeaderStyle",
        "HitArgs",
        "KeySource",
        "LimitOptions",
        "OutageLog",
        "Planner",
        "Policy",
        "RateLimitConfig",
        "Reason",
        "RoutePlan",
        "Rule",
        "ShadowLog",
        "SingleCheck",
        "TrustedProxies",
        "Verdict",
        "adecide",
        "covers",
        "decide",
        "enabled_from_env",
        "environ_key",
        "load_config",
        "note_memory_default",
        "outage_reaction",
        "parse_config",
        "parse_switch",
        "policy_item",
        "ratelimit_value",
        "sf_string",
        "storage_url_from_env",
        "template_forms",
    ],
    "bisman_ratelimit.stores": [
        "DEFAULT_NAMESPACES",
        "FLAG_TYPES",
        "AsyncChatContext",
        "AsyncFlagAdmin",
        "AsyncFlags",
        "AsyncPresence",
        "AsyncSessionStore",
        "ChatContext",
        "Flag",
        "FlagAdmin",
        "FlagChange",
        "Flags",
        "Flow",
        "MemoryBackend",
        "Namespace",
        "NamespaceRegistry",
        "Participant",
        "Presence",
        "RoomState",
        "Secret",
        "Session",
        "SessionStore",
        "Signer",
        "backend_from_url",
        "default_registry",
        "encode_json",
        "is_session_id",
        "new_session_id",
        "parse_flag_value",
    ],
    "bisman_ratelimit.metrics": [
        "REASONS",
        "AllWorkers",
        "AsyncInstrumentedStorage",
        "CacheMetrics",
        "InstrumentedRedis",
        "InstrumentedStorage",
        "RateLimitMetrics",
        "Reason",
        "exposition",
        "instrument_storage",
    ],
    "bisman_ratelimit.ops": [
        "ADMIN_KEY",
        "PAGES",
        "FlagsPage",
        "HealthPage",
        "HotKeyReport",
        "KeyspaceSample",
        "LimitedClient",
        "LimitsPage",
        "MemoryLimit",
        "NamespaceGrouper",
        "NamespaceRow",
        "NamespacesPage",
        "PageName",
        "PanelEngine",
        "RedisCollector",
        "RouteRow",
        "SessionsPage",
        "audit_hotkeys",
        "backup",
        "cgroup_memory_limit",
        "evaluate",
        "exit_code",
        "failover",
        "flush_namespace",
        "gather_facts",
        "inspect_key",
        "namespace_prefix",
        "parse_size",
        "sample_keyspace",
    ],
    "bisman_ratelimit_starlette": [
        "RateLimit",
        "RateLimitExceeded",
        "RateLimitMiddleware",
        "SessionMiddleware",
        "exempt",
        "limit",
        "rate_limit_exceeded_handler",
    ],
    "bisman_ratelimit_django": ["RateLimitResult", "ratelimit", "ratelimit_exempt"],
    "bisman_ratelimit_flask": ["Limiter", "RateLimitExceeded"],
}

# Public modules that are not re-exporting packages, with their __all__. Django
# finds ``apps`` by convention; users name ``middleware`` and ``sessions`` by
# dotted path in settings (MIDDLEWARE, SESSION_ENGINE) and import ``views`` in
# their URLconf; ``compat`` is django-ratelimit's API, imported in its place;
# the metrics endpoints stay apart so that the packages import without
# prometheus_client; the slowapi and fastapi-limiter surfaces are modules of
# their own, so that moving over is a change of import path; the
# ``bisman-ratelimit`` command is ``ops.cli:main``.
MODULES: dict[str, list[str]] = {
    "bisman_ratelimit.ops.cli": ["main"],
    "bisman_ratelimit.testing": ["RedisServer", "find_server_binary", "free_port"],
    "bisman_ratelimit_starlette.admin": ["AdminPanel"],
    "bisman_ratelimit_starlette.metrics": ["MetricsEndpoint"],
    "bisman_ratelimit_starlette.slowapi": [
        "Limiter",
        "RateLimitExceeded",
        "SlowAPIASGIMiddleware",
        "SlowAPIMiddleware",
        "_rate_limit_exceeded_handler",
        "get_ipaddr",
        "get_remote_address",
    ],
    "bisman_ratelimit_starlette.fastapi_limiter": [
        "FastAPILimiter",
        "RateLimiter",
        "default_identifier",
        "http_default_callback",
    ],
    "bisman_ratelimit_django.admin_panel": [],
    "bisman_ratelimit_django.admin_panel.apps": ["AdminPanelConfig"],
    "bisman_ratelimit_django.admin_panel.models": ["Panel"],
    "bisman_ratelimit_django.admin_panel.urls": ["app_name", "urlpatterns"],
    "bisman_ratelimit_django.apps": ["BismanRateLimitConfig"],
    "bisman_ratelimit_django.compat": [
        "ALL",
        "UNSAFE",
        "RatelimitMiddleware",
        "Ratelimited",
        "Usage",
        "get_usage",
        "is_ratelimited",
        "ratelimit",
    ],
    "bisman_ratelimit_django.middleware": ["RateLimitMiddleware"],
    "bisman_ratelimit_django.sessions": [
        "SessionStore",
        "SessionStoreUnavailableMiddleware",
        "aclose_connections",
        "alogout_everywhere",
        "close_connections",
        "logout_everywhere",
    ],
    "bisman_ratelimit_django.views": ["make_metrics_view", "metrics_view"],
    # Flask-Limiter's key functions live in a module of this name.
    "bisman_ratelimit_flask.util": ["get_remote_address"],
}

TOP_LEVEL = (
    "bisman_ratelimit",
    "bisman_ratelimit_starlette",
    "bisman_ratelimit_django",
    "bisman_ratelimit_flask",
)
SURFACE = {**PACKAGES, **MODULES}


@pytest.mark.parametrize("name", sorted(SURFACE))
def test_all_is_the_listed_surface(name: str) -> None:
    assert importlib.import_module(name).__all__ == SURFACE[name]


@pytest.mark.parametrize("name", sorted(SURFACE))
def test_every_exported_name_is_defined_by_the_project(name: str) -> None:
    module = importlib.import_module(name)
    namespace: dict[str, object] = {}
    exec(f"from {name} import *", namespace)
    assert sorted(set(namespace) - {"__builtins__"}) == sorted(SURFACE[name])
    for member in module.__all__:
        value = getattr(module, member)
        # Re-exports of another project's names would make its changes ours.
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__module__.split(".")[0] in TOP_LEVEL, (name, member, value.__module__)


@pytest.mark.parametrize("name", sorted(PACKAGES))
def test_packages_import_nothing_public_they_do_not_export(name: str) -> None:
    module = importlib.import_module(name)
    public = {
        member
        for member, value in vars(module).items()
        if not member.startswith("_")
        and not isinstance(value, types.ModuleType)
        # from __future__ import annotations
        and member != "annotations"
    }
    assert public == set(module.__all__)


@pytest.mark.parametrize("top", TOP_LEVEL)
def test_only_listed_modules_are_public(top: str) -> None:
    package = importlib.import_module(top)
    public = sorted(
        info.name
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{top}.")
        if not any(part.startswith("_") for part in info.name.split("."))
    )
    assert public == sorted(name for name in SURFACE if name.split(".")[0] == top and name != top)
