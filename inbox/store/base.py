"""The server store port: what server ingest hands over, and what it gets back.

Rules every adapter keeps (tests/integration/test_store_contract.py checks them):

* one tracking row per `(op_id, version)`; a second arrival is a duplicate whose verdict is
  repeated (acked again, or rejected again with the stored reason) and nothing is re-applied;
* one current row per `op_id`, the highest version; an older version arriving later is
  recorded as stale, changes nothing and is still acked (the terminal must stop resending);
* a rejection with a known terminal and seq is recorded under `bad:<terminal>:<seq>`
  (version 0), so its seq counts as held and contiguity moves past it;
* per terminal, `contiguous_seq` is the highest N with 1..N all held;
* weekly file chunks are reassembled once every chunk is held, then checked by size and sha256.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final, Literal, Protocol

from schemas.envelope import OpEnvelope
from schemas.ops import CashPayment, Sale, WeeklyFileChunk, ZClose

Status = Literal["acked", "rejected"]
# `copy`: rejected as from a second live copy of its terminal (inbox/store/incarnations.py)
Outcome = Literal["applied", "stale", "duplicate", "rejected", "copy"]
FileStatus = Literal["partial", "complete", "corrupt"]

MAX_INT: Final = 2**31 - 1  # the seq and version columns are 32-bit integers
MAX_SIZE: Final = 2**63 - 1  # file sizes are 64-bit integers
MAX_AMOUNT: Final = Decimal(10) ** 14  # amounts are NUMERIC(16, 2)
MAX_TOPIC: Final = 32
TERMINAL_ID: Final = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


@dataclass(frozen=True, slots=True)
class Accepted:
    """A message that decoded and validated: apply it."""

    envelope: OpEnvelope


@dataclass(frozen=True, slots=True)
class Rejection:
    """A message that failed decoding, validation or the routing checks, with what is known."""

    terminal: str | None
    seq: int | None
    op_id: str | None
    version: int | None
    topic: str
    reason: str


Incoming = Accepted | Rejection


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


@dataclass(frozen=True, slots=True)
class TerminalStats:
    """What the server holds of one terminal."""

    terminal: str
    contiguous_seq: int
    max_seq: int
    topics: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Gap:
    """Seqs `from_seq..to_seq` (inclusive) of a terminal are missing below its max seq."""

    terminal: str
    from_seq: int
    to_seq: int


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

    def weekly_files(self) -> list[WeeklyFile]:
        """Every weekly file seen, partial, complete or corrupt."""
        ...


def storage_problem(envelope: OpEnvelope) -> str | None:
    """Why a valid envelope does not fit the store's columns, or None when it does."""
    if envelope.seq > MAX_INT or envelope.version > MAX_INT:
        return f"seq {envelope.seq} / version {envelope.version} exceed {MAX_INT}"
    amount = amount_of(envelope)
    if amount is not None and not (amount.is_finite() and abs(amount) < MAX_AMOUNT):
        return f"amount {amount} is not a finite number below {MAX_AMOUNT}"
    if isinstance(envelope.op, WeeklyFileChunk):
        return _chunk_problem(envelope.op)
    return None


def _chunk_problem(chunk: WeeklyFileChunk) -> str | None:
    if chunk.chunk_count > MAX_INT or chunk.size > MAX_SIZE:
        return f"chunk count {chunk.chunk_count} / size {chunk.size} too large"
    if "\x00" in chunk.file_name:
        return "file name contains a NUL character"
    return None


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
