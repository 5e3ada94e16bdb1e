"""The back-off of outbox rows the broker refused."""

from __future__ import annotations

import math

from outbox.holds import Holds


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
