"""The envelope every up operation travels in, and the receipts and requests that answer it."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

import msgspec

from schemas.ops import Operation

TerminalId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,32}\Z")]
Seq = Annotated[int, msgspec.Meta(ge=1)]
Version = Annotated[int, msgspec.Meta(ge=1)]


class OpEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    """An operation as recorded in a terminal outbox and published to `cajasync.up`.

    `seq` is contiguous per terminal (every outbox row, every version, gets the next one);
    `(op_id, version)` identifies one version of one operation across all terminals.
    `incarnation` names the terminal database that recorded it (a new one at every
    `terminal init` and `terminal recover`; inbox/server_store/incarnations.py): the server tells a
    rebuilt till from a second live copy of the same id by it. None from an older cajasync.
    """

    terminal: TerminalId
    seq: Seq
    op_id: uuid.UUID
    version: Version
    recorded_at: dt.datetime
    op: Operation
    incarnation: uuid.UUID | None = None


class ReceiptItem(msgspec.Struct, frozen=True, kw_only=True):
    """The server's verdict on one outbox row, named by its `(op_id, version)`.

    The server always sets `op_id` and `version` (and `seq` when the operation decoded); a
    terminal ignores an item without them. They stay optional on the wire so that a receipt
    from an older server still decodes (a field's type never changes).
    """

    op_id: uuid.UUID | None
    version: int | None
    seq: int | None
    status: Literal["acked", "rejected"]
    reason: str = ""


class Receipt(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="receipt"):
    """A batch of verdicts for one terminal."""

    terminal: TerminalId
    items: list[ReceiptItem]


class ReplayRequest(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="replay"):
    """The server is missing `from_seq..to_seq` (inclusive) of a terminal: publish them again."""

    terminal: TerminalId
    from_seq: Seq
    to_seq: Seq


class ReplaySales(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="replay-sales"):
    """The server is missing the sales numbered `numbers` that Z close `z_number` names:
    publish every outbox row of those sales again (inbox/zreconcile.py).

    `since` bounds the terminal's search: a sale of the Z is recorded at or after the Z's
    period start (less a day of slack). The terminal answers the numbers it has no sale for
    with a ReplayReport.
    """

    terminal: TerminalId
    z_number: int
    numbers: list[int]
    topic: str = "ventas"
    since: dt.datetime | None = None


class ReplayReport(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="replay-report"
):
    """A terminal's answer to ReplaySales, up the request queue: the sale numbers it has no
    sale for, so the server flags the Z at once instead of waiting for them."""

    terminal: TerminalId
    z_number: int
    missing: list[int]
    topic: str = "ventas"
