"""One key on both sides: the record (or operation) the till holds and the server's.

    sides = record_sides(engine, settings, "productos", "P001")
    sides.terminal.version, sides.server.version, sides.same

"Comparar registros" lists keys (cajasync/processes/diff.py); each opens here. The till's
side is read locally: a download topic's record from the replica (stock of any location,
saying which), an operation from the outbox as `cajasync pending show` shows it (every
version, its state and reason). The server's comes through the request queue
(`ask_record`), so it works while `cajasync terminal run` consumes the till's queue.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import msgspec
from sqlalchemy.engine import Engine

from cajasync.broker.asking import pika_asking
from cajasync.broker.ports import Askers
from cajasync.core.db import reading
from cajasync.core.identity import load_identity
from cajasync.core.settings import Settings
from cajasync.errors import UnknownOperation
from cajasync.processes.questions import DEFAULT_TIMEOUT_S, ask_record, topic_slug
from inbox.replica_api import ALL_LOCATIONS, Replica
from outbox.pending import VersionView, show_operation
from schemas.codec import to_builtins
from schemas.topics import DOWN_TOPIC_SCOPES

ABSENT = "absent"
HELD = frozenset({"live", "applied", "pending", "sent", "acked", "rejected"})


class Side(msgspec.Struct, frozen=True, kw_only=True):
    """What one side holds of a key. `status`: on the till `live` (a replica record), the
    operation's state (pending, sent, acked, rejected, purged) or `absent`; on the server
    `live`, `deleted`, `applied`, `rejected` or `absent`. `data` is the record or the
    operation as plain data (None when not held or its body is gone); `reason` the
    rejection's or the last error; `versions` every version the till holds of an
    operation, as `pending show` lists them."""

    status: str
    version: int | None = None
    location: str | None = None
    reason: str = ""
    received_at: dt.datetime | None = None
    data: dict[str, Any] | None = None
    versions: list[VersionView] = []

    @property
    def held(self) -> bool:
        return self.status in HELD


class RecordSides(msgspec.Struct, frozen=True, kw_only=True):
    """A key of `topic` on the till and on the server."""

    topic: str
    key: str
    direction: str  # down (a record) or up (an operation)
    terminal: Side
    server: Side

    @property
    def same(self) -> bool:
        """Both hold it, in the same version."""
        return (
            self.terminal.held and self.server.held and self.terminal.version == self.server.version
        )


def record_sides(
    engine: Engine,
    settings: Settings,
    topic: str,
    key: str,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    askers: Askers = pika_asking,
) -> RecordSides:
    """`key` of `topic` (slug or alias) on the till and on the server."""
    slug = topic_slug(topic)
    return RecordSides(
        topic=slug,
        key=key,
        direction="down" if slug in DOWN_TOPIC_SCOPES else "up",
        terminal=terminal_side(engine, slug, key),
        server=server_side(engine, settings, slug, key, timeout=timeout, askers=askers),
    )


def terminal_side(engine: Engine, topic: str, key: str) -> Side:
    """What the till holds of `key` of `topic` (read locally, no broker)."""
    slug = topic_slug(topic)
    if slug in DOWN_TOPIC_SCOPES:
        found = Replica(engine).locate(slug, key, location=ALL_LOCATIONS)
        if found is None:
            return Side(status=ABSENT)
        location, record = found
        return Side(status="live", version=record.version, location=location, data=_plain(record))
    try:
        history = show_operation(engine, uuid.UUID(key))
    except (ValueError, UnknownOperation):
        return Side(status=ABSENT)
    latest = history.versions[-1]
    return Side(
        status=latest.state,
        version=latest.version,
        reason=latest.last_error or "",
        data=latest.operation,
        versions=history.versions,
    )


def server_side(
    engine: Engine,
    settings: Settings,
    topic: str,
    key: str,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    askers: Askers = pika_asking,
) -> Side:
    """What the server holds of `key` of `topic` for this till (asked over the broker)."""
    with reading(engine) as connection:
        identity = load_identity(connection)
    answer = ask_record(settings, identity, topic, key, timeout=timeout, askers=askers)
    data: dict[str, Any] | None = None
    if answer.record is not None:
        data = _plain(answer.record)
    elif answer.operation:
        data = json.loads(answer.operation)
    return Side(
        status=answer.status,
        version=answer.version if answer.status != ABSENT else None,
        reason=answer.reason,
        received_at=answer.received_at,
        data=data,
    )


def _plain(value: object) -> dict[str, Any]:
    data = to_builtins(value)
    assert isinstance(data, dict)
    return data
