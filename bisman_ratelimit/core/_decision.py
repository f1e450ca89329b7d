"""The answers a limiter gives: ``Decision`` and ``MultiDecision``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Decision:
    """The outcome of one check of one limit.

    ``reset_after`` is the number of seconds until the key is fully
    replenished; ``retry_after`` the number of seconds until this same hit
    would pass (``0.0`` when allowed).
    """

    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    retry_after: float
    key: str
    algorithm: str

    def __bool__(self) -> bool:
        return self.allowed


_new = object.__new__


def make_decision(
    allowed: bool, limit: int, remaining: int, reset_us: int, retry_us: int, key: str, algorithm: str
) -> Decision:
    """Build a Decision from backend figures in microseconds.

    Checks run in a few microseconds on the memory backend, where a frozen
    dataclass's ``__init__`` (one ``object.__setattr__`` per field) would be
    a third of the cost; filling ``__dict__`` directly gives the same object.
    """
    decision = _new(Decision)
    decision.__dict__.update(
        allowed=allowed,
        limit=limit,
        remaining=remaining,
        reset_after=reset_us / 1e6,
        retry_after=retry_us / 1e6,
        key=key,
        algorithm=algorithm,
    )
    return decision


@dataclass(frozen=True)
class MultiDecision:
    """The outcome of :meth:`Limiter.hit_many`: all limits pass, or none is consumed.

    ``at`` is when the storage consumed the hits (its clock, in
    microseconds), for :meth:`Limiter.refund_many`; ``None`` when nothing
    was consumed or the storage cannot give hits back.
    """

    allowed: bool
    decisions: tuple[Decision, ...]
    at: int | None = field(default=None, compare=False, repr=False)

    def __bool__(self) -> bool:
        return self.allowed

    @property
    def most_restrictive(self) -> Decision:
        """The denial that lasts longest, else the allowed check with the least left."""
        return most_restrictive(self.decisions)


def most_restrictive(decisions: Sequence[Decision]) -> Decision:
    denied = [d for d in decisions if not d.allowed]
    if denied:
        return max(denied, key=lambda d: d.retry_after)
    return min(decisions, key=lambda d: (d.remaining, -d.reset_after))
