"""Serving a process's metrics: `server run --metrics-port N`, `terminal run --metrics-port N`.

The counters and histograms updated as things happen are in cajasync/core/metrics.py;
here are the gauges read from the database when Prometheus scrapes (one small query
each, so they are never stale and cost nothing between scrapes), the counters kept from
the loops' stats (receipts, replay requests) and the HTTP endpoint
(prometheus_client's `start_http_server`, stopped with the process).

Server: per terminal (the only per-till series) its pending operations by state, its
down lag, the age of its oldest pending operation and the seconds since it was last
heard of, from the statuses tills report (inbox/status.py); the change log's head and the
feed relay's position. Terminal: its outbox rows not acknowledged by state and the age of
the oldest.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from prometheus_client import start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine

from cajasync.core import metrics
from cajasync.core.db import reading
from cajasync.core.server_tables import change_log
from cajasync.core.terminal_tables import STATES
from cajasync.errors import CajasyncError, ConfigError
from cajasync.processes.till_status import pending_counts
from inbox.status import fleet

log = logging.getLogger(__name__)


@contextmanager
def exposed(port: int | None, collectors: Iterable[Collector] = ()) -> Iterator[None]:
    """Serve the process's metrics on `port` (all interfaces) while inside; nothing if None."""
    if port is None:
        yield
        return
    try:
        server, thread = start_http_server(port, registry=metrics.registry(collectors))
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on port {port}: {exc.strerror}") from exc
    log.info("metrics on http://0.0.0.0:%d/metrics", port)
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class ServerGauges(Collector):
    """Per-till gauges from their statuses, and the change log's head and relay position."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        pending = GaugeMetricFamily(
            "cajasync_terminal_pending_operations",
            "Operations a till has not had acknowledged, by state, as it last reported.",
            labels=["terminal", "state"],
        )
        lag = GaugeMetricFamily(
            "cajasync_terminal_down_lag",
            "Changes the server holds that a till has not applied (all its streams).",
            labels=["terminal"],
        )
        oldest = GaugeMetricFamily(
            "cajasync_terminal_oldest_pending_seconds",
            "Age of a till's oldest operation not acknowledged (0: none).",
            labels=["terminal"],
        )
        silent = GaugeMetricFamily(
            "cajasync_terminal_silent_seconds",
            "Seconds since the server last heard of a till (status, operations, init).",
            labels=["terminal"],
        )
        head = GaugeMetricFamily(
            "cajasync_changelog_head", "Id of the last change written to the change log."
        )
        position = GaugeMetricFamily(
            "cajasync_feed_relay_position",
            "Id up to which the feed relay has published the change log (every change before).",
        )
        try:
            self._fill(pending, lag, oldest, silent, head, position)
        except CajasyncError as exc:  # a scrape while the database is away: what we have
            log.warning("metrics: server store not read: %s", exc)
        yield from (pending, lag, oldest, silent, head, position)

    def _fill(self, *families: GaugeMetricFamily) -> None:
        pending, lag, oldest, silent, head, position = families
        for till in fleet(self._engine):
            for state in STATES[:2] + STATES[3:]:  # pending, sent, rejected
                pending.add_metric([till.terminal, state], till.pending.get(state, 0))
            lag.add_metric([till.terminal], till.lag_total)
            oldest.add_metric([till.terminal], till.oldest_pending_age_s or 0.0)
            if till.silent_s is not None:
                silent.add_metric([till.terminal], till.silent_s)
        last, first_unpublished = _change_log_marks(self._engine)
        head.add_metric([], last)
        position.add_metric([], last if first_unpublished is None else first_unpublished - 1)


def _change_log_marks(engine: Engine) -> tuple[int, int | None]:
    """The change log's last id, and its first id not yet published (None: all are)."""
    try:
        with reading(engine) as connection:
            last = connection.scalar(sa.select(sa.func.max(change_log.c.id))) or 0
            first = connection.scalar(
                sa.select(sa.func.min(change_log.c.id)).where(change_log.c.published_at.is_(None))
            )
    except sa.exc.SQLAlchemyError as exc:
        raise CajasyncError(f"reading the change log: {exc.__class__.__name__}") from exc
    return last, first


class TerminalGauges(Collector):
    """The till's outbox rows not acknowledged, by state, and the oldest one's age."""

    def __init__(self, engine: Engine, terminal: str) -> None:
        self._engine, self._terminal = engine, terminal

    def collect(self) -> Iterator[Metric]:
        pending = GaugeMetricFamily(
            "cajasync_pending_operations",
            "Outbox rows not acknowledged by the server, by state.",
            labels=["terminal", "state"],
        )
        oldest = GaugeMetricFamily(
            "cajasync_oldest_pending_seconds",
            "Age of the oldest outbox row not acknowledged (0: none).",
            labels=["terminal"],
        )
        try:
            with reading(self._engine) as connection:
                counts, first = pending_counts(connection)
        except sa.exc.SQLAlchemyError as exc:  # busy or away: skip this scrape's gauges
            log.warning("metrics: terminal database not read: %s", exc.__class__.__name__)
            return
        for state in STATES[:2] + STATES[3:]:
            pending.add_metric([self._terminal, state], counts.get(state, 0))
        age = 0.0 if first is None else (dt.datetime.now(dt.UTC) - first).total_seconds()
        oldest.add_metric([self._terminal], max(0.0, age))
        yield from (pending, oldest)


class StatsCounters:
    """Counters kept from successive stats snapshots of a loop: each grows by what the
    snapshot's field grew by (`fields` maps a stats field to the counter child)."""

    def __init__(self, fields: dict[str, Any]) -> None:
        self._fields = fields
        self._last: dict[str, int] = {}
        self._lock = threading.Lock()

    def update(self, stats: Any) -> None:
        with self._lock:
            for name, counter in self._fields.items():
                value = int(getattr(stats, name, 0))
                grew = value - self._last.get(name, 0)
                if grew > 0:
                    counter.inc(grew)
                self._last[name] = value


def server_counters() -> Callable[[Any], None]:
    """Keeps receipts and replay requests from server ingest's stats."""
    counters = StatsCounters(
        {
            "receipts_sent": metrics.RECEIPTS.labels("server"),
            "replays_requested": metrics.REPLAY_REQUESTS.labels("server"),
        }
    )
    return counters.update


def terminal_counters() -> Callable[[Any], None]:
    """Keeps receipts and replay requests from a till's relay stats."""
    counters = StatsCounters(
        {
            "receipts": metrics.RECEIPTS.labels("terminal"),
            "replays_requested": metrics.REPLAY_REQUESTS.labels("terminal"),
        }
    )
    return counters.update
