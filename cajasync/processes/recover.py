"""A till set up again, or restored from a backup, continues where the server says.

    started = start_terminal("caja.db", identity, settings)        # `terminal init`
    recovery = recover_terminal("caja.db", "T001", settings)      # `terminal recover`

Both ask the server (cajasync/processes/high_water.py) for the terminal's high-water seq
and register a new incarnation of it (inbox/server_store/incarnations.py: a second live
copy of the old database is then refused, not merged).

`start_terminal` on a database without an identity (a new till, or one whose disk was
replaced) starts after the server's high-water: 0 for an id the server never heard of.
When the server cannot be asked it refuses, unless `offline`: the till then starts at 1,
which is right only for a new id. On a database that already has this identity it changes
nothing but location, point of sale and kind, as before.

`recover_terminal` is for a database that has its identity but lost its outbox or came
back from an old backup. Its last seq moves up to where the new incarnation starts (never
down) and every unacknowledged row is stamped with the new incarnation. A row keeps its
seq when the server already holds it (its resend is acknowledged as a duplicate) or holds
nothing at that seq (the row fills it). A row whose seq the server holds for another
operation (recorded by the lost database after the backup was taken, or by this one
after the restore) is renumbered after the new start and queued again. Acked rows are
never touched. So nothing the till still has is lost, and nothing is counted twice: the
server deduplicates by (op_id, version) whatever the seq.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import msgspec
import sqlalchemy as sa

from cajasync.core.db import database_url, make_engine, open_database
from cajasync.core.identity import (
    Position,
    TerminalIdentity,
    check_identity,
    load_identity,
    load_position,
    move_to,
)
from cajasync.core.settings import Settings
from cajasync.core.terminal_tables import ACKED, PENDING, outbox, terminal
from cajasync.errors import CajasyncError, ConfigError, NoAnswer, NotInitialised
from cajasync.processes.high_water import ask_high_water
from cajasync.processes.terminal_init import init_terminal
from schemas.codec import decode_op, encode
from schemas.feed import MAX_ROWS, HighWaterMark, HighWaterRequest, OutboxRef

TIMEOUT_S: Final = 20.0


@dataclass(frozen=True, slots=True)
class Started:
    """What `terminal init` did: asked the server (`mark`), or not (`existing`, `offline`)."""

    identity: TerminalIdentity
    mark: HighWaterMark | None = None
    existing: bool = False  # the database already was this terminal: nothing asked
    offline: bool = False  # started without asking the server

    @property
    def first_seq(self) -> int | None:
        """The seq of the first operation this till records, when it was set."""
        if self.existing:
            return None
        return 1 if self.mark is None else self.mark.start_seq + 1


@dataclass(frozen=True, slots=True)
class Recovery:
    """What `terminal recover` did to a database."""

    terminal: str
    mark: HighWaterMark
    was_at: int  # the database's last seq before
    now_at: int  # and after
    renumbered: list[tuple[int, int]] = field(default_factory=list)  # (old seq, new seq)
    kept: int = 0  # unacknowledged rows left at their seq
    already_held: int = 0  # of those, rows the server already holds


def start_terminal(
    db_target: str,
    identity: TerminalIdentity,
    settings: Settings,
    *,
    offline: bool = False,
    timeout: float = TIMEOUT_S,
) -> Started:
    """Set a till up; a new database continues after the server's high-water seq."""
    check_identity(identity)
    if existing_identity(db_target) is not None:
        init_terminal(db_target, identity, settings, declare=not offline).dispose()
        return Started(identity, existing=True, offline=offline)
    incarnation = uuid.uuid4()
    if offline:
        init_terminal(
            db_target, identity, settings, declare=False, incarnation=incarnation
        ).dispose()
        return Started(identity, offline=True)
    request = HighWaterRequest(
        terminal=identity.terminal, request_id=str(uuid.uuid4()), incarnation=incarnation
    )
    try:
        mark = ask_high_water(settings, identity, request, timeout=timeout)
    except NoAnswer as exc:
        raise NoAnswer(
            f"terminal {identity.terminal} not set up: cannot ask the server where its seqs "
            f"continue ({exc}); retry when the network is back, or add --offline to start at "
            f"seq 1 anyway (only right for an id the server has never seen: if it knows "
            f"{identity.terminal}, this till's sales are rejected until `cajasync terminal "
            f"recover --db {db_target} --id {identity.terminal}`)"
        ) from exc
    _check_registered(mark, incarnation)
    engine = init_terminal(
        db_target,
        identity,
        settings,
        declare=False,
        last_seq=mark.start_seq,
        incarnation=incarnation,
    )
    engine.dispose()
    return Started(identity, mark=mark)


def recover_terminal(
    db_target: str, terminal_id: str, settings: Settings, *, timeout: float = TIMEOUT_S
) -> Recovery:
    """Bring a database restored from a backup (or that lost its outbox) in line with what
    the server holds of its terminal; see the module doc for what happens to each row."""
    engine = open_database(db_target, "terminal")
    try:
        with engine.connect() as connection:
            identity = _identity_of(connection, db_target, terminal_id)
            before = load_position(connection)
            rows = unacknowledged(connection)
        incarnation = uuid.uuid4()
        request = HighWaterRequest(
            terminal=terminal_id,
            request_id=str(uuid.uuid4()),
            incarnation=incarnation,
            last_seq=before.last_seq,
            rows=rows,
        )
        try:
            mark = ask_high_water(settings, identity, request, timeout=timeout)
        except NoAnswer as exc:
            raise NoAnswer(
                f"terminal {terminal_id} not recovered, nothing changed: cannot ask the server "
                f"where it continues ({exc}); retry when the network is back"
            ) from exc
        _check_registered(mark, incarnation)
        with engine.begin() as connection:
            return settle_rows(connection, mark, before.last_seq, incarnation)
    finally:
        engine.dispose()


def existing_identity(db_target: str) -> TerminalIdentity | None:
    """The identity a terminal database already has; None (creating nothing) if none."""
    url = database_url(db_target)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        return None
    engine = make_engine(db_target)
    try:
        with engine.connect() as connection:
            if not sa.inspect(connection).has_table(terminal.name):
                return None
            try:
                return load_identity(connection)
            except NotInitialised:
                return None
    finally:
        engine.dispose()


def unacknowledged(connection: sa.Connection) -> list[OutboxRef]:
    """Every outbox row the server has not acknowledged, by seq."""
    query = (
        sa.select(outbox.c.seq, outbox.c.op_id, outbox.c.version)
        .where(outbox.c.state != ACKED)
        .order_by(outbox.c.seq)
    )
    refs = [OutboxRef(seq=s, op_id=o, version=v) for s, o, v in connection.execute(query)]
    if len(refs) > MAX_ROWS:
        raise CajasyncError(
            f"{len(refs)} unacknowledged operations: more than one request can ask about "
            f"({MAX_ROWS}); relay some first (`cajasync terminal run`), then recover"
        )
    return refs


def settle_rows(
    connection: sa.Connection, mark: HighWaterMark, asked_at: int, incarnation: uuid.UUID
) -> Recovery:
    """Renumber the unacknowledged rows that would collide, stamp them all with the new
    incarnation and move the last seq; in the caller's transaction.

    `asked_at` is the last seq the request was sent with: rows recorded since (the POS kept
    selling) were not asked about, so those at or below the new start are renumbered too.
    """
    held_keys = {(row.op_id, row.version) for row in mark.held_rows}
    held_seqs = {row.seq for row in mark.held_rows}
    before = load_position(connection)
    next_seq = max(mark.start_seq, before.last_seq)
    renumbered: list[tuple[int, int]] = []
    kept = already_held = 0
    query = (
        sa.select(outbox.c.seq, outbox.c.op_id, outbox.c.version, outbox.c.body)
        .where(outbox.c.state != ACKED)
        .order_by(outbox.c.seq)
    )
    for seq, op_id, version, body in connection.execute(query).all():
        held = (op_id, version) in held_keys
        unasked = asked_at < seq <= mark.start_seq
        if not held and (seq in held_seqs or unasked):
            next_seq += 1
            _move(connection, seq, next_seq, _stamp(body, next_seq, incarnation))
            renumbered.append((seq, next_seq))
        else:
            _restamp(connection, seq, _stamp(body, seq, incarnation))
            kept += 1
            already_held += held
    move_to(connection, Position(next_seq, incarnation))
    return Recovery(
        terminal=mark.terminal,
        mark=mark,
        was_at=before.last_seq,
        now_at=next_seq,
        renumbered=renumbered,
        kept=kept,
        already_held=already_held,
    )


def _identity_of(connection: sa.Connection, db_target: str, terminal_id: str) -> TerminalIdentity:
    try:
        identity = load_identity(connection)
    except NotInitialised as exc:
        raise NotInitialised(
            f"{db_target} has no terminal identity: set it up with `cajasync terminal init "
            f"--db {db_target} --id {terminal_id} --location ... --pos ...`, which asks the "
            f"server where {terminal_id} continues"
        ) from exc
    if identity.terminal != terminal_id:
        raise ConfigError(
            f"{db_target} belongs to terminal {identity.terminal}, not {terminal_id}; "
            "a terminal's id never changes"
        )
    return identity


def _check_registered(mark: HighWaterMark, incarnation: uuid.UUID) -> None:
    """The server registered this database, unless another registered after the request."""
    if mark.incarnation != incarnation:
        raise CajasyncError(
            f"terminal {mark.terminal}: another database of this terminal (incarnation "
            f"{mark.incarnation}) registered with the server after this request; nothing "
            f"changed here. Is another till set up with id {mark.terminal}?"
        )


def _stamp(body: bytes, seq: int, incarnation: uuid.UUID) -> bytes:
    envelope = decode_op(body)
    return encode(msgspec.structs.replace(envelope, seq=seq, incarnation=incarnation))


def _move(connection: sa.Connection, seq: int, new_seq: int, body: bytes) -> None:
    connection.execute(
        outbox.update()
        .where(outbox.c.seq == seq)
        .values(
            seq=new_seq,
            body=body,
            state=PENDING,
            sent_at=None,
            settled_at=None,
            last_error=(
                f"renumbered from seq {seq} by `terminal recover`: the server holds another "
                "operation at that seq"
            ),
        )
    )


def _restamp(connection: sa.Connection, seq: int, body: bytes) -> None:
    connection.execute(outbox.update().where(outbox.c.seq == seq).values(body=body))
