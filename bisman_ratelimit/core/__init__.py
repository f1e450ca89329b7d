"""The engine's vocabulary and pure decision math: errors, rates, decisions,
algorithms, keys, the circuit breaker and the generator drivers. No I/O."""

from __future__ import annotations

from bisman_ratelimit.core._algorithms import (
    ALGORITHMS,
    DEFAULT_ALGORITHM,
    REFUNDS,
    Algorithm,
    pack_state,
    unpack_state,
)
from bisman_ratelimit.core._breaker import BreakerState, BreakerStats, CircuitBreaker, Transition
from bisman_ratelimit.core._decision import Decision, MultiDecision, make_decision, most_restrictive
from bisman_ratelimit.core._errors import (
    BismanRateLimitError,
    ConfigFileError,
    ConfigurationError,
    InvalidArgument,
    InvalidLimit,
    StorageBusy,
    StorageError,
    StorageReadOnly,
    StorageResponseError,
    StorageUnavailable,
    TTLPolicyError,
)
from bisman_ratelimit.core._flows import adrive, drive
from bisman_ratelimit.core._keys import (
    escape,
    has_hash_tag,
    hash_tag,
    limit_tag,
    make_key,
    parse_limit_tag,
    redis_keys,
    scan_pattern,
    unescape,
)
from bisman_ratelimit.core._outage import (
    OUTAGE_REACTIONS,
    UNDECIDED_CAUSES,
    OutagePolicy,
    OutageReaction,
    UndecidedCause,
    undecided_cause,
)
from bisman_ratelimit.core._rate import Limit, LimitLike, parse_limits

__all__ = [
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
]
