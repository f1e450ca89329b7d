"""Checks from many threads written together on one connection.

Under a threaded server (gunicorn gthread, Django or Flask under WSGI)
each check is a round trip of its own: a write, a read, and a thread
woken for each. A :class:`Combiner` lets the checks that arrive while
another is in flight wait for it, then go out together: the first of them
to be woken (the leader) writes them all in one write on one connection,
reads the replies in order and hands each to its caller. Then the next
waiting caller leads the checks that queued meanwhile.

- A check that arrives with nothing in flight goes out at once, through
  :meth:`~._wire.Lender.call` as without combining.
- A batch holds at most :data:`MAX_BATCH` commands.
- An error reply (a script error, NOSCRIPT) is its caller's alone. A
  connection error or a timeout fails every caller of the batch still
  waiting, each with an exception of its own, which is what each would
  have had alone, so the retries, the breaker and the fallback see what
  they saw before.
- Each caller waits at most the connection's socket timeout, counted from
  its arrival, in line or for its reply, then raises redis-py's
  ``TimeoutError("Timeout reading from <host>:<port>")`` as a command sent
  alone would. A caller that gives up before its command is written is
  left out of the batch; one that gives up after has its reply read and
  dropped, so the connection stays in step. A leader reads for no longer
  than the most patient caller of its batch has left.
- The leader runs only this module's code and redis-py's: a command that
  cannot be packed fails its own caller.
- A forked child starts with no queue and nothing in flight.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import deque
from typing import Any

import redis

from bisman_ratelimit.backends._wire import Lender

# Commands written together at most.
MAX_BATCH = 64

# What a waiting caller is doing, as its leader and its own timer see it.
_QUEUED, _LEADING, _SENT, _DONE, _GONE = range(5)


class _Waiter:
    __slots__ = ("args", "deadline", "error", "lock", "reply", "state")

    def __init__(self, args: tuple[Any, ...], deadline: float) -> None:
        self.args = args
        self.deadline = deadline
        self.state = _QUEUED
        self.reply: Any = None
        self.error: BaseException | None = None
        # Held from the start: the caller blocks on it until a leader (or
        # a finished batch) lets it go.
        self.lock = threading.Lock()
        self.lock.acquire()

    def outcome(self) -> Any:
        error = self.error
        if error is not None:
            self.error = None  # no cycle through the traceback
            raise error
        return self.reply


class Combiner:
    """Commands of one :class:`~._wire.Lender`, combined across threads.

    One batch (or lone command) is in flight at a time: its writer holds
    the *lane*. Callers that find the lane taken queue up; whoever frees
    the lane hands it to one of them, which leads all those queued.
    """

    def __init__(self, lender: Lender, *, max_batch: int = MAX_BATCH) -> None:
        self.lender = lender
        self.max_batch = max_batch
        kwargs = getattr(lender.pool, "connection_kwargs", {})
        self.timeout: float | None = kwargs.get("socket_timeout")
        path = kwargs.get("path")
        # Where a timed-out caller says it was reading from; a leader
        # corrects it from the connection it used (a Sentinel primary, say).
        self.where = str(path) if path else f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
        self._reset()
        # Counters, for tests and benchmarks: batches of more than one
        # command, and the commands they carried.
        self.batches = 0
        self.combined = 0

    def _reset(self) -> None:
        # The lane's token, there while the lane is free. Taking it is one
        # list.pop, atomic, and on a lone check's path cheaper than a lock.
        self.free = [True]
        # Guards the queue and the callers' states.
        self.mutex = threading.Lock()
        # Callers in line, oldest first; each one's deadline is its arrival
        # plus the socket timeout, so the deadlines rise along the line.
        self.queue: deque[_Waiter] = deque()

    def call(self, *args: Any) -> Any:
        """Run a command: at once if nothing is in flight, else in the next batch."""
        try:
            self.free.pop()
        except IndexError:
            pass
        else:
            try:
                return self.lender.call(*args)
            finally:
                self._free_lane()
        timeout = self.timeout
        waiter = _Waiter(args, time.monotonic() + timeout if timeout else 0.0)
        with self.mutex:
            self.queue.append(waiter)
        # The lane may have come free before the line had anyone in it.
        if self._take_lane():
            self._free_lane()
        self._wait(waiter)
        if waiter.state == _LEADING:
            self._lead(waiter)
        return waiter.outcome()

    def _free_lane(self) -> None:
        """Hand the lane to a caller in line, or free it (the lane held)."""
        queue = self.queue
        while True:
            if queue:
                with self.mutex:
                    if self._hand_over():
                        return
            self.free.append(True)
            # Whoever queued after the look above, and found the lane still
            # taken, counts on this second look.
            if not queue or not self._take_lane():
                return

    def _take_lane(self) -> bool:
        try:
            self.free.pop()
        except IndexError:
            return False
        return True

    @property
    def busy(self) -> bool:
        """Whether a batch or a lone command is in flight."""
        return not self.free

    def _hand_over(self) -> bool:
        """Wake a caller in line to lead the next batch (mutex held); ``False`` if none is left.

        The newest caller leads: it has the most time left, so it is the
        least likely to be kept past its own deadline by the others' replies.
        """
        queue = self.queue
        now = time.monotonic()
        while queue and queue[0].deadline and queue[0].deadline <= now:
            _finish(queue.popleft(), None, self._timed_out())
        if not queue:
            return False
        leader = queue.pop()
        leader.state = _LEADING
        leader.lock.release()
        return True

    def _wait(self, waiter: _Waiter) -> None:
        try:
            if waiter.deadline:
                left = waiter.deadline - time.monotonic()
                woken = left > 0 and waiter.lock.acquire(timeout=left)
            else:
                woken = waiter.lock.acquire()
        except BaseException:
            self._leave(waiter)
            raise
        if not woken and self._leave(waiter):
            raise self._timed_out()

    def _leave(self, waiter: _Waiter) -> bool:
        """Stop waiting; ``False`` if the reply came meanwhile."""
        with self.mutex:
            state = waiter.state
            waiter.state = _GONE
            if state == _QUEUED:
                self.queue.remove(waiter)
            elif state == _DONE:
                waiter.state = state
                return False
            # _SENT: its leader reads the reply and drops it.
        if state == _LEADING:
            self._free_lane()
        return True

    def _timed_out(self) -> redis.TimeoutError:
        return redis.TimeoutError(f"Timeout reading from {self.where}")

    def _lead(self, leader: _Waiter) -> None:
        batch = [leader]
        with self.mutex:
            queue = self.queue
            while queue and len(batch) < self.max_batch:
                batch.append(queue.popleft())
            for waiter in batch:
                waiter.state = _SENT
            if len(batch) > 1:
                self.batches += 1
                self.combined += len(batch)

        def deliver(index: int, reply: Any) -> None:
            waiter = batch[index]
            if waiter.state == _SENT:
                if isinstance(reply, Exception):
                    _finish(waiter, None, reply)
                else:
                    _finish(waiter, reply, None)

        try:
            left = None
            if leader.deadline:
                # The read waits as long as the most patient caller of the
                # batch; the others leave at their own deadlines.
                left = max(waiter.deadline for waiter in batch) - time.monotonic()
                if left <= 0:
                    raise self._timed_out()
            self.where = self.lender.call_batch([waiter.args for waiter in batch], deliver, left)
        except BaseException as exc:
            for waiter in batch:
                if waiter.state == _SENT:
                    _finish(waiter, None, _own(exc))
            if not isinstance(exc, Exception):
                raise
        finally:
            self._free_lane()


def _finish(waiter: _Waiter, reply: Any, error: BaseException | None) -> None:
    waiter.reply = reply
    waiter.error = error
    waiter.state = _DONE
    if waiter.lock.locked():
        waiter.lock.release()


def _own(exc: BaseException) -> BaseException:
    """A copy of ``exc`` for one caller, as it would have had it alone."""
    if not isinstance(exc, Exception):
        # The leader was interrupted: for the others, its connection broke.
        return redis.ConnectionError(f"the batch's writer was interrupted: {exc!r}")
    try:
        return type(exc)(*exc.args)
    except Exception:  # an exception class of another shape
        return exc


_combiners: weakref.WeakKeyDictionary[Lender, Combiner] = weakref.WeakKeyDictionary()
_made = threading.Lock()


def combiner_for(lender: Lender) -> Combiner:
    """The combiner of ``lender`` (one per pool, as the lender)."""
    combiner = _combiners.get(lender)
    if combiner is None:
        with _made:
            combiner = _combiners.get(lender)
            if combiner is None:
                combiner = _combiners[lender] = Combiner(lender)
    return combiner


def _forget_after_fork() -> None:
    # The parent's waiting threads are not in the child, and a lock one of
    # them held stays held there.
    for combiner in list(_combiners.values()):
        combiner._reset()


os.register_at_fork(after_in_child=_forget_after_fork)
