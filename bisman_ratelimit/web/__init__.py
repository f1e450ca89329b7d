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
from bisman_ratelimit.web._evaluate import (
    UNAVAILABLE,
    Evaluation,
    HitArgs,
    Reason,
    SingleCheck,
    Verdict,
    adecide,
    decide,
    outage_reaction,
)
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

__all__ = [
    "CONTENT_TYPE",
    "KEY_KINDS",
    "UNAVAILABLE",
    "ClientIP",
    "CostSource",
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
    "SingleCheck",
    "TrustedProxies",
    "Verdict",
    "adecide",
    "decide",
    "load_config",
    "outage_reaction",
    "parse_config",
]
