"""Requests share the relay's confirm channel: they take delivery tags but settle no row."""

from __future__ import annotations

from outbox.inflight import Window


def test_a_request_takes_the_next_delivery_tag_without_taking_room() -> None:
    window = Window(size=2)
    window.add(10)

    assert window.add_untracked() == 2
    assert window.add(11) == 3
    assert (len(window), window.space) == (2, 0)


def test_rows_published_after_a_request_are_settled_by_their_own_tags() -> None:
    window = Window(size=10)
    window.add(10)  # tag 1
    window.add_untracked()  # tag 2: a catch-up request
    window.add(11)  # tag 3

    assert window.settle(2, multiple=False) == []
    assert window.settle(3, multiple=False) == [11]
    assert window.settle(1, multiple=False) == [10]
    assert window.empty


def test_a_multiple_confirm_across_a_request_settles_only_rows() -> None:
    window = Window(size=10)
    window.add_untracked()  # tag 1
    window.add(7)  # tag 2
    window.add_untracked()  # tag 3
    window.add(8)  # tag 4

    assert window.settle(3, multiple=True) == [7]
    assert window.settle(4, multiple=True) == [8]


def test_a_window_with_only_requests_in_flight_is_empty() -> None:
    window = Window(size=1)
    window.add_untracked()

    assert window.empty
    assert window.space == 1
