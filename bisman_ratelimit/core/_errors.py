"""Exceptions raised by bisman-ratelimit.

Every exception derives from :class:`BismanRateLimitError`::

    BismanRateLimitError
    ├── ConfigurationError (also ValueError)  bad input from code or a file
    │   ├── InvalidLimit                      a rate limit that cannot be parsed or used
    │   ├── InvalidArgument                   a bad key, cost, algorithm or URL
    │   ├── ConfigFileError                   a route-limit file; names file, entry, field
    │   └── TTLPolicyError                    a write that breaks its namespace's TTL policy
    └── StorageError                          the backend failed
        ├── StorageUnavailable                it cannot be reached or timed out
        │   └── StorageBusy                   no connection to it came free in time
        └── StorageResponseError              it answered with an error
            └── StorageReadOnly               it answers but refuses writes (a replica, or NOREPLICAS)

Backend exceptions are translated in one place per backend and chained with
``raise ... from exc``, so the original error stays on ``__cause__``.
"""

from __future__ import annotations


class BismanRateLimitError(Exception):
    """Root of every exception this library raises."""


class ConfigurationError(BismanRateLimitError, ValueError):
    """A value given by code or by a configuration file is not usable."""


class InvalidLimit(ConfigurationError):
    """A rate limit that cannot be parsed or can never be satisfied."""


class InvalidArgument(ConfigurationError):
    """A bad key, cost, algorithm name, URL or option."""


class TTLPolicyError(ConfigurationError):
    """A write without a TTL into an ephemeral namespace, or similar."""


class ConfigFileError(ConfigurationError):
    """A route-limit file is invalid. The message names the file, entry and field."""

    def __init__(self, path: str, where: str, field: str | None, problem: str) -> None:
        self.path = path
        self.where = where
        self.field = field
        self.problem = problem
        location = f"{path}: {where}" if where else path
        if field:
            location += f": field {field!r}"
        super().__init__(f"{location}: {problem}")


class StorageError(BismanRateLimitError):
    """The storage backend failed."""


class StorageUnavailable(StorageError):
    """The backend could not be reached, or did not answer in time."""


class StorageBusy(StorageUnavailable):
    """Every pooled connection was busy for longer than the wait allows.

    The call never reached the backend, so it says nothing about the
    backend's health: a circuit breaker does not count it, and the web
    plugins decide such a request on counters of their own process rather
    than let it through.
    """


class StorageResponseError(StorageError):
    """The backend answered with an error."""


class StorageReadOnly(StorageResponseError):
    """The backend answers but refuses writes: a Redis demoted to a replica (``READONLY``), or a
    primary with fewer replicas than its ``min-replicas-to-write`` (``NOREPLICAS``)."""
