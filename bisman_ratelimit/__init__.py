"""bisman-ratelimit: rate limits, sessions and short-lived state on Redis."""

from __future__ import annotations

from .algorithms import ALGORITHMS, DEFAULT_ALGORITHM, Algorithm
from .decision import Decision, MultiDecision
from .errors import (
    BismanRateLimitError,
    ConfigFileError,
    ConfigurationError,
    InvalidArgument,
    InvalidLimit,
    StorageError,
    StorageResponseError,
    StorageUnavailable,
    TTLPolicyError,
)
from .limiter import AsyncLease, AsyncLimiter, Lease, Limiter
from .rate import Limit, parse_limits

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
    "StorageError",
    "StorageResponseError",
    "StorageUnavailable",
    "TTLPolicyError",
    "parse_limits",
]
