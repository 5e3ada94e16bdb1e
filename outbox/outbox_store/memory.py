"""The terminal outbox in plain Python: the same rules without a database, for unit tests."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from cajasync.core.terminal_tables import ACKED, PENDING, SENT
from cajasync.errors import UnknownOperation
from outbox.claims import OutRow
from outbox.outbox_store.base import PendingOp, check_state, missing_ops
from outbox.record import Recorded, envelope_of
from schemas.codec import encode
from schemas.ops import Operation, topic_of
from schemas.topics import up_topic
from schemas.validation import check_size, validate_operation


@dataclass(slots=True)
class _Row:
    seq: int
    op_id: str
    version: int
    topic: str
    body: bytes
    recorded_at: dt.datetime
    state: str = PENDING
    attempts: int = 0
    last_error: str | None = None
    sent_at: float | None = None

    def out(self) -> OutRow:
        return OutRow(self.seq, self.op_id, self.version, self.topic, self.body)


class MemoryOutboxStore:
    """The outbox of one terminal (`terminal`, `incarnation`), held in a dict by seq."""

    def __init__(self, terminal: str, *, incarnation: uuid.UUID | None = None) -> None:
        self._terminal = terminal
        self._incarnation = incarnation
        self._rows: dict[int, _Row] = {}
        self._last_seq = 0
        self._lock = threading.Lock()

    def record(
        self,
        operation: Operation,
        *,
        op_id: uuid.UUID | None = None,
        now: dt.datetime | None = None,
    ) -> Recorded:
        """Append `operation` (a new version of `op_id` when given)."""
        validate_operation(operation)
        check_size(operation)
        with self._lock:
            if op_id is None:
                op_id, version = uuid.uuid4(), 1
            else:
                version = 1 + max(
                    (row.version for row in self._rows.values() if row.op_id == str(op_id)),
                    default=0,
                )
            where = Recorded(self._last_seq + 1, op_id, version)
            recorded_at = now or dt.datetime.now(dt.UTC)
            envelope = envelope_of(operation, self._terminal, where, self._incarnation, recorded_at)
            self._rows[where.seq] = _Row(
                where.seq, str(op_id), version, topic_of(operation), encode(envelope), recorded_at
            )
            self._last_seq = where.seq
        return where

    def claim_pending(self, *, after_seq: int, limit: int) -> list[OutRow]:
        """Up to `limit` pending rows with seq above `after_seq`, in seq order."""
        with self._lock:
            return [row.out() for row in self._above(after_seq, PENDING)][:limit]

    def claim_stale(self, *, sent_before: float, after_seq: int, limit: int) -> list[OutRow]:
        """Up to `limit` sent rows above `after_seq` confirmed before `sent_before`."""
        with self._lock:
            stale = (
                row
                for row in self._above(after_seq, SENT)
                if row.sent_at is not None and row.sent_at < sent_before
            )
            return [row.out() for row in stale][:limit]

    def mark_sent(self, seqs: Iterable[int], *, now: float) -> int:
        """Broker-confirmed rows become sent; how many changed."""
        with self._lock:
            rows = self._unsettled(seqs)
            for row in rows:
                row.state, row.sent_at, row.last_error = SENT, now, None
                row.attempts += 1
            return len(rows)

    def mark_refused(self, reasons: Mapping[int, str]) -> int:
        """Rows the broker returned or nacked go back to pending with why; how many changed."""
        with self._lock:
            rows = self._unsettled(reasons)
            for row in rows:
                row.state, row.last_error = PENDING, reasons[row.seq]
                row.attempts += 1
            return len(rows)

    def list_pending(
        self, *, topic: str | None = None, state: str | None = None, limit: int | None = None
    ) -> list[PendingOp]:
        """Every operation not yet acked, oldest first."""
        slug = None if topic is None else up_topic(topic)
        wanted = None if state is None else check_state(state)
        with self._lock:
            found = [
                _pending_op(row)
                for row in sorted(self._rows.values(), key=lambda row: row.seq)
                if row.state != ACKED
                and (slug is None or row.topic == slug)
                and (wanted is None or row.state == wanted)
            ]
        return found if limit is None else found[:limit]

    def replay(self, op_ids: Sequence[uuid.UUID] | None = None) -> int:
        """Queue the given operations (every version), or every row not acked, again."""
        with self._lock:
            if op_ids is None:
                rows = [row for row in self._rows.values() if row.state != ACKED]
            else:
                wanted = {str(op_id) for op_id in op_ids}
                rows = [row for row in self._rows.values() if row.op_id in wanted]
                if missing := missing_ops(wanted, (row.op_id for row in rows)):
                    raise UnknownOperation(missing)
            for row in rows:
                row.state, row.sent_at, row.last_error = PENDING, None, None
            return len(rows)

    def counts(self) -> dict[str, dict[str, int]]:
        """Rows per topic and state, e.g. {"ventas": {"acked": 10, "pending": 2}}."""
        counts: dict[str, dict[str, int]] = {}
        with self._lock:
            for row in self._rows.values():
                by_state = counts.setdefault(row.topic, {})
                by_state[row.state] = by_state.get(row.state, 0) + 1
        return counts

    def settle(self, seq: int, state: str, reason: str | None = None) -> None:
        """What a server receipt does to row `seq` (on SQL: inbox/receipts.py)."""
        with self._lock:
            row = self._rows[seq]
            row.state, row.last_error = check_state(state), reason

    def _above(self, after_seq: int, state: str) -> list[_Row]:
        return sorted(
            (row for row in self._rows.values() if row.seq > after_seq and row.state == state),
            key=lambda row: row.seq,
        )

    def _unsettled(self, seqs: Iterable[int]) -> list[_Row]:
        rows = (self._rows.get(seq) for seq in seqs)
        return [row for row in rows if row is not None and row.state in (PENDING, SENT)]


def _pending_op(row: _Row) -> PendingOp:
    return PendingOp(
        op_id=row.op_id,
        seq=row.seq,
        topic=row.topic,
        version=row.version,
        state=row.state,
        attempts=row.attempts,
        last_error=row.last_error,
        recorded_at=row.recorded_at,
        sent_at=None if row.sent_at is None else dt.datetime.fromtimestamp(row.sent_at, dt.UTC),
    )
