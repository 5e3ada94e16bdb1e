"""The server store port: what server ingest hands over, and what it gets back.

Rules every adapter keeps (tests/contracts/store_contract.py checks them):

* only an operation of its own terminal (`Accepted` or `Invalid`: it decoded and its sender
  checks passed; or `Unreadable`: it did not decode, but its terminal's own broker user sent
  it naming its `(op_id, version)` and seq) occupies a seq; a `Rejection` (it did not decode
  under a shared broker user, or its sender is not the terminal it names) is recorded
  nowhere and answered only to its authenticated sender;
* one tracking row per `(op_id, version)`; a second arrival is a duplicate whose verdict is
  repeated (acked again, or rejected again with the stored reason) and nothing is re-applied;
  a copy whose content digest differs from the first's is answered the same way, with the
  outcome "conflict" and a dead letter naming both digests: the first is kept;
* an `Invalid` or `Unreadable` operation is recorded as rejected under its own
  `(op_id, version)`, so its seq counts as held and contiguity moves past it (a replay of it
  is a duplicate, rejected again);
* a different `(op_id, version)` claiming a seq already held is rejected with the outcome
  "conflict" and dead-lettered; the operation held keeps the seq;
* per terminal, `contiguous_seq` is the highest N with 1..N all held or lost;
* `mark_lost` records as lost the seqs still missing at or below a restart point (a rebuilt
  or recovered till continued after it: inbox/server_store/lost.py) registered before a given
  time, so contiguity moves past them; a seq above every restart point is never lost; an
  operation that still arrives for a lost seq takes it and is applied as usual;
* weekly file chunks are reassembled once every chunk is held, then checked by size and sha256;
* the gap states ingest saves (`save_gap_states`) are read back as saved (`gap_states`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Final, Literal, Protocol

from schemas.envelope import OpEnvelope
from schemas.limits import AMOUNT_DIGITS, MAX_AMOUNT, MONEY_PLACES
from schemas.limits import MAX_INT as MAX_INT  # what classify and the rules compare seqs with
from schemas.ops import CashPayment, Sale, WeeklyFileChunk, ZClose
from schemas.validation import chunk_problem, envelope_problem

Status = Literal["acked", "rejected"]
# `conflict`: a copy that contradicts what is held; `copy`: from a second live copy of its
# terminal (inbox/server_store/incarnations.py)
Outcome = Literal["applied", "stale", "duplicate", "rejected", "conflict", "copy"]
FileStatus = Literal["partial", "complete", "corrupt"]

_LIMIT: Final = f"10^{AMOUNT_DIGITS - MONEY_PLACES}"
_CENTS: Final = Decimal(1).scaleb(-MONEY_PLACES)
_ROUNDING: Final = Context(prec=AMOUNT_DIGITS + 8, rounding=ROUND_HALF_UP)  # as the database
MAX_TOPIC: Final = 32
TERMINAL_ID: Final = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


@dataclass(frozen=True, slots=True)
class Accepted:
    """An operation that decoded, validated and came from its own terminal: apply it.

    `digest` is the sha256 (hex) of the message as received; "" means of `encode(envelope)`.
    """

    envelope: OpEnvelope
    digest: str = ""


@dataclass(frozen=True, slots=True)
class Invalid:
    """An operation of its own terminal that fails validation: record it as rejected.

    It is the terminal's real operation, so it is held under its own `(op_id, version)` and
    its seq counts as held; otherwise contiguity would stall at it for good and every replay
    the server asked for would be rejected again.
    """

    envelope: OpEnvelope
    reason: str
    digest: str = ""


@dataclass(frozen=True, slots=True)
class Unreadable:
    """An operation its terminal's own broker user sent that did not decode: record it as
    rejected.

    The broker authenticated the sender (a non-shared user equal to the routing key's
    terminal: inbox/classify.py) and the relay names the operation on every message
    (message_id `<op_id>/<version>`, header `seq`), so the seq is the terminal's own: it is
    held under that `(op_id, version)` like an `Invalid` one, without an envelope, and the
    till's row is answered rejected with the reason. Otherwise the seq would stay a gap the
    server asks for again and again, and the till would send the same bytes every time.
    """

    terminal: str
    seq: int
    op_id: str
    version: int
    topic: str
    reason: str
    digest: str


@dataclass(frozen=True, slots=True)
class Rejection:
    """A message from nowhere: it did not decode, or its sender is not the terminal it names.

    It is recorded nowhere and occupies no seq. `terminal` is who may be told (an
    authenticated sender), None when nobody is; `seq`, when known, only cross-checks that
    answer's receipt item on the terminal.
    """

    terminal: str | None
    seq: int | None
    op_id: str | None
    version: int | None
    topic: str
    reason: str


Incoming = Accepted | Invalid | Unreadable | Rejection


@dataclass(frozen=True, slots=True)
class Verdict:
    """The server's answer to one incoming message, duplicates included."""

    terminal: str | None
    seq: int | None
    op_id: str | None
    version: int | None
    status: Status
    reason: str = ""
    outcome: Outcome = "applied"
    dead_letter: str = ""  # why this copy goes to the dead-letter queue; "" when it does not


@dataclass(frozen=True, slots=True)
class TerminalStats:
    """What the server holds of one terminal."""

    terminal: str
    contiguous_seq: int
    max_seq: int
    topics: dict[str, int] = field(default_factory=dict)
    lost: int = 0  # seqs recorded lost (LostRange)


@dataclass(frozen=True, slots=True)
class Gap:
    """Seqs `from_seq..to_seq` (inclusive) of a terminal are missing below its max seq."""

    terminal: str
    from_seq: int
    to_seq: int


@dataclass(frozen=True, slots=True)
class GapState:
    """An open gap as server ingest tracks it (inbox/gaps.py), saved for `server stats`:
    open since `opened_at`, asked for `asked` times, last at `asked_at` (epoch seconds)."""

    terminal: str
    from_seq: int
    to_seq: int
    opened_at: float
    asked: int = 0
    asked_at: float | None = None


@dataclass(frozen=True, slots=True)
class LostRange:
    """Seqs `from_seq..to_seq` of a terminal, recorded lost at `lost_at`: they were missing at
    or below `restart_seq`, where `incarnation` continued after the till was rebuilt or
    recovered (inbox/server_store/lost.py)."""

    terminal: str
    from_seq: int
    to_seq: int
    restart_seq: int
    incarnation: str
    lost_at: dt.datetime

    @property
    def count(self) -> int:
        """How many seqs the range holds."""
        return self.to_seq - self.from_seq + 1


@dataclass(frozen=True, slots=True)
class WeeklyFile:
    """A weekly fiscal file as reassembled from its chunks (content once all are held)."""

    terminal: str
    week: str
    file_name: str
    sha256: str
    size: int
    chunk_count: int
    chunks_held: int
    status: FileStatus
    reason: str = ""
    content: bytes | None = None


class ServerStore(Protocol):
    """The server inbox's storage: dedup, apply, progress per terminal, weekly files."""

    def apply(self, batch: Sequence[Incoming]) -> list[Verdict]:
        """Record and apply a batch in one transaction; one verdict per message, in order."""
        ...

    def stats(self) -> list[TerminalStats]:
        """Progress and operations held per topic, for every terminal seen, by terminal."""
        ...

    def gaps(self) -> list[Gap]:
        """The first missing seq range of every terminal whose max seq is past a hole."""
        ...

    def mark_lost(self, registered_before: dt.datetime) -> list[LostRange]:
        """Record as lost every seq missing at or below a restart point registered before
        `registered_before`, with something held above it; the ranges recorded."""
        ...

    def gap_states(self) -> list[GapState]:
        """The gap states ingest saved last, by terminal."""
        ...

    def save_gap_states(self, states: Sequence[GapState]) -> None:
        """Replace the saved gap states with `states` (one per terminal)."""
        ...

    def weekly_files(self) -> list[WeeklyFile]:
        """Every weekly file seen, partial, complete or corrupt."""
        ...


def storage_problem(envelope: OpEnvelope) -> str | None:
    """Why a valid envelope does not fit the store's columns, or None when it does.

    The store's last line, for an operation that was never validated: the rules and limits
    are schemas/validation.py's and schemas/limits.py's, except that an amount is compared
    as the database stores it, rounded to cents (`amount_problem`).
    """
    problem = envelope_problem(envelope)
    if problem is not None:
        return problem
    amount = amount_of(envelope)
    if amount is not None:
        problem = amount_problem(amount)
        if problem is not None:
            return problem
    if isinstance(envelope.op, WeeklyFileChunk):
        return chunk_problem(envelope.op)
    return None


def amount_problem(amount: Decimal) -> str | None:
    """Why an amount does not fit its NUMERIC(16, 2) column once rounded to cents, or None.

    The database rounds half away from zero to the column's scale first, then checks the
    precision: 99999999999999.999 is below 10^14 but stored as 10^14, which does not fit.
    """
    if not amount.is_finite() or abs(amount) >= MAX_AMOUNT:
        return f"amount {amount} is not a finite number below {_LIMIT}"
    rounded = _ROUNDING.quantize(amount, _CENTS)
    if abs(rounded) >= MAX_AMOUNT:
        return f"amount {amount} rounds to {rounded} at cents, not below {_LIMIT}"
    return None


def digest_of(body: bytes) -> str:
    """The content digest of a message body: sha256, hex."""
    return hashlib.sha256(body).hexdigest()


def amount_of(envelope: OpEnvelope) -> Decimal | None:
    """The amount a server user sums: sale total, cash payment amount or Z close total."""
    match envelope.op:
        case Sale() as sale:
            return sale.totals.total
        case CashPayment() as payment:
            return payment.amount
        case ZClose() as close:
            return close.total
        case _:
            return None


def voided_of(envelope: OpEnvelope) -> bool:
    """Whether the operation is a voided sale."""
    return isinstance(envelope.op, Sale) and envelope.op.voided
