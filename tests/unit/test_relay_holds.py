"""The back-off of outbox rows the broker refused."""

from __future__ import annotations

import math
import time

import pytest
import sqlalchemy as sa

from cajasync.core.settings import Settings
from outbox.feed_relay import ChangeLogSource
from outbox.holds import Holds, doubling


def test_a_refused_row_is_held_with_doubling_back_off_up_to_the_maximum() -> None:
    holds = Holds(initial_s=1.0, max_s=5.0)

    assert [holds.hold(7, now=0.0) for _ in range(4)] == [1.0, 2.0, 4.0, 5.0]
    assert holds.held(7, now=4.9)
    assert not holds.held(7, now=5.0)
    assert not holds.held(8, now=0.0)


def test_a_released_row_starts_its_back_off_afresh() -> None:
    holds = Holds(initial_s=1.0, max_s=60.0)
    holds.hold(7, now=0.0)
    holds.hold(7, now=0.0)

    holds.release([7])

    assert not holds.held(7, now=0.0)
    assert holds.hold(7, now=0.0) == 1.0


def test_the_next_expiry_is_the_earliest_hold_still_in_force() -> None:
    holds = Holds(initial_s=1.0, max_s=60.0)
    assert holds.next_expiry(now=0.0) is None
    holds.hold(1, now=0.0)
    holds.hold(2, now=0.5)

    assert holds.next_expiry(now=0.0) == 1.0
    assert holds.next_expiry(now=1.2) == 1.5
    assert holds.next_expiry(now=2.0) is None


def test_infinite_holds_never_expire() -> None:
    holds = Holds(initial_s=math.inf, max_s=math.inf)
    holds.hold(1, now=0.0)

    assert holds.held(1, now=1e12)


def test_a_row_refused_for_days_stays_held_at_the_maximum_without_overflowing() -> None:
    """2**1024 does not fit a float: the 1025th refusal used to stop the relay."""
    holds = Holds(initial_s=0.5, max_s=300.0)

    until = [holds.hold(7, now=0.0) for _ in range(5000)]

    assert until[:3] == [0.5, 1.0, 2.0]
    assert until[-1] == 300.0


def test_a_broker_nacking_the_feed_for_hours_keeps_it_backing_off_at_the_maximum() -> None:
    source = ChangeLogSource(sa.create_engine("sqlite://"), Settings())

    for _ in range(3000):
        source.settled([], {1: "nacked"})

    held_for = source.hold_until - time.monotonic()
    assert Settings().retry_max_s - 1 < held_for <= Settings().retry_max_s
    source.settled([1], {})  # a confirm ends the streak
    source.settled([], {2: "nacked"})
    assert source.hold_until - time.monotonic() <= Settings().retry_initial_s


@pytest.mark.parametrize(
    ("attempt", "expected"), [(0, 1.0), (1, 1.0), (2, 2.0), (4, 8.0), (10_000, 30.0)]
)
def test_doubling_starts_at_the_initial_delay_and_stops_at_the_maximum(
    attempt: int, expected: float
) -> None:
    assert doubling(1.0, 30.0, attempt) == expected
