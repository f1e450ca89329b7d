"""bisman-ratelimit: rate limits, sessions and short-lived state on Redis."""

from __future__ import annotations

from bisman_ratelimit._limiter import AsyncLease, AsyncLimiter, Lease, Limiter
from bisman_ratelimit.core import (
    ALGORITHMS,
    DEFAULT_ALGORITHM,
    Algorithm,
    BismanRateLimitError,
    ConfigFileError,
    ConfigurationError,
    Decision,
    InvalidArgument,
    InvalidLimit,
    Limit,
    MultiDecision,
    StorageBusy,
    StorageError,
    StorageReadOnly,
    StorageResponseError,
    StorageUnavailable,
    TTLPolicyError,
    parse_limits,
)

__version__ = "0.1.0"

__all__ = [
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
]
