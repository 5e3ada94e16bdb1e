"""Server ingest's pika side: what it keeps of a delivery, and everything it publishes.

Receipts and replay requests go out on the consuming channel (a lost one is recovered by
the terminal resending, which earns a duplicate receipt). Dead letters go out on a second
channel in confirm mode, so a poison message is on `cajasync.dead` before it is acked.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from typing import Any, Final

import pika
from pika.adapters.blocking_connection import BlockingChannel

from cajasync.core.topology import DEAD_EXCHANGE, DOWN_EXCHANGE, terminal_routing_key
from inbox.classify import Delivery
from inbox.store.base import TERMINAL_ID, Gap, Verdict
from schemas.codec import encode
from schemas.envelope import Receipt, ReceiptItem, ReplayRequest

log = logging.getLogger(__name__)

CONTENT_TYPE: Final = "application/msgpack"
PERSISTENT: Final = 2
REASON_HEADER: Final = "x-cajasync-reason"
ROUTING_KEY_HEADER: Final = "x-cajasync-routing-key"


def delivery(method: Any, properties: Any, body: bytes | None) -> Delivery:
    """What ingest keeps of a pika delivery."""
    headers = properties.headers if isinstance(properties.headers, dict) else {}
    return Delivery(
        delivery_tag=method.delivery_tag,
        routing_key=method.routing_key,
        body=body or b"",
        message_id=properties.message_id,
        user_id=properties.user_id,
        content_type=properties.content_type,
        headers=headers,
    )


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


class Publisher:
    """Acks, receipts, replay requests and dead letters of one broker session."""

    def __init__(self, channel: BlockingChannel, dead: BlockingChannel) -> None:
        self._channel = channel
        self._dead = dead

    def receipts(self, verdicts: list[Verdict]) -> int:
        """Send each terminal of a batch its receipt; returns how many were sent."""
        receipts = receipts_of(verdicts)
        for receipt in receipts:
            self._down(receipt.terminal, encode(receipt))
        return len(receipts)

    def replay(self, gap: Gap) -> None:
        """Ask a terminal to publish a missing range again."""
        request = ReplayRequest(terminal=gap.terminal, from_seq=gap.from_seq, to_seq=gap.to_seq)
        self._down(gap.terminal, encode(request))

    def dead_letter(self, message: Delivery, reason: str) -> None:
        """Put a rejected message on the dead-letter exchange and wait for the broker's confirm."""
        log.warning("dead-lettering %s (%s): %s", message.message_id, message.routing_key, reason)
        headers = {
            **message.headers,
            REASON_HEADER: reason,
            ROUTING_KEY_HEADER: message.routing_key,
        }
        properties = pika.BasicProperties(
            delivery_mode=PERSISTENT,
            content_type=message.content_type,
            message_id=message.message_id,
            headers=headers,
        )
        self._dead.basic_publish(
            DEAD_EXCHANGE, message.routing_key, message.body, properties, mandatory=True
        )

    def ack(self, last_tag: int) -> None:
        """Ack every delivery up to `last_tag`."""
        self._channel.basic_ack(last_tag, multiple=True)

    def nack(self, last_tag: int) -> None:
        """Give every delivery up to `last_tag` back to the queue."""
        self._channel.basic_nack(last_tag, multiple=True, requeue=True)

    def _down(self, terminal: str, body: bytes) -> None:
        properties = pika.BasicProperties(delivery_mode=PERSISTENT, content_type=CONTENT_TYPE)
        self._channel.basic_publish(DOWN_EXCHANGE, terminal_routing_key(terminal), body, properties)
