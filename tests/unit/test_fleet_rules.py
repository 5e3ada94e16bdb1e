"""Pure rules of the fleet view: durations, down lag, silent tills, and the docs' series."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import click
import pytest

from cli.filters import Duration
from inbox.status import NEVER, OK, SILENT, down_lag, till_view
from schemas.codec import decode_request, encode
from schemas.status import TerminalStatus

NOW = dt.datetime(2026, 5, 4, 12, 0, tzinfo=dt.UTC)
DOCS = Path(__file__).parents[2] / "docs"
SERVED = {  # cajasync/core/metrics.py and cajasync/processes/metrics.py
    "cajasync_ingest_operations_total",
    "cajasync_ingest_dead_lettered_total",
    "cajasync_ingest_batch_seconds_bucket",
    "cajasync_receipts_total",
    "cajasync_replay_requests_total",
    "cajasync_relay_confirm_seconds_bucket",
    "cajasync_terminal_pending_operations",
    "cajasync_terminal_down_lag",
    "cajasync_terminal_oldest_pending_seconds",
    "cajasync_terminal_silent_seconds",
    "cajasync_changelog_head",
    "cajasync_feed_relay_position",
    "cajasync_pending_operations",
    "cajasync_oldest_pending_seconds",
}


def status(**fields: object) -> TerminalStatus:
    return TerminalStatus(terminal="T1", sent_at=NOW, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("30s", 30), ("10m", 600), ("2h", 7200), ("1d", 86400)]
)
def test_durations_read_with_or_without_a_unit(text: str, seconds: int) -> None:
    assert Duration().convert(text, None, None) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["soon", "-5m", "m", "inf"])
def test_a_duration_that_is_not_one_is_a_usage_error(text: str) -> None:
    with pytest.raises(click.BadParameter):
        Duration().convert(text, None, None)


def test_down_lag_is_each_followed_stream_s_head_minus_the_till_s_position() -> None:
    till = status(
        location="L1",
        pos="PV1",
        terminal_kind="retail",
        streams={"productos:all": 7, "stock:loc.L1": 3},
    )
    heads = {"productos:all": 10, "stock:loc.L1": 3, "stock:term.T1": 2, "clientes:all": 4}
    lag = down_lag(till, heads)
    assert lag["productos"] == 3
    assert lag["stock"] == 2  # up to date in its location, two behind in its own stream
    assert lag["clientes"] == 4  # never pulled: the whole stream
    assert "mesas" not in lag  # not offered to a shop


def test_a_till_is_silent_once_unheard_of_for_longer_than_the_threshold() -> None:
    ten_minutes = dt.timedelta(minutes=10)
    recent = till_view("T1", NOW - dt.timedelta(minutes=9), None, {}, NOW, ten_minutes)
    quiet = till_view("T1", NOW - dt.timedelta(minutes=11), None, {}, NOW, ten_minutes)
    never = till_view("T1", None, None, {}, NOW, ten_minutes)
    assert (recent.state, quiet.state, never.state) == (OK, SILENT, NEVER)


def test_a_status_travels_as_a_request_and_an_older_one_still_decodes() -> None:
    sent = status(pending={"pending": 2, "sent": 1}, version="0.1.0")
    assert decode_request(encode(sent)) == sent
    bare = encode({"kind": "status", "terminal": "T1", "sent_at": NOW.isoformat()})
    assert decode_request(bare) == status()


def test_the_dashboard_and_alerts_use_only_series_the_processes_serve() -> None:
    texts = [
        (DOCS / "grafana/cajasync.json").read_text(),
        (DOCS / "prometheus/alerts.yml").read_text(),
    ]
    used = {name for text in texts for name in re.findall(r"\bcajasync_[a-z_]+", text)}
    assert used
    assert used <= SERVED, used - SERVED
