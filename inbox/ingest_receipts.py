"""What server ingest sends its terminals: a receipt per batch and replay requests.

Both go out unconfirmed on the consume session (`cajasync.broker.ports.Outbound.send_down`):
a lost receipt is recovered by the terminal resending, which earns a duplicate receipt.
"""

from __future__ import annotations

import uuid
from collections import defaultdict

from cajasync.broker.ports import Outbound
from cajasync.core.topology import terminal_routing_key
from inbox.server_store.base import TERMINAL_ID, Gap, Verdict
from schemas.codec import encode
from schemas.envelope import Receipt, ReceiptItem, ReplayRequest


def send_receipts(out: Outbound, verdicts: list[Verdict]) -> int:
    """Send each terminal of a batch its receipt; returns how many were sent."""
    receipts = receipts_of(verdicts)
    for receipt in receipts:
        out.send_down(terminal_routing_key(receipt.terminal), encode(receipt))
    return len(receipts)


def ask_replay(out: Outbound, gap: Gap) -> None:
    """Ask a terminal to publish a missing range again."""
    request = ReplayRequest(terminal=gap.terminal, from_seq=gap.from_seq, to_seq=gap.to_seq)
    out.send_down(terminal_routing_key(gap.terminal), encode(request))


def receipts_of(verdicts: list[Verdict]) -> list[Receipt]:
    """One receipt per terminal, its items in batch order.

    Every item names the `(op_id, version)` it answers: a verdict without them, or without a
    terminal to tell (a message from nowhere), gets no item.
    """
    items: dict[str, list[ReceiptItem]] = defaultdict(list)
    for verdict in verdicts:
        item = _item(verdict)
        if item is not None and verdict.terminal and TERMINAL_ID.match(verdict.terminal):
            items[verdict.terminal].append(item)
    return [Receipt(terminal=terminal, items=items[terminal]) for terminal in sorted(items)]


def _item(verdict: Verdict) -> ReceiptItem | None:
    op_id = _uuid(verdict.op_id)
    if op_id is None or verdict.version is None:
        return None
    return ReceiptItem(
        op_id=op_id,
        version=verdict.version,
        seq=verdict.seq,
        status=verdict.status,
        reason=verdict.reason if verdict.status == "rejected" else "",
    )


def _uuid(op_id: str | None) -> uuid.UUID | None:
    try:
        return None if op_id is None else uuid.UUID(op_id)
    except ValueError:
        return None
