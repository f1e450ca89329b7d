"""drive and adrive: one generator-driven operation, run blocking or awaited."""

from __future__ import annotations

from collections.abc import Generator

import pytest

from bisman_ratelimit.core import adrive, drive


def doubling(values: list[int]) -> Generator[int, int, list[int]]:
    """Asks for each value doubled; returns the answers."""
    answers = []
    for value in values:
        answers.append((yield value))
    return answers


def test_drive_answers_each_request_in_turn() -> None:
    asked: list[int] = []

    def perform(request: int) -> int:
        asked.append(request)
        return request * 2

    assert drive(doubling([1, 2, 3]), perform) == [2, 4, 6]
    assert asked == [1, 2, 3]


async def test_adrive_awaits_each_answer() -> None:
    async def perform(request: int) -> int:
        return request * 2

    assert await adrive(doubling([1, 2, 3]), perform) == [2, 4, 6]


def test_an_operation_that_asks_nothing_returns_at_once() -> None:
    def perform(request: int) -> int:
        raise AssertionError("nothing to perform")

    assert drive(doubling([]), perform) == []


def test_an_error_from_perform_reaches_the_caller() -> None:
    def perform(request: int) -> int:
        raise KeyError(request)

    with pytest.raises(KeyError, match="1"):
        drive(doubling([1]), perform)
