"""What every web plugin shares: the limits file, plans per route, the
evaluation of a request, headers, client addresses and problem bodies."""

from __future__ import annotations

from bisman_ratelimit.web._clientip import ClientIP, HeaderName, TrustedProxies
from bisman_ratelimit.web._config import (
    KEY_KINDS,
    Exemptions,
    Policy,
    RateLimitConfig,
    load_config,
    parse_config,
)
from bisman_ratelimit.web._environment import (
    ENABLED_ENV,
    STORAGE_URL_ENV,
    EnvironmentWarning,
    enabled_from_env,
    note_memory_default,
    parse_switch,
    storage_url_from_env,
)
from bisman_ratelimit.web._evaluate import (
    UNAVAILABLE,
    Evaluation,
    HitArgs,
    Reason,
    SingleCheck,
    Verdict,
    adecide,
    decide,
    environ_key,
    outage_reaction,
)
from bisman_ratelimit.web._headers import policy_item, ratelimit_value, sf_string
from bisman_ratelimit.web._outage_log import OutageLog
from bisman_ratelimit.web._plan import (
    CostSource,
    HeaderStyle,
    KeySource,
    LimitOptions,
    Planner,
    RoutePlan,
    Rule,
)
from bisman_ratelimit.web._problem import CONTENT_TYPE
from bisman_ratelimit.web._routes import covers, template_forms
from bisman_ratelimit.web._shadow_log import ShadowLog

__all__ = [
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
]
