"""Every till's status on the server: the latest each reported, and the fleet view.

A running till sends a `TerminalStatus` (schemas/status.py) every `status_interval_s` and
when its pending counts change; the request handler keeps the latest per terminal
(`record_status`: an older one than held changes nothing). `fleet` puts together what
`cajasync server terminals` shows per terminal: last contact (the latest of its status,
its last ingested batch, its last registered database), pending operations and the age
of the oldest, down lag per topic (the head seq of each stream it follows minus the
position it reported), its cajasync version. Every terminal the server knows is listed
(`known_terminals`), one that never reported as such.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Final

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cajasync.core.dialect import Dialect
from cajasync.core.server_tables import (
    REVOKED,
    incarnations,
    progress,
    stream_heads,
    terminal_status,
)
from cajasync.core.server_tables import terminals as registry
from cajasync.core.store_faults import server_transaction
from inbox.entitlement import Requester, streams_for
from schemas.codec import encode
from schemas.feed import split_stream
from schemas.status import TerminalStatus
from schemas.topics import DOWN_TOPIC_SCOPES

OK: Final = "ok"
SILENT: Final = "silent"
NEVER: Final = "never connected"
DEFAULT_SILENT_AFTER: Final = dt.timedelta(minutes=10)

_decoder = msgspec.msgpack.Decoder(TerminalStatus)


def record_status(engine: Engine, status: TerminalStatus, *, now: dt.datetime) -> bool:
    """Keep `status` as its terminal's latest unless a later one (by `sent_at`) is held;
    True when it was kept."""
    row = {
        "terminal": status.terminal,
        "sent_at": status.sent_at,
        "received_at": now,
        "version": status.version[:32],
        "pending": status.pending_total,
        "oldest_pending": status.oldest_pending,
        "body": encode(status),
    }
    insert = Dialect(engine).insert(terminal_status).values(row)
    newer = insert.excluded.sent_at >= terminal_status.c.sent_at
    upsert = insert.on_conflict_do_update(
        index_elements=[terminal_status.c.terminal],
        set_={name: insert.excluded[name] for name in row if name != "terminal"},
        where=newer,
    )
    doing = f"recording the status of terminal {status.terminal}"
    with server_transaction(engine, "server store", doing) as connection:
        return connection.execute(upsert).rowcount > 0


@dataclass(frozen=True, slots=True)
class TillView:
    """One terminal as `server terminals` shows it."""

    terminal: str
    state: str  # ok, silent, never connected, revoked
    last_contact: dt.datetime | None
    silent_s: float | None  # seconds since last contact
    version: str | None
    pending: dict[str, int] = field(default_factory=dict)
    oldest_pending: dt.datetime | None = None
    oldest_pending_age_s: float | None = None
    lag: dict[str, int] = field(default_factory=dict)  # down topic -> seqs behind
    last_pull_at: dt.datetime | None = None
    last_pull_status: str | None = None
    status_at: dt.datetime | None = None  # when its last status arrived

    @property
    def pending_total(self) -> int:
        return sum(self.pending.values())

    @property
    def lag_total(self) -> int:
        return sum(self.lag.values())

    @property
    def behind(self) -> bool:
        """Something is still on its way: pending operations up, or changes down."""
        return self.pending_total > 0 or self.lag_total > 0

    def as_dict(self) -> dict[str, Any]:
        """For `--json`: times in ISO 8601 UTC, ages in seconds."""
        return {
            "terminal": self.terminal,
            "state": self.state,
            "last_contact": _iso(self.last_contact),
            "silent_s": _seconds(self.silent_s),
            "version": self.version,
            "pending": self.pending_total,
            "pending_by_state": dict(self.pending),
            "oldest_pending": _iso(self.oldest_pending),
            "oldest_pending_age_s": _seconds(self.oldest_pending_age_s),
            "lag": self.lag_total,
            "lag_by_topic": dict(self.lag),
            "last_pull_at": _iso(self.last_pull_at),
            "last_pull_status": self.last_pull_status,
            "status_at": _iso(self.status_at),
        }


def fleet(
    engine: Engine,
    *,
    now: dt.datetime | None = None,
    silent_after: dt.timedelta = DEFAULT_SILENT_AFTER,
) -> list[TillView]:
    """Every terminal the server knows, by id: silent when its last contact is older than
    `silent_after`."""
    now = now or dt.datetime.now(dt.UTC)
    with server_transaction(engine, "server store", "reading the terminals' status") as c:
        contacts = last_contacts(c)
        statuses = latest_statuses(c)
        heads = _heads(c, statuses.values())
        terminals = known_terminals(c) | contacts.keys()
        revoked = revoked_terminals(c)
    views = [
        till_view(t, contacts.get(t), statuses.get(t), heads, now, silent_after)
        for t in sorted(terminals)
    ]
    return [replace(view, state=REVOKED) if view.terminal in revoked else view for view in views]


def known_terminals(connection: sa.Connection) -> set[str]:
    """Every terminal id the server knows of: those that sent operations, a status or a
    high-water request, and the registered ones (`registered_terminals`)."""
    found: set[str] = set(connection.scalars(sa.select(progress.c.terminal)))
    found |= set(connection.scalars(sa.select(terminal_status.c.terminal)))
    found |= set(connection.scalars(sa.select(incarnations.c.terminal).distinct()))
    return found | registered_terminals(connection)


def registered_terminals(connection: sa.Connection) -> set[str]:
    """The terminals of the fleet registry (`server terminal add`), connected or not: one
    that never connected shows as "never connected"."""
    return set(connection.scalars(sa.select(registry.c.terminal)))


def revoked_terminals(connection: sa.Connection) -> set[str]:
    """Registered terminals whose access was revoked (`server terminal revoke`)."""
    query = sa.select(registry.c.terminal).where(registry.c.status == REVOKED)
    return set(connection.scalars(query))


def last_contacts(connection: sa.Connection) -> dict[str, dt.datetime]:
    """Per terminal, the latest moment the server heard of it: its status, its last batch
    of new operations (inbox_progress.updated_at), its last registered database."""
    queries = [
        sa.select(terminal_status.c.terminal, terminal_status.c.received_at),
        sa.select(progress.c.terminal, progress.c.updated_at),
        sa.select(incarnations.c.terminal, sa.func.max(incarnations.c.registered_at)).group_by(
            incarnations.c.terminal
        ),
    ]
    latest: dict[str, dt.datetime] = {}
    for query in queries:
        for terminal, moment in connection.execute(query):
            if moment is not None:
                moment = _utc(moment)
                latest[terminal] = max(latest.get(terminal, moment), moment)
    return latest


def latest_statuses(connection: sa.Connection) -> dict[str, tuple[TerminalStatus, dt.datetime]]:
    """Per terminal, its latest status and when it arrived."""
    rows = connection.execute(sa.select(terminal_status.c.received_at, terminal_status.c.body))
    found: dict[str, tuple[TerminalStatus, dt.datetime]] = {}
    for received_at, body in rows:
        status = _decoder.decode(body)
        found[status.terminal] = (status, _utc(received_at))
    return found


def followed_streams(status: TerminalStatus) -> list[str]:
    """The streams a till follows: those it is entitled to (when it said where it stands)
    and those it holds a position in."""
    streams = dict.fromkeys(status.streams)
    if status.location and status.pos and status.terminal_kind:
        requester = Requester(status.terminal, status.location, status.pos, status.terminal_kind)
        for topic in DOWN_TOPIC_SCOPES:
            streams.update(dict.fromkeys(streams_for(requester, topic)))
    return list(streams)


def down_lag(status: TerminalStatus, heads: dict[str, int]) -> dict[str, int]:
    """Per down topic, how many changes the server has that the till has not applied: the
    head of each stream it follows minus its position there (0 when it has none)."""
    lag: dict[str, int] = {}
    for stream in followed_streams(status):
        topic = split_stream(stream)[0]
        behind = max(0, heads.get(stream, 0) - status.streams.get(stream, 0))
        lag[topic] = lag.get(topic, 0) + behind
    return lag


def till_view(
    terminal: str,
    contact: dt.datetime | None,
    reported: tuple[TerminalStatus, dt.datetime] | None,
    heads: dict[str, int],
    now: dt.datetime,
    silent_after: dt.timedelta,
) -> TillView:
    """One terminal's line, from its last contact and its latest status (if any)."""
    silent_s = None if contact is None else max(0.0, (now - contact).total_seconds())
    if contact is None:
        state = NEVER
    elif now - contact > silent_after:
        state = SILENT
    else:
        state = OK
    if reported is None:
        return TillView(terminal, state, contact, silent_s, None)
    status, received_at = reported
    oldest = None if status.oldest_pending is None else _utc(status.oldest_pending)
    return TillView(
        terminal,
        state,
        contact,
        silent_s,
        status.version,
        pending={state: n for state, n in status.pending.items() if n},
        oldest_pending=oldest,
        oldest_pending_age_s=None if oldest is None else max(0.0, (now - oldest).total_seconds()),
        lag=down_lag(status, heads),
        last_pull_at=None if status.last_pull_at is None else _utc(status.last_pull_at),
        last_pull_status=status.last_pull_status or None,
        status_at=received_at,
    )


def _heads(
    connection: sa.Connection, statuses: Iterable[tuple[TerminalStatus, dt.datetime]]
) -> dict[str, int]:
    """Head seq of every stream some terminal follows."""
    wanted = sorted({s for status, _at in statuses for s in followed_streams(status)})
    heads: dict[str, int] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        query = sa.select(stream_heads.c.stream, stream_heads.c.seq).where(
            stream_heads.c.stream.in_(chunk)
        )
        heads.update({stream: seq for stream, seq in connection.execute(query)})
    return heads


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(dt.UTC).isoformat(timespec="seconds")


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
