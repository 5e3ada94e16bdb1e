"""The server database's tables: inbox store, catalog and change log (SQLite or PostgreSQL)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from schemas.limits import AMOUNT_DIGITS, MAX_AMOUNT, MONEY_PLACES

metadata = sa.MetaData()

_CENTS: Final = Decimal(1).scaleb(-MONEY_PLACES)
_ROUNDING: Final = Context(prec=AMOUNT_DIGITS + 8, rounding=ROUND_HALF_UP, traps=[])


class Amount(sa.types.TypeDecorator[Decimal]):
    """An exact amount of money, read back as a Decimal with cents on both databases.

    PostgreSQL: NUMERIC(16, 2). SQLite has no exact decimal (a NUMERIC column stores
    99999999999999.99 as the REAL 99999999999999.98, and sums of cents drift), so there
    the column is a BIGINT of cents (`amount` 12.10 is stored 1210; SQLite sums integers
    exactly), written rounded to cents half away from zero as PostgreSQL rounds. An amount
    that NUMERIC(16, 2) would refuse is refused on SQLite too, with an OverflowError (a
    data error for cajasync.core.store_faults). A SUM, MIN or MAX of the column selected through
    SQLAlchemy is a Decimal too; raw SQL on SQLite sees cents (migration s0007).
    """

    impl = sa.Numeric(AMOUNT_DIGITS, MONEY_PLACES)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.BigInteger())
        return dialect.type_descriptor(sa.Numeric(AMOUNT_DIGITS, MONEY_PLACES))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None or dialect.name != "sqlite":
            return value
        return to_cents(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None or dialect.name != "sqlite":
            return value  # type: ignore[no-any-return]
        return from_cents(value)


def to_cents(amount: Decimal) -> int:
    """`amount` in integer cents, rounded half away from zero; OverflowError when it is not
    a finite number below 10^14 once rounded (what NUMERIC(16, 2) refuses)."""
    rounded = _ROUNDING.quantize(Decimal(amount), _CENTS)
    if not rounded.is_finite() or abs(rounded) >= MAX_AMOUNT:
        column = f"NUMERIC({AMOUNT_DIGITS}, {MONEY_PLACES})"
        raise OverflowError(f"amount {amount} does not fit the server's {column} amounts")
    return int(rounded.scaleb(MONEY_PLACES))


def from_cents(cents: int | float) -> Decimal:
    """An amount from the cents SQLite holds (a float from an aggregate such as AVG)."""
    exact = Decimal(cents) if isinstance(cents, int) else Decimal(repr(cents))
    return exact.scaleb(-MONEY_PLACES)


APPLIED: Final = "applied"  # this version is (or was) the op's current version
STALE: Final = "stale"  # an older version that arrived after a newer one: changes nothing
REJECTED: Final = "rejected"  # its terminal's operation, failing validation; see reason

# One row per (op_id, version) ever received from its own terminal: the dedup/tracking row
# of the inbox, holding that terminal's seq.
received = sa.Table(
    "inbox_received",
    metadata,
    sa.Column("op_id", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("terminal", sa.String(32), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("topic", sa.String(32), nullable=False),
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("digest", sa.String(64)),  # sha256 of the first copy; NULL before s0004
    sa.UniqueConstraint("terminal", "seq", name="uq_inbox_received_terminal_seq"),
)

# The current state of every operation: the highest version received wins.
operations = sa.Table(
    "server_operations",
    metadata,
    sa.Column("op_id", sa.String(36), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("terminal", sa.String(32), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("topic", sa.String(32), nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("amount", Amount()),  # sale total, payment amount, Z total
    sa.Column("voided", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("payload", sa.Text, nullable=False),  # the operation as JSON
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_server_operations_terminal_topic", "terminal", "topic"),
)

# Per terminal: the highest seq such that every seq up to it is held.
progress = sa.Table(
    "inbox_progress",
    metadata,
    sa.Column("terminal", sa.String(32), primary_key=True),
    sa.Column("contiguous_seq", sa.Integer, nullable=False),
    sa.Column("max_seq", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

PARTIAL: Final = "partial"  # some chunks of the file are still missing
COMPLETE: Final = "complete"  # reassembled; size and sha256 match
CORRUPT: Final = "corrupt"  # reassembled or checked and found wrong; see reason

# The current version of every weekly file chunk, without its data (that is in the payload).
weekly_chunks = sa.Table(
    "server_weekly_chunks",
    metadata,
    sa.Column("op_id", sa.String(36), primary_key=True),
    sa.Column("terminal", sa.String(32), nullable=False),
    sa.Column("week", sa.String(8), nullable=False),
    sa.Column("file_name", sa.String(255), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("chunk_index", sa.Integer, nullable=False),
    sa.Column("chunk_count", sa.Integer, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Index("ix_server_weekly_chunks_file", "terminal", "week", "file_name", "sha256"),
)

# One row per weekly file (terminal, week, name, announced sha256), reassembled when complete.
weekly_files = sa.Table(
    "server_weekly_files",
    metadata,
    sa.Column("terminal", sa.String(32), primary_key=True),
    sa.Column("week", sa.String(8), primary_key=True),
    sa.Column("file_name", sa.String(255), primary_key=True),
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("chunk_count", sa.Integer, nullable=False),
    sa.Column("chunks_held", sa.Integer, nullable=False),
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("content", sa.LargeBinary),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

# Per terminal, every database (incarnation) it had: the current one and where it started,
# those it replaced and where they ended, and copies that were never registered.
# inbox/server_store/incarnations.py holds the rules.
incarnations = sa.Table(
    "inbox_incarnations",
    metadata,
    sa.Column("terminal", sa.String(32), primary_key=True),
    sa.Column("incarnation", sa.String(36), primary_key=True),
    sa.Column("status", sa.String(12), nullable=False),  # current, superseded, unregistered
    sa.Column("start_seq", sa.Integer, nullable=False, server_default="0"),
    sa.Column("end_seq", sa.Integer),  # superseded: its successor continued after this seq
    sa.Column("successor", sa.String(36)),
    sa.Column("rejected", sa.Integer, nullable=False, server_default="0"),  # copy ops refused
    sa.Column("registered_at", sa.DateTime(timezone=True)),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

# Seqs of a terminal recorded lost: still missing, long after a rebuilt or recovered till
# continued after `restart_seq` (as `incarnation`). A real operation that arrives for one
# takes it back (the range is split). inbox/server_store/lost.py holds the rules.
lost = sa.Table(
    "inbox_lost",
    metadata,
    sa.Column("terminal", sa.String(32), primary_key=True),
    sa.Column("from_seq", sa.Integer, primary_key=True),
    sa.Column("to_seq", sa.Integer, nullable=False),
    sa.Column("restart_seq", sa.Integer, nullable=False),
    sa.Column("incarnation", sa.String(36), nullable=False),
    sa.Column("lost_at", sa.DateTime(timezone=True), nullable=False),
)

# Per terminal, its first open gap as server ingest last saw it once it asked for it
# (inbox/gaps.py): since when, how many times asked, when last. For `server stats`.
gaps = sa.Table(
    "inbox_gaps",
    metadata,
    sa.Column("terminal", sa.String(32), primary_key=True),
    sa.Column("from_seq", sa.Integer, nullable=False),
    sa.Column("to_seq", sa.Integer, nullable=False),
    sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("asked", sa.Integer, nullable=False),
    sa.Column("asked_at", sa.DateTime(timezone=True)),
)


# Per terminal, the latest status it reported (schemas/status.py: pending counts, stream
# positions, last pull, version), kept whole in `body`; a status older than the one held
# (by `sent_at`) changes nothing. inbox/status.py reads it for `server terminals`.
terminal_status = sa.Table(
    "server_terminal_status",
    metadata,
    sa.Column("terminal", sa.String(32), primary_key=True),
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),  # the till's clock
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),  # the server's
    sa.Column("version", sa.String(32), nullable=False, server_default=""),
    sa.Column("pending", sa.Integer, nullable=False, server_default="0"),
    sa.Column("oldest_pending", sa.DateTime(timezone=True)),
    sa.Column("body", sa.LargeBinary, nullable=False),  # msgpack TerminalStatus
)

# --- the registry (migration s0010) ---
# This store's own id, one row, generated when the store is created (or upgraded to s0010):
# the server announces it on its vhost so a process of another store refuses to start there
# (cajasync/processes/vhost_claim.py).
store_identity = sa.Table(
    "server_store",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),  # always 1
    sa.Column("store_id", sa.String(36), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

ACTIVE: Final = "active"
REVOKED: Final = "revoked"

# The terminals this server knows: where each one is (its scopes and kind come from here,
# not from what its requests say) and whether it may still send. inbox/registry.py.
terminals = sa.Table(
    "server_terminals",
    metadata,
    sa.Column("terminal", sa.String(32), primary_key=True),
    sa.Column("location", sa.String(32), nullable=False),
    sa.Column("pos", sa.String(32), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("status", sa.String(10), nullable=False),  # active | revoked
    sa.Column("broker_user", sa.String(64)),  # its own broker user; NULL: none created
    sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
    sa.Column("rotated_at", sa.DateTime(timezone=True)),
)

# --- the catalog ---
# The server's catalog (current master data), its change log, and image store.

# Current version of every record, tombstones included (a deleted key keeps its version,
# so a later re-creation gets a higher one and no terminal resurrects an old copy).
catalog_records = sa.Table(
    "catalog_records",
    metadata,
    sa.Column("topic", sa.String(32), primary_key=True),
    sa.Column("scope", sa.String(40), primary_key=True),  # all | loc.X | pos.X | term.X
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),  # stream seq of the record's last change
    sa.Column("deleted", sa.Boolean, nullable=False),
    sa.Column("body", sa.LargeBinary),  # msgpack record; NULL when deleted
    sa.Column("image", sa.String(64)),  # sha256 the record refers to, if any
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_catalog_records_stream_seq", "topic", "scope", "seq"),
)

# Head seq of every stream (topic:scope), and the seq its change log was compacted to:
# changes at or below `compacted_to` are gone (outbox/compaction.py), so a catch-up from
# there is answered with a refresh of the stream (inbox/answers.py). s0011.
stream_heads = sa.Table(
    "catalog_streams",
    metadata,
    sa.Column("stream", sa.String(80), primary_key=True),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("compacted_to", sa.Integer, nullable=False, server_default="0"),
)

# Every change, in stream order: what the server relay publishes to cajasync.down.
change_log = sa.Table(
    "catalog_changes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),  # global publish order
    sa.Column("stream", sa.String(80), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("topic", sa.String(32), nullable=False),
    sa.Column("scope", sa.String(40), nullable=False),
    sa.Column("key", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),  # msgpack schemas.feed.Change
    sa.Column("created_at", sa.Float, nullable=False),  # epoch seconds (propagation latency)
    sa.Column("published_at", sa.Float),  # epoch seconds of the broker confirm; NULL = not yet
    sa.UniqueConstraint("stream", "seq", name="uq_catalog_changes_stream_seq"),
    sa.Index("ix_catalog_changes_unpublished", "published_at", "id"),
)

# Images by content address, stored once.
catalog_images = sa.Table(
    "catalog_images",
    metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)


# --- Z close reconciliation ---
# One row per Z close received (its current version), checked against the sales held for
# its terminal and period (inbox/zreconcile.py): waiting (sales still missing, asked for),
# reconciled, or discrepancy (with the difference in words).
Z_WAITING: Final = "waiting"
Z_RECONCILED: Final = "reconciled"
Z_DISCREPANCY: Final = "discrepancy"
Z_STATES: Final = (Z_WAITING, Z_RECONCILED, Z_DISCREPANCY)

z_closes = sa.Table(
    "server_z_closes",
    metadata,
    sa.Column("terminal", sa.String(32), primary_key=True),
    sa.Column("z_number", sa.Integer, primary_key=True),
    sa.Column("op_id", sa.String(36), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
    sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
    sa.Column("first_receipt", sa.Integer, nullable=False),
    sa.Column("last_receipt", sa.Integer, nullable=False),
    sa.Column("expected_count", sa.Integer, nullable=False),
    sa.Column("expected_total", Amount(), nullable=False),
    sa.Column("found_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("found_total", Amount(), nullable=False, server_default="0"),
    sa.Column("figures", sa.Text, nullable=False, server_default="{}"),  # JSON: both sides
    sa.Column("state", sa.String(12), nullable=False),
    sa.Column("missing", sa.Text, nullable=False, server_default="[]"),  # JSON sale numbers
    sa.Column("absent", sa.Text, nullable=False, server_default="[]"),  # the till has none
    sa.Column("difference", sa.Text, nullable=False, server_default=""),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("replay_asked", sa.Integer, nullable=False, server_default="0"),
    sa.Column("replay_asked_at", sa.DateTime(timezone=True)),
    sa.Column("next_check_at", sa.DateTime(timezone=True)),  # waiting: when to look again
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_server_z_closes_state_next", "state", "next_check_at"),
    sa.Index("ix_server_z_closes_period_end", "period_end"),
)

# Operations of past months moved out of `server_operations` by `cajasync server archive`
# (inbox/archive.py, s0011): the same columns, one row per (op_id, version) archived, and
# when. Their `inbox_received` rows stay, so a late duplicate is still deduplicated; a
# newer version of an archived operation arriving later goes to `server_operations`.
operations_archive = sa.Table(
    "server_operations_archive",
    metadata,
    sa.Column("op_id", sa.String(36), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("terminal", sa.String(32), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("topic", sa.String(32), nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("amount", Amount()),
    sa.Column("voided", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("archived_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_server_operations_archive_recorded", "recorded_at"),
)

# Archiving picks operations by recording time (s0011).
sa.Index("ix_server_operations_recorded_at", operations.c.recorded_at)

# A Z's sales are looked up by terminal, topic and recording time (s0008).
sa.Index(
    "ix_server_operations_terminal_topic_recorded",
    operations.c.terminal,
    operations.c.topic,
    operations.c.recorded_at,
)
