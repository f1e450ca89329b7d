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
from bisman_ratelimit.web._policy import (
    CostSource,
    Evaluation,
    HeaderStyle,
    KeySource,
    Planner,
    RoutePlan,
    Rule,
    SingleCheck,
    Verdict,
    run,
    run_async,
)
from bisman_ratelimit.web._problem import CONTENT_TYPE

__all__ = [
    "CONTENT_TYPE",
    "KEY_KINDS",
    "ClientIP",
    "CostSource",
    "Evaluation",
    "Exemptions",
    "HeaderName",
    "HeaderStyle",
    "KeySource",
    "Planner",
    "Policy",
    "RateLimitConfig",
    "RoutePlan",
    "Rule",
    "SingleCheck",
    "TrustedProxies",
    "Verdict",
    "load_config",
    "parse_config",
    "run",
    "run_async",
]
