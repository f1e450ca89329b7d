"""Keys already over their limit, answered from memory until they may pass.

When Redis denies a hit of cost ``c`` with ``retry_after = r``, the same
hit is denied again until ``now + r``, with the same figures aged: denied
hits consume nothing, and others' hits only push the time further out.
Until then this cache answers such hits itself, so a client hammering a
limit it has used up costs no Redis round trip (Envoy's and Cloudflare's
"over-limit cache"). Hits of another cost still go to Redis: a larger one
is denied too, but for longer than the cache could say.

What it cannot see: other processes. A reset of the key elsewhere takes
effect here once the cached denial runs out (at most ``retry_after``
later), and hits allowed elsewhere meanwhile are not in the cached
``remaining``. Neither are hits given back elsewhere, which is why the keys
of limits whose hits are held until the response says whether they count
(``deduct_when``) can be made :meth:`BlockedKeys.provisional`: their denials
are never remembered. Within this process, a reset or an allowed hit of another
cost drops the entry (:meth:`BlockedKeys.forget`). A refund drops it too,
and a denial that Redis gave before a refund of its key completed is not
remembered (:meth:`BlockedKeys.refunded`): it may rest on the hits given
back.

Entries expire lazily; at ``max_keys`` the expired ones are swept and, if
that is not enough, the oldest eighth goes. Timing uses microseconds from
``clock`` (seconds), so repeated answers are exactly the first one, aged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from bisman_ratelimit.backends._base import Spec
from bisman_ratelimit.core import Decision, InvalidArgument, make_decision

# (blocked_until_us, reset_at_us, denied cost, remaining)
_Entry = tuple[int, int, int, int]


class BlockedKeys:
    """A bounded map from (key, limit) to "denied until"."""

    def __init__(self, *, max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 8:
            raise InvalidArgument(
                f"blocked-keys cache max_keys must be a whole number >= 8, got {max_keys!r}"
            )
        self.max_keys = max_keys
        self.clock = clock
        self._entries: dict[tuple[str, Spec], _Entry] = {}
        self._lock = threading.Lock()
        # Refunds count up; per key, the count at its last refund.
        self.refunds = 0
        self._refunded: dict[tuple[str, Spec], int] = {}
        # Answers given from memory, for metrics.
        self.answered = 0
        # Endings of keys whose denials are not remembered (see provisional).
        self._provisional: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self._entries)

    def _now(self) -> int:
        return int(self.clock() * 1_000_000)

    def lookup(self, key: str, spec: Spec, cost: int) -> Decision | None:
        """The denial to give without asking Redis, or ``None`` to ask it."""
        denial = self._denial(key, spec, cost, exact=True)
        if denial is not None:
            self.answered += 1
        return denial

    def over_limit(self, key: str, spec: Spec, cost: int) -> Decision | None:
        """A denial for a hit of ``cost`` or more on a key Redis has just denied, else ``None``.

        For deciding without Redis (an outage): a hit costing more than
        the denied one is denied at least as long, so the figures given
        are a lower bound for it.
        """
        return self._denial(key, spec, cost, exact=False)

    def _denial(self, key: str, spec: Spec, cost: int, *, exact: bool) -> Decision | None:
        entry = self._entries.get((key, spec))
        if entry is None:
            return None
        now = self._now()
        until, reset_at, denied_cost, remaining = entry
        if now >= until:
            with self._lock:
                if self._entries.get((key, spec)) is entry:
                    del self._entries[(key, spec)]
            return None
        if cost != denied_cost if exact else cost < denied_cost:
            return None
        return make_decision(
            False, spec.capacity, remaining, max(0, reset_at - now), until - now, key, spec.algorithm
        )

    def blocked(self, max_keys: int) -> list[tuple[str, Spec, Decision]]:
        """Up to ``max_keys`` keys denied now, with the limit and the denial a hit of the cost denied gets."""
        found: list[tuple[str, Spec, Decision]] = []
        for (key, spec), entry in list(self._entries.items()):
            if len(found) >= max_keys:
                break
            denial = self._denial(key, spec, entry[2], exact=True)
            if denial is not None:
                found.append((key, spec, denial))
        return found

    def now(self) -> int:
        """The clock in microseconds: read it before asking Redis, for :meth:`remember`."""
        return int(self.clock() * 1_000_000)

    def remember(
        self,
        spec: Spec,
        cost: int,
        decision: Decision,
        asked_at: int | None = None,
        refunds_seen: int | None = None,
    ) -> None:
        """Record a denial that Redis gave for ``decision.key``.

        ``asked_at`` (from :meth:`now`, taken before the call) dates the
        denial no later than Redis made it, so the cache never outlasts it.
        ``refunds_seen`` (:attr:`refunds`, read before the call) leaves out
        a denial asked before a refund of the key completed.
        """
        if decision.allowed or decision.retry_after <= 0:
            return
        if self._provisional and decision.key.endswith(self._provisional):
            return
        if refunds_seen is not None and self._refunded.get((decision.key, spec), -1) >= refunds_seen:
            return
        now = self._now() if asked_at is None else asked_at
        until = now + round(decision.retry_after * 1_000_000)
        entry = (until, now + round(decision.reset_after * 1_000_000), cost, decision.remaining)
        with self._lock:
            entries = self._entries
            if (decision.key, spec) not in entries and len(entries) >= self.max_keys:
                self._make_room(now)
            entries[(decision.key, spec)] = entry

    def provisional(self, ending: str) -> None:
        """Never remember a denial of a key ending in ``ending``.

        For limits whose hits another process may give back (``deduct_when``):
        a denial may rest on hits about to return, and only Redis knows when.
        """
        if ending in self._provisional:
            return
        with self._lock:
            self._provisional = (*self._provisional, ending)
            for entry in [entry for entry in self._entries if entry[0].endswith(ending)]:
                del self._entries[entry]

    def record(
        self,
        spec: Spec,
        cost: int,
        decision: Decision,
        asked_at: int | None = None,
        refunds_seen: int | None = None,
    ) -> None:
        """Take in an answer from Redis: a denial is remembered, an allowed hit forgets its key."""
        if decision.allowed:
            self.forget(decision.key, spec)
        else:
            self.remember(spec, cost, decision, asked_at, refunds_seen)

    def refunded(self, key: str, spec: Spec) -> None:
        """Hits of ``key`` were given back: drop its entry, and denials asked before now."""
        with self._lock:
            if len(self._refunded) >= self.max_keys:
                self._refunded.clear()
            self._refunded[(key, spec)] = self.refunds
            self.refunds += 1
            self._entries.pop((key, spec), None)

    def forget(self, key: str, spec: Spec) -> None:
        """Drop the entry of ``key`` (after a reset, or a hit of another cost was allowed)."""
        if (key, spec) in self._entries:
            with self._lock:
                self._entries.pop((key, spec), None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _make_room(self, now: int) -> None:
        entries = self._entries
        for stale in [k for k, entry in entries.items() if entry[0] <= now]:
            del entries[stale]
        if len(entries) >= self.max_keys:
            # dicts keep insertion order: the first entries are the oldest.
            for old in list(entries)[: self.max_keys // 8]:
                del entries[old]


def caches_in(storage: object) -> list[BlockedKeys]:
    """The blocked-keys caches that ``storage`` answers from, through the storages it wraps
    (a fallback's primary, an instrumented or adapted storage, the backends of a router)."""
    found: list[BlockedKeys] = []
    seen: set[int] = set()
    pending = [storage]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        blocked = getattr(current, "blocked", None)
        if isinstance(blocked, BlockedKeys) and all(blocked is not cache for cache in found):
            found.append(blocked)
        pending.extend(getattr(current, name, None) for name in ("primary", "inner", "sync"))
        pending.extend(getattr(current, "backends", ()))
    return found
