"""The relay's in-memory bookkeeping: the confirm window and the back-off of refused rows."""

from __future__ import annotations

import math

from outbox.inflight import Holds, Window


def test_a_window_hands_out_delivery_tags_from_one() -> None:
    window = Window(size=3)

    assert [window.add(seq) for seq in (10, 11)] == [1, 2]
    assert (len(window), window.space, 10 in window, 12 in window) == (2, 1, True, False)


def test_a_multiple_confirm_settles_every_tag_up_to_it() -> None:
    window = Window(size=10)
    for seq in (5, 6, 7, 8):
        window.add(seq)

    assert window.settle(3, multiple=True) == [5, 6, 7]
    assert window.settle(4, multiple=False) == [8]
    assert window.empty


def test_a_single_confirm_settles_only_its_tag() -> None:
    window = Window(size=10)
    for seq in (5, 6, 7):
        window.add(seq)

    assert window.settle(2, multiple=False) == [6]
    assert window.settle(3, multiple=True) == [5, 7]


def test_an_unknown_or_repeated_confirm_settles_nothing() -> None:
    window = Window(size=10)
    window.add(1)
    window.settle(1, multiple=False)

    assert window.settle(1, multiple=False) == []
    assert window.settle(9, multiple=True) == []


def test_a_reset_window_starts_tags_again_and_returns_what_was_in_flight() -> None:
    window = Window(size=10)
    window.add(4)
    window.add(5)

    assert window.reset() == [4, 5]
    assert window.empty
    assert window.add(6) == 1


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
