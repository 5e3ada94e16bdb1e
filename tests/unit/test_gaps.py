"""When server ingest asks a terminal to replay a gap: after the grace period, then with
exponential backoff up to a cap, per gap; pure logic on a fake clock."""

from __future__ import annotations

from inbox.gaps import GapTracker
from inbox.server_store import Gap
from inbox.server_store.base import GapState


class FakeClock:
    """Ticks as ingest checks gaps, every half second."""

    def __init__(self, tracker: GapTracker) -> None:
        self.tracker = tracker
        self.now = 0.0

    def run(self, gaps: list[Gap], until: float) -> list[float]:
        """Check the gaps every half second up to `until`; when each request went out."""
        asked: list[float] = []
        while self.now <= until:
            if self.tracker.due(gaps, self.now):
                asked.append(self.now)
            self.now += 0.5
        return asked


def test_an_open_gap_is_asked_again_with_exponential_backoff_up_to_the_cap() -> None:
    gap = Gap("T1", 3, 4)
    asked = FakeClock(GapTracker(grace=5, cap=30)).run([gap], until=200)
    # grace, then 2x, 4x grace apart, then every 30 s (it was every 5 s for ever)
    assert asked == [5, 15, 35, 65, 95, 125, 155, 185]


def test_each_gap_has_its_own_backoff() -> None:
    tracker = GapTracker(grace=5, cap=300)
    old, new = Gap("T1", 3, 4), Gap("T2", 7, 7)
    assert tracker.due([old], now=0) == []
    assert tracker.due([old], now=5) == [old]
    assert tracker.due([old, new], now=14) == []
    assert tracker.due([old, new], now=15) == [old]  # 2 x grace after its first request
    assert tracker.due([old, new], now=19) == [new]  # its own grace, from when it opened
    assert tracker.due([old, new], now=28) == []
    assert tracker.due([old, new], now=29) == [new]
    assert tracker.due([old, new], now=34) == []
    assert tracker.due([old, new], now=35) == [old]


def test_seqs_arriving_inside_a_gap_keep_its_backoff() -> None:
    tracker = GapTracker(grace=5, cap=300)
    assert tracker.due([Gap("T1", 3, 9)], now=0) == []
    assert tracker.due([Gap("T1", 3, 9)], now=5) == [Gap("T1", 3, 9)]
    assert tracker.due([Gap("T1", 3, 5)], now=10) == []
    assert tracker.due([Gap("T1", 3, 5)], now=15) == [Gap("T1", 3, 5)]
    assert tracker.states() == [GapState("T1", 3, 5, opened_at=0, asked=2, asked_at=15)]


def test_a_gap_whose_first_seq_arrived_is_a_new_gap_with_a_new_grace_period() -> None:
    tracker = GapTracker(grace=5, cap=300)
    tracker.due([Gap("T1", 3, 9)], now=0)
    assert tracker.due([Gap("T1", 3, 9)], now=5) == [Gap("T1", 3, 9)]
    assert tracker.due([Gap("T1", 6, 9)], now=6) == []
    assert tracker.waiting()
    assert tracker.due([Gap("T1", 6, 9)], now=11) == [Gap("T1", 6, 9)]


def test_states_list_the_gaps_asked_for_and_a_new_tracker_resumes_from_them() -> None:
    tracker = GapTracker(grace=5, cap=300)
    gaps = [Gap("T1", 3, 4), Gap("T2", 1, 1)]
    tracker.due(gaps, now=0)
    tracker.due(gaps[:1], now=5)
    tracker.due(gaps, now=15)
    states = tracker.states()
    assert states == [GapState("T1", 3, 4, opened_at=0, asked=2, asked_at=15)]

    resumed = GapTracker(grace=5, cap=300)  # ingest restarted
    resumed.resume(states)
    assert not resumed.waiting()
    assert resumed.due(gaps[:1], now=34) == []
    assert resumed.due(gaps[:1], now=35) == gaps[:1]  # 4 x grace after the second request
    assert resumed.states()[0].asked == 3


def test_a_saved_state_of_a_gap_that_closed_meanwhile_is_dropped() -> None:
    tracker = GapTracker(grace=5, cap=300)
    tracker.resume([GapState("T1", 3, 4, opened_at=0, asked=4, asked_at=100)])
    assert tracker.due([Gap("T1", 5, 6)], now=101) == []
    assert tracker.states() == []
    assert tracker.waiting()


def test_a_grace_of_0_asks_at_once_then_backs_off_from_half_a_second() -> None:
    asked = FakeClock(GapTracker(grace=0, cap=4)).run([Gap("T1", 1, 1)], until=15)
    assert asked == [0, 1, 3, 7, 11, 15]


def test_the_cap_is_never_below_the_grace_period() -> None:
    tracker = GapTracker(grace=10, cap=1)
    assert tracker.interval(1) == 10
    assert tracker.interval(40) == 10


def test_a_clock_set_back_does_not_silence_a_gap() -> None:
    tracker = GapTracker(grace=5, cap=300)
    gap = Gap("T1", 3, 4)
    tracker.due([gap], now=1000)
    assert tracker.due([gap], now=1005) == [gap]
    assert tracker.due([gap], now=10) == [gap]  # the wall clock went back
