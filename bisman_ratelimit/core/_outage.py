"""What a limit does when its storage fails: one policy for every caller.

A storage error for a key gets one of three answers:

``"open"``
    allow the request (the limit is not enforced while the storage is down);
``"closed"``
    deny it (a web plugin answers 503);
``"fallback"``
    decide it on counters in this process instead.

A storage that found no free connection in time
(:class:`~bisman_ratelimit.core._errors.StorageBusy`) is not down: the app
is busy. "open" then means "fallback", so that load never opens a way past
the limits; "closed" still refuses.

The answer is chosen per key namespace (longest ``:``-separated prefix
first, ``auth:login`` before ``auth``), else ``default``. When one request
touches several keys the strictest answer wins: closed, then fallback,
then open.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from bisman_ratelimit.core._errors import (
    InvalidArgument,
    StorageBusy,
    StorageResponseError,
    StorageUnavailable,
)

OutageReaction = Literal["fallback", "open", "closed"]
OUTAGE_REACTIONS: tuple[OutageReaction, ...] = get_args(OutageReaction)

# Why a request could not be decided on the storage: no free connection
# in time, the storage unreachable or timed out, or it answered with an error.
UndecidedCause = Literal["busy", "unavailable", "error"]
UNDECIDED_CAUSES: tuple[UndecidedCause, ...] = get_args(UndecidedCause)


def undecided_cause(exc: BaseException) -> UndecidedCause:
    """The cause of a storage error, as metrics label it."""
    if isinstance(exc, StorageBusy):
        return "busy"
    if isinstance(exc, StorageUnavailable) or not isinstance(exc, StorageResponseError):
        return "unavailable"
    return "error"


# Strictest first.
_STRICTNESS: dict[OutageReaction, int] = {"closed": 0, "fallback": 1, "open": 2}


def _reaction(value: object, where: str) -> OutageReaction:
    if value not in OUTAGE_REACTIONS:
        raise InvalidArgument(f"{where} must be one of {', '.join(OUTAGE_REACTIONS)}, got {value!r}")
    return value


@dataclass(frozen=True, kw_only=True)
class OutagePolicy:
    """The reaction to a storage error, by key namespace, else ``default``."""

    default: OutageReaction = "fallback"
    by_namespace: Mapping[str, OutageReaction] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _reaction(self.default, "on_outage")
        if not isinstance(self.by_namespace, Mapping):
            raise InvalidArgument(f"by_namespace must map namespaces to reactions, got {self.by_namespace!r}")
        for namespace, reaction in self.by_namespace.items():
            if (
                not isinstance(namespace, str)
                or not namespace
                or namespace.startswith(":")
                or namespace.endswith(":")
            ):
                raise InvalidArgument(f"bad namespace {namespace!r}: use 'domain' or 'domain:subdomain'")
            _reaction(reaction, f"on_outage for namespace {namespace!r}")
        # A private copy: the caller's dict may change, the policy may not.
        object.__setattr__(self, "by_namespace", dict(self.by_namespace))

    @classmethod
    def of(cls, value: OutageReaction | OutagePolicy) -> OutagePolicy:
        """A policy from a reaction for every key, or the policy itself."""
        return value if isinstance(value, OutagePolicy) else cls(default=_reaction(value, "on_outage"))

    @classmethod
    def from_fail_open(cls, fail_open: bool) -> OutagePolicy:
        """The policy that ``fail_open=True`` (let through) or ``False`` (refuse) has always meant."""
        if not isinstance(fail_open, bool):
            raise InvalidArgument(f"fail_open must be True or False, got {fail_open!r}")
        return cls(default="open" if fail_open else "closed")

    def reaction(self, key: str) -> OutageReaction:
        """The answer for one storage key."""
        routes = self.by_namespace
        if routes:
            end = len(key)
            while end > 0:
                found = routes.get(key[:end])
                if found is not None:
                    return found
                end = key.rfind(":", 0, end)
        return self.default

    def reaction_for(self, keys: Iterable[str], *, busy: bool = False) -> OutageReaction:
        """The strictest answer among the keys of one request (``default`` when there are none).

        ``busy``: the storage found no free connection in time, and "open" becomes "fallback".
        """
        if not self.by_namespace:
            answer = self.default
        else:
            answers = [self.reaction(key) for key in keys]
            answer = min(answers, key=_STRICTNESS.__getitem__) if answers else self.default
        return "fallback" if busy and answer == "open" else answer
