"""What `terminal run`, `server run` and the feed relay print when they stop."""

from __future__ import annotations

from cajasync.core.counters import counters_text
from cajasync.processes.server import ServerStats
from cajasync.processes.terminal import RelayStats
from inbox.ingest import IngestStats


def test_the_counters_that_moved_by_name_in_field_order() -> None:
    stats = RelayStats(published=1200, confirmed=1200, nacked=3, acked=1198)
    assert str(stats) == "published 1,200, confirmed 1,200, nacked 3, acked 1,198"


def test_nothing_yet_when_every_counter_is_zero() -> None:
    assert counters_text(RelayStats()) == "nothing yet"


def test_a_server_names_each_loop() -> None:
    stats = ServerStats(loops={"ingest": IngestStats(received=2, applied=2)})
    assert str(stats) == "ingest: received 2, applied 2"
