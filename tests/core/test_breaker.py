"""The circuit breaker as a state machine, on a manual clock."""

from __future__ import annotations

import logging

import pytest
from support import ManualClock

from bisman_ratelimit import InvalidArgument
from bisman_ratelimit.core import CircuitBreaker, Transition


def make(clock: ManualClock, changes: list[Transition] | None = None, **options: object) -> CircuitBreaker:
    settings: dict[str, object] = {
        "failure_threshold": 3,
        "failure_window": 10.0,
        # The minimum-calls rule has tests of its own.
        "min_calls": 1,
        "open_for": 2.0,
        "probes": 2,
    }
    settings.update(options)
    breaker = CircuitBreaker(clock=clock, **settings)  # type: ignore[arg-type]
    if changes is not None:
        breaker.add_listener(changes.append)
    return breaker


def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        ticket = breaker.begin()
        assert ticket is not None
        breaker.failure(ticket, "boom")


def test_opens_after_threshold_failures_within_the_window(clock: ManualClock) -> None:
    changes: list[Transition] = []
    breaker = make(clock, changes)
    fail(breaker, 2)
    assert breaker.state == "closed" and changes == []
    fail(breaker)
    assert breaker.state == "open"
    assert changes == [Transition("redis", "closed", "open", clock.now, "3 failure(s) within 10 s: boom")]
    assert breaker.begin() is None


def test_failures_outside_the_window_do_not_add_up(clock: ManualClock) -> None:
    breaker = make(clock)
    fail(breaker, 2)
    clock.advance(10.0)
    fail(breaker, 2)
    assert breaker.state == "closed"
    fail(breaker)
    assert breaker.state == "open"


def test_open_turns_half_open_after_open_for(clock: ManualClock) -> None:
    changes: list[Transition] = []
    breaker = make(clock, changes)
    fail(breaker, 3)
    clock.advance(1.5)
    assert breaker.retry_after() == 0.5
    assert breaker.begin() is None
    clock.advance(0.5)
    assert breaker.state == "half_open"
    assert changes[-1] == Transition("redis", "open", "half_open", clock.now, "2 s elapsed since opening")


def test_half_open_lets_a_limited_number_of_probes_through_and_closes_on_their_success(
    clock: ManualClock,
) -> None:
    changes: list[Transition] = []
    breaker = make(clock, changes)
    fail(breaker, 3)
    clock.advance(2.0)
    first, second = breaker.begin(), breaker.begin()
    assert first is not None and second is not None
    assert breaker.begin() is None  # only two probes at once
    breaker.success(first)
    assert breaker.state == "half_open"
    breaker.success(second)
    assert breaker.state == "closed"
    assert [(c.old, c.new) for c in changes] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
    assert changes[-1].reason == "2 probe(s) succeeded"


def test_a_failed_probe_opens_again_for_another_period(clock: ManualClock) -> None:
    breaker = make(clock)
    fail(breaker, 3)
    clock.advance(2.0)
    probe = breaker.begin()
    assert probe is not None
    breaker.failure(probe, "still down")
    assert breaker.state == "open"
    assert breaker.retry_after() == 2.0
    clock.advance(2.0)
    assert breaker.state == "half_open"


def test_outcomes_of_calls_begun_before_a_transition_move_nothing(clock: ManualClock) -> None:
    breaker = make(clock, probes=1)
    slow = breaker.begin()  # begun while closed
    assert slow is not None
    fail(breaker, 3)
    clock.advance(2.0)
    assert breaker.state == "half_open"
    breaker.success(slow)  # a late answer from before the outage is no probe
    assert breaker.state == "half_open"
    breaker.failure(slow, "late")
    assert breaker.state == "half_open"
    assert breaker.stats().failures == 4 and breaker.stats().successes == 1


def test_stats_count_everything(clock: ManualClock) -> None:
    breaker = make(clock, probes=1, name="limits")
    ok = breaker.begin()
    assert ok is not None
    breaker.success(ok)
    fail(breaker, 3)
    assert breaker.begin() is None
    assert breaker.begin() is None
    clock.advance(2.0)
    probe = breaker.begin()
    assert probe is not None
    breaker.success(probe)
    stats = breaker.stats()
    assert (stats.name, stats.state, stats.failures, stats.successes, stats.rejected) == (
        "limits",
        "closed",
        3,
        2,
        2,
    )
    assert stats.transitions == {("closed", "open"): 1, ("open", "half_open"): 1, ("half_open", "closed"): 1}
    assert stats.opened == 1


def test_reset_closes_and_forgets_failures(clock: ManualClock) -> None:
    breaker = make(clock)
    fail(breaker, 3)
    breaker.reset()
    assert breaker.state == "closed"
    fail(breaker, 2)
    assert breaker.state == "closed"


def test_a_broken_listener_is_logged_and_does_not_break_the_breaker(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(change: Transition) -> None:
        raise RuntimeError("metrics backend down")

    seen: list[Transition] = []
    breaker = make(clock, on_change=broken)
    breaker.add_listener(seen.append)
    with caplog.at_level(logging.ERROR, logger="bisman_ratelimit.breaker"):
        fail(breaker, 3)
    assert breaker.state == "open" and len(seen) == 1
    assert "listener" in caplog.records[0].getMessage() and "failed" in caplog.records[0].getMessage()
    breaker.remove_listener(seen.append)
    breaker.reset()
    assert len(seen) == 1


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("failure_threshold", 0, "breaker failure_threshold must be a positive number, got 0"),
        ("failure_threshold", 2.5, "breaker failure_threshold must be a whole number, got 2.5"),
        ("failure_window", -1, "breaker failure_window must be a positive number, got -1"),
        ("open_for", float("inf"), "breaker open_for must be a positive number, got inf"),
        ("probes", True, "breaker probes must be a positive number, got True"),
    ],
)
def test_bad_settings_are_named(option: str, value: object, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        CircuitBreaker(**{option: value})  # type: ignore[arg-type]
    assert str(info.value) == message


def succeed(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        ticket = breaker.begin()
        assert ticket is not None
        breaker.success(ticket)


def test_the_defaults_open_on_5_failures_among_20_calls_in_10_s(clock: ManualClock) -> None:
    breaker = CircuitBreaker(clock=clock)
    assert (breaker.failure_threshold, breaker.min_calls, breaker.failure_window) == (5, 20, 10.0)
    # A cold start or a stall of the caller: every call failed, but too few calls to judge.
    fail(breaker, 19)
    assert breaker.state == "closed"
    fail(breaker)
    assert breaker.state == "open"


def test_failures_open_only_once_min_calls_calls_ended_within_the_window(clock: ManualClock) -> None:
    changes: list[Transition] = []
    breaker = make(clock, changes, min_calls=10)
    succeed(breaker, 6)
    fail(breaker, 3)  # 9 calls: the threshold of failures is met, the calls are not
    assert breaker.state == "closed" and changes == []
    fail(breaker)
    assert breaker.state == "open"
    assert changes == [Transition("redis", "closed", "open", clock.now, "3 failure(s) within 10 s: boom")]


def test_calls_older_than_the_window_do_not_count_towards_min_calls(clock: ManualClock) -> None:
    breaker = make(clock, min_calls=10)
    succeed(breaker, 7)
    clock.advance(10.0)
    # 3 failures and 10 calls, but 7 of the calls ended 10 s ago.
    fail(breaker, 3)
    assert breaker.state == "closed"
    succeed(breaker, 6)
    assert breaker.state == "closed"
    fail(breaker)  # now 10 calls within the window, 4 of them failed
    assert breaker.state == "open"


def test_an_abandoned_call_counts_neither_way_and_frees_its_probe(clock: ManualClock) -> None:
    breaker = make(clock, min_calls=3, probes=1)
    for _ in range(5):
        ticket = breaker.begin()
        assert ticket is not None
        breaker.abandon(ticket)
    fail(breaker, 2)
    assert breaker.state == "closed"  # 2 calls: abandoned ones are not calls
    fail(breaker)
    assert breaker.state == "open"
    clock.advance(2.0)
    probe = breaker.begin()
    assert probe is not None and breaker.begin() is None
    breaker.abandon(probe)
    assert breaker.state == "half_open"
    again = breaker.begin()
    assert again is not None
    breaker.success(again)
    assert breaker.state == "closed"
    stats = breaker.stats()
    assert (stats.failures, stats.successes) == (3, 1)


def test_min_calls_must_be_a_positive_whole_number() -> None:
    with pytest.raises(InvalidArgument, match=r"^breaker min_calls must be a whole number, got 2.5$"):
        CircuitBreaker(min_calls=2.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=r"^breaker min_calls must be a positive number, got 0$"):
        CircuitBreaker(min_calls=0)
