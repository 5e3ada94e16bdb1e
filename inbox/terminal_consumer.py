"""The terminal's inbox consumer: what the server sends to the terminal's queue, applied.

Receipts and replay requests (a seq range, or the sales a Z close names) settle the
outbox (`inbox.receipts`); change events (from the queue, and from the streams of the
shared scopes, whose offsets are stored with what they applied: `inbox.stream_offsets`),
snapshot pages and images go to the replica (`inbox.replica`; adjacent change events as
one batch). Messages are buffered as they arrive and applied together in the write
transaction the process hands over (the one that also marks the relay's sent rows), then
acknowledged with one multiple ack once it committed; the catch-up and image requests
they produce are published after that, on the same broker session.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Final, Protocol

import msgspec
import sqlalchemy as sa

from cajasync.core.counters import counters_text
from cajasync.core.identity import TerminalIdentity
from cajasync.core.settings import Settings
from cajasync.errors import InvalidMessage
from inbox.receipts import apply_receipt, apply_replay, apply_replay_sales
from inbox.replica import FeedMemory, FeedMessage, apply_down, coalesce
from inbox.stream_offsets import save_offsets
from schemas.codec import decode_terminal_inbox
from schemas.envelope import Receipt, ReplayRequest, ReplaySales
from schemas.feed import ChangeEvent, split_stream
from schemas.topics import TABLE_KINDS, TABLE_TOPICS
from schemas.unions import Request, TerminalInbox

log = logging.getLogger(__name__)

RECEIPT_PREFETCH: Final = 200


@dataclass(frozen=True, slots=True)
class Held:
    """A delivery buffered until the next write. A stream's deliveries have negative tags
    (`cajasync.broker.ports.LinkHandler`) and carry their stream and offset."""

    tag: int
    message: TerminalInbox
    size: int
    stream: str | None = None
    offset: int | None = None


class Replies(Protocol):
    """What the consumer does on the terminal's broker session."""

    def ack(self, tag: int, *, multiple: bool) -> None: ...

    def reject(self, tag: int) -> None: ...

    def send_request(self, request: Request) -> None: ...


class Taken(Enum):
    """What became of a delivered message."""

    DROPPED = "dropped"  # unreadable, or meant for another terminal: rejected
    PULSE = "pulse"  # stream heads: buffered, but no sign of activity
    BUFFERED = "buffered"


@dataclass
class ConsumerStats:
    """`replays_requested` counts replay request messages, `down` the feed messages applied
    (changes, pages, images), `requests` those sent up."""

    receipts: int = 0
    acked: int = 0
    rejected: int = 0
    replays_requested: int = 0
    down: int = 0
    requests: int = 0

    def __str__(self) -> str:
        return counters_text(self)


class TerminalConsumer:
    """Buffers, applies and acknowledges the messages of one terminal's queue."""

    def __init__(
        self,
        identity: TerminalIdentity,
        settings: Settings,
        replies: Replies,
        *,
        on_replay: Callable[[int], None],
    ) -> None:
        self.identity, self.replies, self.on_replay = identity, replies, on_replay
        self.feed = FeedMemory(retry_after_s=settings.resend_after_s)
        self.stats = ConsumerStats()
        self.inbox: list[Held] = []

    def take(
        self,
        tag: int,
        routing_key: str,
        body: bytes,
        *,
        stream: str | None = None,
        offset: int | None = None,
    ) -> Taken:
        """Decode and buffer one delivery (of the queue, or of `stream` at `offset`); reject
        one that is unreadable or not ours."""
        try:
            message = decode_terminal_inbox(body)
        except InvalidMessage as exc:
            log.warning(
                "terminal %s: dropping message %s: %s", self.identity.terminal, routing_key, exc
            )
            self.replies.reject(tag)
            return Taken.DROPPED
        if isinstance(message, Receipt | ReplayRequest | ReplaySales) and (
            message.terminal != self.identity.terminal
        ):
            log.warning(
                "terminal %s: dropping a %s meant for terminal %s",
                self.identity.terminal,
                type(message).__name__,
                message.terminal,
            )
            self.replies.reject(tag)
            return Taken.DROPPED
        self.inbox.append(Held(tag, message, len(body), stream, offset))
        if isinstance(message, ChangeEvent) and not message.changes:
            return Taken.PULSE  # stream heads: the feed's pulse, not activity
        return Taken.BUFFERED

    @property
    def full(self) -> bool:
        """Half the prefetch is buffered: apply it without waiting for the next tick."""
        return len(self.inbox) * 2 >= RECEIPT_PREFETCH

    # -- the relay's companion ------------------------------------------------------------

    def waiting(self) -> bool:
        return bool(self.inbox)

    def urgent(self) -> bool:
        """Change events and replay requests do not wait; receipts wait for a full buffer."""
        if self.full:
            return True
        return any(not isinstance(held.message, Receipt) for held in self.inbox)

    def progress(self) -> int:
        return self.stats.receipts

    def write(self, connection: sa.Connection) -> Callable[[], None]:
        """Apply the buffered messages; return what to do once the transaction committed."""
        requests, replay_from = self._apply(connection)
        return lambda: self._acknowledge(requests, replay_from)

    def reset(self) -> None:
        """The session ended: unacked messages come again, requests in flight are gone."""
        self.feed.forget()
        self.inbox = []

    # -- apply ----------------------------------------------------------------------------

    def _apply(self, connection: sa.Connection) -> tuple[list[Request], int | None]:
        """The requests the buffered messages ask for, and where a replay starts."""
        replay_from: int | None = None
        requests: list[Request] = []
        feed: list[tuple[FeedMessage, int]] = []
        offsets: dict[str, int] = {}
        for held in self.inbox:
            message, size = held.message, held.size
            if held.stream is not None and held.offset is not None:
                offsets[held.stream] = max(held.offset, offsets.get(held.stream, -1))
            if isinstance(message, ChangeEvent):
                kept = self._of_kind(message)
                if kept is not None:
                    feed.append((kept, size))
            elif isinstance(message, Receipt):
                self._count_receipt(apply_receipt(connection, message))
            elif isinstance(message, ReplayRequest):
                apply_replay(connection, message)
                self.stats.replays_requested += 1
                replay_from = min(replay_from or message.from_seq, message.from_seq)
            elif isinstance(message, ReplaySales):
                replayed = apply_replay_sales(connection, message)
                self.stats.replays_requested += 1
                if replayed.from_seq is not None:
                    replay_from = min(replay_from or replayed.from_seq, replayed.from_seq)
                if replayed.report is not None:
                    requests.append(replayed.report)
            else:
                feed.append((message, size))
        for fed, size in coalesce(feed):
            requests += apply_down(connection, fed, self.identity, size=size, memory=self.feed)
        save_offsets(connection, offsets)
        self.stats.down += len(feed)
        return requests, replay_from

    def _of_kind(self, event: ChangeEvent) -> ChangeEvent | None:
        """The event without what this kind of till does not take: a stream carries the
        tables of restaurants and hotels to every till of its scope. None: nothing left."""
        if self.identity.kind in TABLE_KINDS:
            return event
        changes = [change for change in event.changes if change.topic not in TABLE_TOPICS]
        heads = {s: h for s, h in event.heads.items() if split_stream(s)[0] not in TABLE_TOPICS}
        if len(changes) == len(event.changes) and len(heads) == len(event.heads):
            return event
        if not changes and not heads:
            return None
        return msgspec.structs.replace(event, changes=changes, heads=heads)

    def _acknowledge(self, requests: list[Request], replay_from: int | None) -> None:
        """Ack the applied messages at once (the queue's and the streams' last ones, each
        with every earlier one), send what they asked for."""
        for last in (self._last(queue=True), self._last(queue=False)):
            if last is not None:
                self.replies.ack(last, multiple=True)
        self.inbox = []
        if replay_from is not None:
            self.on_replay(replay_from)
        for request in requests:
            self.replies.send_request(request)
            self.stats.requests += 1

    def _last(self, *, queue: bool) -> int | None:
        """The tag of the last buffered delivery of the queue (or of the streams)."""
        return next((h.tag for h in reversed(self.inbox) if (h.tag > 0) == queue), None)

    def _count_receipt(self, counts: tuple[int, int]) -> None:
        self.stats.receipts += 1
        self.stats.acked += counts[0]
        self.stats.rejected += counts[1]
