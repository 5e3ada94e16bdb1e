"""Terminal incarnations: tell a rebuilt till from a second live copy of the same id.

Every terminal database gets a random *incarnation* id at `terminal init` and a new one at
`terminal recover`, and stamps it on every operation (`OpEnvelope.incarnation`). Their
high-water request registers it (`registration`) as the terminal's *current* incarnation,
which continues after the highest seq the server holds (or the till's own last seq, or
where the previous one started, whichever is highest); the one it replaces becomes
*superseded* at that seq.

Ingest screens each batch in its apply transaction (`screen`), before any seq is claimed:

* an operation without an incarnation (an older cajasync), of a terminal that never
  registered one, or of its current incarnation: accepted as always;
* an operation of a superseded incarnation at or below the seq its successor continued
  after: accepted (it was recorded, or in flight, before the rebuild);
* an operation of an incarnation never registered (a till set up `--offline`, or one that
  predates incarnations) at or below where the first registration continued: accepted;
* anything else is a *second live copy*: the old database still running after the till
  was rebuilt. It is rejected with its reason, claims no seq (the rebuilt till's own
  operation with that seq still gets in), is counted per incarnation and dead-lettered by
  ingest; it is never merged.

Pure rules over plain rows; the stores keep the rows (sql_incarnations.py and
MemoryServerStore). The registry and per-till credentials of the fleet make this final.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from inbox.server_store.base import Accepted, Incoming, Invalid, Rejection, Verdict
from schemas.envelope import OpEnvelope
from schemas.feed import HighWaterMark, HighWaterRequest, OutboxRef
from schemas.ops import topic_of

CURRENT: Final = "current"
SUPERSEDED: Final = "superseded"
UNREGISTERED: Final = "unregistered"  # seen sending as a copy, never registered

CopyKey = tuple[str, str]  # (terminal, incarnation)


@dataclass(frozen=True, slots=True)
class Incarnation:
    """One database a terminal had, as the server knows it."""

    terminal: str
    incarnation: str
    status: str
    start_seq: int = 0  # registered: the seq it continues after
    end_seq: int | None = None  # superseded: the seq its successor continues after
    successor: str | None = None
    rejected: int = 0  # operations refused as a second live copy
    registered_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class Holdings:
    """What the server holds of one terminal when an incarnation registers."""

    max_seq: int = 0
    contiguous_seq: int = 0
    held: int = 0
    rows: list[OutboxRef] = field(default_factory=list)


class Book(Protocol):
    """The incarnation rows a store keeps, read and written inside its apply transaction."""

    def lineages(self, terminals: Sequence[str]) -> dict[str, list[Incarnation]]:
        """Every incarnation row of each of `terminals` that has any."""
        ...

    def count_copies(self, counts: Mapping[CopyKey, int], now: dt.datetime) -> None:
        """Add refused operations to each (terminal, incarnation), unregistered ones created."""
        ...


class IncarnationStore(Protocol):
    """A server store that registers incarnations (answering a high-water request)."""

    def register(self, request: HighWaterRequest) -> HighWaterMark:
        """Register the request's incarnation and say where the terminal continues."""
        ...

    def lineages(self) -> dict[str, list[Incarnation]]:
        """Every terminal's incarnations, for stats."""
        ...


# -- screening a batch ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Screened:
    """A batch with its second-copy operations turned into rejections that claim no seq."""

    batch: list[Incoming]
    copies: dict[int, str] = field(default_factory=dict)  # index in batch -> reason

    def mark(self, verdicts: list[Verdict]) -> list[Verdict]:
        """The store's verdicts, those of the copies marked as such (ingest dead-letters them)."""
        return [
            dataclasses.replace(verdict, outcome="copy") if index in self.copies else verdict
            for index, verdict in enumerate(verdicts)
        ]


def stamped_terminals(batch: Iterable[Incoming]) -> list[str]:
    """Terminals of the batch's operations that carry an incarnation (the ones to screen)."""
    return sorted(
        {
            incoming.envelope.terminal
            for incoming in batch
            if isinstance(incoming, Accepted | Invalid)
            and incoming.envelope.incarnation is not None
        }
    )


def screen(batch: Sequence[Incoming], book: Book, now: dt.datetime) -> Screened:
    """Reject the operations of second live copies, counting them in `book`."""
    terminals = stamped_terminals(batch)
    if not terminals:
        return Screened(list(batch))
    lineages = book.lineages(terminals)
    screened: list[Incoming] = []
    copies: dict[int, str] = {}
    counts: Counter[CopyKey] = Counter()
    for index, incoming in enumerate(batch):
        if isinstance(incoming, Accepted | Invalid):
            envelope = incoming.envelope
            reason = copy_reason(envelope, lineages.get(envelope.terminal, []))
            if reason is not None:
                copies[index] = reason
                counts[envelope.terminal, str(envelope.incarnation)] += 1
                incoming = _refusal(envelope, reason)
        screened.append(incoming)
    if counts:
        book.count_copies(counts, now)
    return Screened(screened, copies)


def copy_reason(envelope: OpEnvelope, lineage: Sequence[Incarnation]) -> str | None:
    """Why an operation comes from a second live copy of its terminal, or None if it does not."""
    if envelope.incarnation is None:
        return None
    mine = str(envelope.incarnation)
    current = _current(lineage)
    if current is None or current.incarnation == mine:
        return None
    own = next((row for row in lineage if row.incarnation == mine), None)
    if own is not None and own.status == SUPERSEDED and own.end_seq is not None:
        bound, rebuilt_as = own.end_seq, own.successor or current.incarnation
    else:
        first = min(_registered(lineage), key=lambda row: (row.start_seq, row.incarnation))
        bound, rebuilt_as = first.start_seq, first.incarnation
    if envelope.seq <= bound:
        return None
    return (
        f"terminal {envelope.terminal}: a second live copy (incarnation {mine}, seq "
        f"{envelope.seq}) after it was rebuilt as incarnation {rebuilt_as} at seq {bound}; "
        "not merged: stop that copy (its operations are on its own database)"
    )


def _refusal(envelope: OpEnvelope, reason: str) -> Rejection:
    """A rejection that names the operation but claims no seq."""
    return Rejection(
        terminal=envelope.terminal,
        seq=None,
        op_id=str(envelope.op_id),
        version=envelope.version,
        topic=topic_of(envelope.op),
        reason=reason,
    )


def _current(lineage: Iterable[Incarnation]) -> Incarnation | None:
    return next((row for row in lineage if row.status == CURRENT), None)


def _registered(lineage: Iterable[Incarnation]) -> list[Incarnation]:
    return [row for row in lineage if row.status in (CURRENT, SUPERSEDED)]


# -- registering a new incarnation ---------------------------------------------------------


def start_seq(lineage: Sequence[Incarnation], request: HighWaterRequest, holdings: Holdings) -> int:
    """Where a newly registered incarnation continues: after every seq the server holds,
    the till recorded, or the current incarnation claimed when it registered."""
    current = _current(lineage)
    claimed = 0 if current is None else current.start_seq
    return max(holdings.max_seq, request.last_seq, claimed)


def registration(
    lineage: Sequence[Incarnation], request: HighWaterRequest, start: int, now: dt.datetime
) -> list[Incarnation]:
    """The rows to write so that the request's incarnation is current from `start` on.

    Nothing when it already is (a request delivered twice), or when it was superseded since
    (a late duplicate must not bring an old database back): the answer then names the
    current incarnation and the till refuses to go on.
    """
    mine = str(request.incarnation)
    own = next((row for row in lineage if row.incarnation == mine), None)
    if own is not None and own.status in (CURRENT, SUPERSEDED):
        return []
    rows = [
        dataclasses.replace(row, status=SUPERSEDED, end_seq=start, successor=mine)
        for row in lineage
        if row.status == CURRENT
    ]
    rejected = 0 if own is None else own.rejected
    rows.append(
        Incarnation(
            request.terminal, mine, CURRENT, start_seq=start, rejected=rejected, registered_at=now
        )
    )
    return rows


def answer(
    request: HighWaterRequest, lineage: Sequence[Incarnation], holdings: Holdings
) -> HighWaterMark:
    """The reply to a high-water request, from the terminal's lineage after registering."""
    current = _current(lineage)
    assert current is not None, "a high-water answer follows a registration"
    return HighWaterMark(
        request_id=request.request_id,
        terminal=request.terminal,
        max_seq=holdings.max_seq,
        contiguous_seq=holdings.contiguous_seq,
        held=holdings.held,
        incarnation=uuid.UUID(current.incarnation),
        start_seq=current.start_seq,
        held_rows=holdings.rows,
    )


def held_rows(request: HighWaterRequest, held: Iterable[tuple[int, str, int]]) -> list[OutboxRef]:
    """What the server holds among the request's rows, by seq or by identity, in seq order."""
    seqs = {row.seq for row in request.rows}
    keys = {(row.op_id, row.version) for row in request.rows}
    found = {
        (seq, op_id, version)
        for seq, op_id, version in held
        if seq in seqs or (op_id, version) in keys
    }
    return [OutboxRef(seq=s, op_id=o, version=v) for s, o, v in sorted(found)]


# -- stats ---------------------------------------------------------------------------------


def summary(lineage: Sequence[Incarnation]) -> dict[str, object]:
    """A terminal's incarnations for `server stats`: the current one, where it continued,
    how many other copies sent operations and how many of those were refused."""
    current = _current(lineage)
    copies = [row for row in lineage if row.status != CURRENT and row.rejected]
    return {
        "incarnation": None if current is None else current.incarnation,
        "restarted_after_seq": None if current is None else current.start_seq,
        "incarnations": len(_registered(lineage)),
        "copies": len(copies),
        "copy_ops_rejected": sum(row.rejected for row in lineage),
    }
