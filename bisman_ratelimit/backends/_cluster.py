"""``hit_many`` over keys that no single script call can reach.

A Lua script may only touch keys of one Redis Cluster hash slot, and a
script on one server cannot touch another server's keys (namespace
routing). Such a ``hit_many`` is split into groups, one per slot (or per
server); each group is one atomic script call, and the groups run at the
same time. When every group allows, all is consumed. When a group denies,
the groups that were allowed give their hits back with a refund call, and
the answer is the denial, with figures as if nothing had been consumed.

This is weaker than the all-or-nothing of keys in one slot:

- Between a group's commit and its refund (one round trip), other
  requests see the hits; one of them may be denied because of hits that
  are then given back. It errs toward denying, never toward allowing.
- A refund restores the counters; it cannot undo what others decided in
  that instant, and if the refund call itself fails (the node went away
  just then) the hits stay consumed until their window passes.
- Hits kept in local memory during an outage (the fallback backend) are
  not refunded; their groups report a fresh look instead.

Keep the limits of one request under one identity (the key given to
``hit_many``), or give related identities a common hash-tag prefix, where
the guarantee matters.

The flow is written once, I/O-free, as a generator (:func:`grouped_check`)
that yields the calls to make; :func:`bisman_ratelimit.core.drive` with
:func:`run_step` and :func:`bisman_ratelimit.core.adrive` with
:func:`arun_step` make them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from redis.crc import key_slot

from bisman_ratelimit.backends._base import (
    BatchResult,
    Check,
)
from bisman_ratelimit.core import Decision, StorageError

_log = logging.getLogger("bisman_ratelimit.cluster")


def slot_groups(redis_keys: Sequence[str]) -> list[list[int]]:
    """Indexes of ``redis_keys`` grouped by Cluster hash slot, in first-seen order."""
    return groups_by([key_slot(key.encode()) for key in redis_keys])


def groups_by(labels: Sequence[object]) -> list[list[int]]:
    """Indexes of equal labels, grouped in first-seen order."""
    groups: dict[object, list[int]] = {}
    for index, label in enumerate(labels):
        groups.setdefault(label, []).append(index)
    return list(groups.values())


@dataclass(frozen=True)
class Commit:
    """Check each group: ``(group, checks)``; consume if ``commit``."""

    parts: list[tuple[int, list[Check]]]
    commit: bool


@dataclass(frozen=True)
class Refund:
    """Give back each group's hits: ``(group, checks, consumed at)``."""

    parts: list[tuple[int, list[Check], int | None]]


Step = Commit | Refund
# What the driver sends back: per part, a result or the exception raised.
Answers = list[Any]


def grouped_check(
    checks: list[Check], groups: list[list[int]], commit: bool
) -> Generator[Step, Answers, BatchResult]:
    """The grouped ``check_many``: yields steps, receives their answers, returns the outcome."""
    parts = [[checks[i] for i in group] for group in groups]
    results: Answers = yield Commit(list(enumerate(parts)), commit)
    failed = next((r for r in results if isinstance(r, BaseException)), None)
    ok = failed is None and all(r[0] for r in results)
    decisions: list[Any] = [r if isinstance(r, BaseException) else r[1] for r in results]
    if commit and not ok:
        owed = [k for k, r in enumerate(results) if not isinstance(r, BaseException) and r[0]]
        if owed:
            refunded: Answers = yield Refund([(k, parts[k], results[k][2]) for k in owed])
            for k, answer in zip(owed, refunded, strict=True):
                if isinstance(answer, BaseException):
                    # The hits stay consumed (documented above); the denial stands.
                    _log.debug("hit_many refund failed, hits stay consumed: %s", answer)
                else:
                    decisions[k] = answer
    if failed is not None:
        raise failed
    merged: list[Decision] = [None] * len(checks)  # type: ignore[list-item]
    for group, group_decisions in zip(groups, decisions, strict=True):
        for index, decision in zip(group, group_decisions, strict=True):
            merged[index] = decision
    return ok, merged


CheckGroup = Callable[[int, list[Check], bool], Any]
RefundGroup = Callable[[int, list[Check], int | None], Any]


def _calls(step: Step, check: CheckGroup, refund: RefundGroup) -> list[Callable[[], Any]]:
    if isinstance(step, Commit):
        return [partial(check, k, part, step.commit) for k, part in step.parts]
    return [partial(refund, k, part, at) for k, part, at in step.parts]


def run_step(
    step: Step,
    *,
    check: CheckGroup,
    refund: RefundGroup,
    run_all: Callable[[list[Callable[[], Any]]], Answers],
) -> Answers:
    """Make a step's blocking calls; ``run_all`` runs them (at once, ideally)."""
    return run_all(_calls(step, check, refund))


def run_in_turn(calls: list[Callable[[], Any]]) -> Answers:
    """A ``run_all`` that makes the calls one after another."""
    answers: Answers = []
    for call in calls:
        try:
            answers.append(call())
        except StorageError as exc:
            answers.append(exc)
    return answers


async def arun_step(
    step: Step,
    *,
    check: Callable[[int, list[Check], bool], Awaitable[Any]],
    refund: Callable[[int, list[Check], int | None], Awaitable[Any]],
) -> Answers:
    """Make a step's calls as coroutines, concurrently."""
    calls = _calls(step, check, refund)
    return list(await asyncio.gather(*(call() for call in calls), return_exceptions=True))
