"""The confirm window: delivery tags from 1 per channel, the keys each publish settles.

Publishes without keys (requests, stream heads) take a tag but settle nothing and take no
room.
"""

from __future__ import annotations

from cajasync.broker.confirms import Window


def test_a_window_hands_out_delivery_tags_from_one() -> None:
    window: Window[int] = Window(size=3)

    assert [window.add(seq) for seq in (10, 11)] == [1, 2]
    assert (len(window), window.space, 10 in window, 12 in window) == (2, 1, True, False)


def test_a_multiple_confirm_settles_every_tag_up_to_it() -> None:
    window: Window[int] = Window(size=10)
    for seq in (5, 6, 7, 8):
        window.add(seq)

    assert window.settle(3, multiple=True) == [5, 6, 7]
    assert window.settle(4, multiple=False) == [8]
    assert window.empty


def test_a_single_confirm_settles_only_its_tag() -> None:
    window: Window[int] = Window(size=10)
    for seq in (5, 6, 7):
        window.add(seq)

    assert window.settle(2, multiple=False) == [6]
    assert window.settle(3, multiple=True) == [5, 7]


def test_an_unknown_or_repeated_confirm_settles_nothing() -> None:
    window: Window[int] = Window(size=10)
    window.add(1)
    window.settle(1, multiple=False)

    assert window.settle(1, multiple=False) == []
    assert window.settle(9, multiple=True) == []


def test_a_reset_window_starts_tags_again_and_returns_what_was_in_flight() -> None:
    window: Window[int] = Window(size=10)
    window.add(4)
    window.add(5)

    assert window.reset() == [4, 5]
    assert window.empty
    assert window.add(6) == 1


def test_a_request_takes_the_next_delivery_tag_without_taking_room() -> None:
    window: Window[int] = Window(size=2)
    window.add(10)

    assert window.add() == 2
    assert window.add(11) == 3
    assert (len(window), window.space) == (2, 0)


def test_rows_published_after_a_request_are_settled_by_their_own_tags() -> None:
    window: Window[int] = Window(size=10)
    window.add(10)  # tag 1
    window.add()  # tag 2: a catch-up request
    window.add(11)  # tag 3

    assert window.settle(2, multiple=False) == []
    assert window.settle(3, multiple=False) == [11]
    assert window.settle(1, multiple=False) == [10]
    assert window.empty


def test_a_multiple_confirm_across_a_request_settles_only_rows() -> None:
    window: Window[int] = Window(size=10)
    window.add()  # tag 1
    window.add(7)  # tag 2
    window.add()  # tag 3
    window.add(8)  # tag 4

    assert window.settle(3, multiple=True) == [7]
    assert window.settle(4, multiple=True) == [8]


def test_a_window_with_only_requests_in_flight_is_empty() -> None:
    window: Window[int] = Window(size=1)
    window.add()

    assert window.empty
    assert window.space == 1


def test_a_publish_may_carry_several_keys_and_space_counts_keys() -> None:
    window: Window[int] = Window(size=10)
    first, second, third = window.add(1, 2, 3), window.add(4), window.add(5, 6)

    assert window.space == 4
    assert 4 in window
    assert window.settle(second, multiple=True) == [1, 2, 3, 4]
    assert window.settle(third, multiple=False) == [5, 6]
    assert window.empty
    assert first == 1
