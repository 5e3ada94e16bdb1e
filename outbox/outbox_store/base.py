"""The terminal outbox port: what the POS records and what the relay claims and settles.

Rules every adapter keeps (tests/unit/test_outbox_contract.py on memory,
tests/integration/test_outbox_contract.py on SQLite check them):

* `record` appends an operation with the next seq of the terminal's counter (1, 2, 3, ...);
  a new `op_id` is version 1, the `op_id` of a recorded operation gets the next version;
  an operation the server would reject raises InvalidMessage and nothing is written;
* rows start pending; `claim_pending` hands out pending rows above a seq, in seq order;
  `claim_stale` the sent rows above a seq confirmed before a time;
* `mark_sent` makes pending or sent rows sent (attempts + 1, the last error cleared);
  `mark_refused` puts them back to pending with the reason (attempts + 1); a row a receipt
  settled (acked or rejected) is left alone by both;
* `list_pending` lists every row not acked, oldest first, by topic and state when asked;
  `replay` puts the given operations (every version) or every row not acked back to
  pending, or raises UnknownOperation naming the ids it does not hold, changing nothing;
* every database error leaves as a cajasync error (NotInitialised on a database never set
  up with `cajasync terminal init`).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import msgspec

from cajasync.core.terminal_tables import STATES
from cajasync.errors import ConfigError
from outbox.claims import OutRow
from outbox.record import Recorded
from schemas.ops import Operation


class PendingOp(msgspec.Struct, frozen=True, kw_only=True):
    """One outbox row the server has not acknowledged."""

    op_id: str
    seq: int
    topic: str
    version: int
    state: str
    attempts: int
    last_error: str | None
    recorded_at: dt.datetime
    sent_at: dt.datetime | None


class OutboxStore(Protocol):
    """The terminal outbox, as the POS, the relay and the operator use it."""

    def record(
        self,
        operation: Operation,
        *,
        op_id: uuid.UUID | None = None,
        now: dt.datetime | None = None,
    ) -> Recorded:
        """Append `operation` (a new version of `op_id` when given) in a transaction of its own."""
        ...

    def claim_pending(self, *, after_seq: int, limit: int) -> list[OutRow]:
        """Up to `limit` pending rows with seq above `after_seq`, in seq order."""
        ...

    def claim_stale(self, *, sent_before: float, after_seq: int, limit: int) -> list[OutRow]:
        """Up to `limit` sent rows above `after_seq` confirmed before `sent_before`."""
        ...

    def mark_sent(self, seqs: Iterable[int], *, now: float) -> int:
        """Broker-confirmed rows become sent; how many changed."""
        ...

    def mark_refused(self, reasons: Mapping[int, str]) -> int:
        """Rows the broker returned or nacked go back to pending with why; how many changed."""
        ...

    def list_pending(
        self, *, topic: str | None = None, state: str | None = None, limit: int | None = None
    ) -> list[PendingOp]:
        """Every operation not yet acked, oldest first."""
        ...

    def replay(self, op_ids: Sequence[uuid.UUID] | None = None) -> int:
        """Queue the given operations (or every row not acked) again; how many rows."""
        ...

    def counts(self) -> dict[str, dict[str, int]]:
        """Rows per topic and state, e.g. {"ventas": {"acked": 10, "pending": 2}}."""
        ...


def check_state(name: str) -> str:
    """`name` if it is an outbox state, else ConfigError listing them."""
    if name not in STATES:
        raise ConfigError(f"unknown state {name!r}; expected one of: {', '.join(STATES)}")
    return name


def missing_ops(wanted: Iterable[str], found: Iterable[str]) -> str | None:
    """The message of UnknownOperation for the op ids in `wanted` not in `found`, or None."""
    missing = sorted(set(wanted) - set(found))
    return f"not in this terminal's outbox: {', '.join(missing)}" if missing else None
