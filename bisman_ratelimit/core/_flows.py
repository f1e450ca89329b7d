"""Operations written once as generators, run by a blocking or an awaiting driver.

An operation does no I/O: it yields what it needs done (a script call, a
round of grouped checks), receives the answer, and finally returns its
result. :func:`drive` and :func:`adrive` feed it, so sync and async code
share the operation and differ only in ``perform`` (the pattern of httpx's
auth flows).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import TypeVar

Request = TypeVar("Request")
Answer = TypeVar("Answer")
Result = TypeVar("Result")


def drive(flow: Generator[Request, Answer, Result], perform: Callable[[Request], Answer]) -> Result:
    """Run ``flow``, answering each request it yields with ``perform(request)``."""
    try:
        request = next(flow)
        while True:
            request = flow.send(perform(request))
    except StopIteration as stop:
        result: Result = stop.value
        return result


async def adrive(
    flow: Generator[Request, Answer, Result], perform: Callable[[Request], Awaitable[Answer]]
) -> Result:
    """:func:`drive`, awaiting each answer."""
    try:
        request = next(flow)
        while True:
            request = flow.send(await perform(request))
    except StopIteration as stop:
        result: Result = stop.value
        return result
