"""Server ingest: consume `cajasync.ops` in batches, apply each batch in one transaction,
answer every terminal with one receipt per batch, then ack the batch to the broker.

Poison messages and conflicting copies go to `cajasync.dlx` (confirmed, with their reason)
before their batch is acked, as the store's verdicts say (`dead_letters`); gaps in a
terminal's seqs are requested again after `gap_grace_s`. The consume loop, with its
broker reconnects, is `cajasync.broker.consumer.Consumer`, on any
`cajasync.broker.ports.Broker`. A message the database refuses is isolated from its batch
(`inbox.isolate`), rejected and dead-lettered with the database's reason; the rest of the
batch is applied. A database that is away is waited for with
`cajasync.core.store_faults.store_retry`, the batch held unacked meanwhile; only an outage
longer than `store_give_up_s` (or a broken store) nacks the batch and stops ingest.
Operations the store refuses as a second live copy of their terminal
(inbox/server_store/incarnations.py) are dead-lettered the same way.

Gaps are asked for again with backoff (inbox/gaps.py), and the states of those asked for are
saved in the store for `server stats`. Seqs still missing at or below where a rebuilt or
recovered till restarted are recorded lost after `lost_after_s` (inbox/server_store/lost.py), so
contiguity moves past them and they are not asked for any more.

With several server processes on one store, only the one holding the store's lease
(`cajasync.core.lease.StoreLease`) asks for gaps, records lost seqs and sweeps the waiting
Z closes: every process sees every terminal's gaps in the store, and N of them would ask
each till N times and overwrite each other's saved gap states. A gap is often seqs another
process holds in its prefetch window: `gap_grace_s` must outlast that wait (prefetch over
one process's rate: well under a second here, 5 s by default).

Z closes are reconciled with the sales held (inbox/zreconcile.py): after every batch, before
its receipts, for the terminals whose Z closes or sales it brought; and every second for the
waiting Zs due (a replay of missing sales to ask again, a deadline passed).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from sqlalchemy.engine import Engine

from cajasync.broker.consumer import Batching, Consumer
from cajasync.broker.ports import Broker, ConsumeSession, Delivery, Outbound
from cajasync.broker.rabbitmq import RabbitBroker
from cajasync.core import metrics
from cajasync.core.counters import counters_text
from cajasync.core.lease import StoreLease
from cajasync.core.settings import Settings
from cajasync.core.store_faults import store_retry
from cajasync.core.topology import OPS_QUEUE, declare_server
from cajasync.errors import StoreError, StoreUnavailable
from inbox.classify import classify
from inbox.gaps import GapTracker
from inbox.ingest_receipts import ask_replay, send_receipts
from inbox.isolate import apply_isolating
from inbox.registry import Lookup, admit
from inbox.server_store import incarnations
from inbox.server_store.base import Gap, GapState, Incoming, ServerStore, Verdict
from inbox.server_store.sql import SqlServerStore
from inbox.server_views import weekly_counts
from inbox.zreconcile import SWEEP_S, ZReconciler
from schemas.topics import WEEKLY_FILES

log = logging.getLogger(__name__)

GAP_CHECK_S: Final = 0.5
GAP_CAP_RESENDS: Final = 10  # a gap is asked for at least every 10 x resend_after_s


@dataclass(slots=True)
class IngestStats:
    """What server ingest did so far.

    `received` = applied + stale + duplicates + rejected + conflicts.
    """

    received: int = 0
    applied: int = 0
    duplicates: int = 0
    stale: int = 0
    rejected: int = 0
    conflicts: int = 0
    copies: int = 0  # rejected as from a second live copy of their terminal (also in rejected)
    dead_lettered: int = 0
    receipts_sent: int = 0
    replays_requested: int = 0
    seqs_lost: int = 0  # recorded lost: missing below where a rebuilt till restarted
    sales_replays_requested: int = 0  # ReplaySales: sales a Z close names and none held

    def count(self, verdicts: list[Verdict]) -> None:
        """Add a batch's verdicts."""
        self.received += len(verdicts)
        for verdict in verdicts:
            match verdict.outcome:
                case "applied":
                    self.applied += 1
                case "stale":
                    self.stale += 1
                case "duplicate":
                    self.duplicates += 1
                case "rejected":
                    self.rejected += 1
                case "conflict":
                    self.conflicts += 1
                case "copy":
                    self.rejected += 1
                    self.copies += 1

    def __str__(self) -> str:
        return counters_text(self)


def run_ingest(
    engine: Engine,
    settings: Settings,
    *,
    until_idle: float | None = None,
    stop: threading.Event | None = None,
    on_progress: Callable[[IngestStats], None] | None = None,
    broker: Broker | None = None,
    lease: StoreLease | None = None,
) -> IngestStats:
    """Ingest until `stop` is set, or until nothing arrived for `until_idle` seconds.
    With `lease`, gaps, lost seqs and Z sweeps are looked after only while it is held."""
    ingest = Ingest(
        SqlServerStore(engine),
        settings,
        until_idle=until_idle,
        stop=stop,
        on_progress=on_progress,
        broker=broker,
        closes=ZReconciler(engine, settings),
        registry=Lookup(engine, allow_shared=settings.allow_shared_user),
        lease=lease,
    )
    return ingest.run()


def dead_letters(deliveries: list[Delivery], verdicts: list[Verdict]) -> list[tuple[Delivery, str]]:
    """The deliveries of a batch that go to the dead-letter queue, each with its reason."""
    return [
        (delivery, verdict.dead_letter)
        for delivery, verdict in zip(deliveries, verdicts, strict=True)
        if verdict.dead_letter
    ]


def _measure(deliveries: list[Delivery], verdicts: list[Verdict], seconds: float) -> None:
    """The batch in the process's metrics (cajasync/core/metrics.py), topics by routing key."""
    topics = [_topic(delivery.routing_key) for delivery in deliveries]
    dead = [topic for topic, verdict in zip(topics, verdicts, strict=True) if verdict.dead_letter]
    metrics.ingested(topics, [verdict.outcome for verdict in verdicts], dead, seconds)


def _topic(routing_key: str) -> str | None:
    parts = routing_key.split(".")
    return parts[2] if len(parts) == 3 else None


def server_stats(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """Per terminal: progress, operations per topic (a weekly file counts once, however
    many chunks it came in: those are `weekly_chunks`), seqs recorded lost, its first open
    gap (seqs, since when and how many times ingest asked for it) and its databases
    (incarnations: the current one, second live copies refused), as `server stats --json`
    prints."""
    store = SqlServerStore(engine)
    weekly = weekly_counts(engine)
    lineages = store.lineages()
    gaps = {gap.terminal: gap for gap in store.gaps()}
    states = {state.terminal: state for state in store.gap_states()}
    terminals = [
        {
            "terminal": s.terminal,
            "contiguous_seq": s.contiguous_seq,
            "max_seq": s.max_seq,
            "topics": _files_once(s.topics, weekly.get(s.terminal)),
            "weekly_chunks": weekly.get(s.terminal, (0, 0))[1],
            "lost_seqs": s.lost,
            "gap": open_gap(gaps.get(s.terminal), states.get(s.terminal)),
            **incarnations.summary(lineages.pop(s.terminal, [])),
        }
        for s in store.stats()
    ]
    terminals += [
        {
            "terminal": t,
            "contiguous_seq": 0,
            "max_seq": 0,
            "topics": {},
            "weekly_chunks": 0,
            "lost_seqs": 0,
            "gap": None,
            **incarnations.summary(rows),
        }
        for t, rows in lineages.items()
    ]
    return {"terminals": sorted(terminals, key=lambda row: row["terminal"])}


def _files_once(topics: dict[str, int], weekly: tuple[int, int] | None) -> dict[str, int]:
    """Operations per topic, weekly files counted as files rather than chunks."""
    counted = dict(topics)
    if weekly is not None and weekly[0]:
        counted[WEEKLY_FILES] = weekly[0]
    return counted


def open_gap(gap: Gap | None, state: GapState | None) -> dict[str, Any] | None:
    """A terminal's first open gap for stats: its seqs, and since when and how many times
    ingest asked for it (once it has: the state saved for that gap); None when none is open."""
    if gap is None:
        return None
    seqs = {"from_seq": gap.from_seq, "to_seq": gap.to_seq}
    if state is None or state.from_seq != gap.from_seq:
        return {**seqs, "open_since": None, "asked": 0, "last_asked": None}
    return {
        **seqs,
        "open_since": _moment(state.opened_at),
        "asked": state.asked,
        "last_asked": None if state.asked_at is None else _moment(state.asked_at),
    }


def _moment(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds")


class Ingest:
    """One server ingest consumer over any ServerStore and any broker (RabbitMQ by default)."""

    def __init__(
        self,
        store: ServerStore,
        settings: Settings,
        *,
        until_idle: float | None = None,
        stop: threading.Event | None = None,
        on_progress: Callable[[IngestStats], None] | None = None,
        broker: Broker | None = None,
        closes: ZReconciler | None = None,
        registry: Lookup | None = None,
        lease: StoreLease | None = None,
    ) -> None:
        """`closes`: Z close reconciliation (inbox/zreconcile.py) after every batch; None
        (a store without SQL tables) leaves it out. `lease`: the store's, when several
        processes serve it (gaps, lost seqs and Z sweeps only while held); None: always."""
        self.stats = IngestStats()
        self._closes = closes
        self._registry = registry
        self._lease = lease
        self._store = store
        self._settings = settings
        self._until_idle = until_idle
        self._stop = stop
        self._on_progress = on_progress
        cap = GAP_CAP_RESENDS * settings.resend_after_s
        self._tracker = GapTracker(settings.gap_grace_s, cap)
        self._saved_gaps: list[GapState] | None = None  # None: not resumed from the store yet
        self._retry = store_retry(settings, what="server ingest", stop=stop)
        self._last_flush = self._last_gap_check = self._last_sweep = time.monotonic()
        self._loop = Consumer(
            broker or RabbitBroker(settings.broker_url),
            settings,
            what="server ingest",
            queue=OPS_QUEUE,
            prefetch=settings.prefetch,
            batching=Batching(settings.ingest_batch, settings.ingest_flush_s),
            declare=declare_server,
            stop=stop,
            until_idle=until_idle,
        )

    def run(self) -> IngestStats:
        """Consume until done, reconnecting with the broker reconnect policy."""
        self._loop.run(self)
        return self.stats

    # -- cajasync.broker.consumer.Batches ---------------------------------------------------

    def on_session(self, session: ConsumeSession) -> None:
        self._retry = store_retry(  # waits for the store without starving the broker session
            self._settings, what="server ingest", stop=self._stop, sleep=session.sleep
        )

    def on_batch(self, deliveries: list[Delivery], out: Outbound) -> None:
        self._flush(out, deliveries)

    def done(self, out: Outbound, *, holding: bool) -> bool:
        """Check gaps when due; True once idle with no gap in its grace period."""
        now = time.monotonic()
        quiet = self._loop.quiet()
        unchecked = self._last_gap_check < self._last_flush
        due = now - self._last_gap_check >= GAP_CHECK_S or (quiet and unchecked)
        if due and self._leading():
            self._check_gaps(out, now)
        if self._closes is not None and now - self._last_sweep >= SWEEP_S and self._leading():
            self._sweep_closes(self._closes, out, now)
        return quiet and not holding and not self._tracker.waiting()

    def _leading(self) -> bool:
        """Whether this process looks after gaps and Z sweeps (it holds the store's lease);
        one that takes the lease over resumes the gap states the last holder saved."""
        held = self._lease is None or self._lease.held()
        if not held and self._saved_gaps is not None:  # stale: resume when taken again
            self._saved_gaps = None
            self._tracker = GapTracker(self._tracker.grace, self._tracker.cap)
        return held

    def _stopping(self) -> bool:
        return self._loop.stopping()

    def _flush(self, out: Outbound, deliveries: list[Delivery]) -> None:
        """Apply a batch, answer its terminals, then ack it; nack it if the store fails
        for good (or is away when ingest is stopped)."""
        started = time.monotonic()
        batch = [classify(delivery) for delivery in deliveries]
        try:
            if self._registry is not None:  # who is let in: inbox/registry.py
                batch = self._retry(admit, self._registry, deliveries, batch)
            applied = apply_isolating(self._apply, batch)
        except StoreError as exc:
            out.nack(deliveries[-1].delivery_tag)
            if isinstance(exc, StoreUnavailable) and self._stopping():
                log.warning("server ingest stopped while the store was away; batch requeued")
                return
            raise
        verdicts = applied.verdicts
        for delivery, reason in dead_letters(deliveries, verdicts):
            out.dead_letter(delivery, reason)
            self.stats.dead_lettered += 1
        if self._closes is not None:  # before the receipts: an acked Z has been checked
            self._count_sales_replays(self._retry(self._closes.after_batch, out, batch, verdicts))
        self.stats.receipts_sent += send_receipts(out, verdicts)
        out.ack(deliveries[-1].delivery_tag)
        self.stats.count(verdicts)
        _measure(deliveries, verdicts, time.monotonic() - started)
        self._last_flush = time.monotonic()
        self._progress()

    def _sweep_closes(self, closes: ZReconciler, out: Outbound, now: float) -> None:
        """Check the waiting Z closes due (a replay to ask again, a deadline passed)."""
        self._last_sweep = now
        try:
            self._count_sales_replays(self._retry(closes.sweep, out))
        except StoreUnavailable:
            if not self._stopping():
                raise

    def _count_sales_replays(self, asked: int) -> None:
        if asked:
            self.stats.sales_replays_requested += asked
            self._progress()

    def _apply(self, batch: Sequence[Incoming]) -> list[Verdict]:
        return self._retry(self._store.apply, batch)

    def _check_gaps(self, out: Outbound, now: float) -> None:
        self._last_gap_check = now
        try:
            self._ask_for_gaps(out)
        except StoreUnavailable:
            if not self._stopping():
                raise
            # stopped while the store was away: nothing to ask for now

    def _ask_for_gaps(self, out: Outbound) -> None:
        """Record lost seqs, ask for the gaps due, save the states of those asked for."""
        self._mark_lost()
        due = self._tracker.due(self._open_gaps(), time.time())
        for gap in due:
            log.info("asking %s to replay seqs %d..%d", gap.terminal, gap.from_seq, gap.to_seq)
            ask_replay(out, gap)
        if due:
            self.stats.replays_requested += len(due)
            self._progress()
        states = self._tracker.states()
        if states != self._saved_gaps:
            self._retry(self._store.save_gap_states, states)
            self._saved_gaps = states

    def _mark_lost(self) -> None:
        """Record lost the seqs missing long enough below a restart point (lost.py)."""
        lost_after = dt.timedelta(seconds=self._settings.lost_after_s)
        for lost in self._retry(self._store.mark_lost, dt.datetime.now(dt.UTC) - lost_after):
            log.warning(
                "terminal %s: seqs %d..%d recorded lost: still missing %s after incarnation %s "
                "continued after seq %d (they were on the lost database; one that arrives yet "
                "is still applied)",
                lost.terminal,
                lost.from_seq,
                lost.to_seq,
                lost_after,
                lost.incarnation,
                lost.restart_seq,
            )
            self.stats.seqs_lost += lost.count

    def _open_gaps(self) -> list[Gap]:
        """The open gaps; the tracker resumes from the saved states on the first call."""
        if self._saved_gaps is None:
            self._saved_gaps = self._retry(self._store.gap_states)
            self._tracker.resume(self._saved_gaps)
        gaps: list[Gap] = self._retry(self._store.gaps)
        return gaps

    def _progress(self) -> None:
        if self._on_progress is not None:
            self._on_progress(replace(self.stats))
