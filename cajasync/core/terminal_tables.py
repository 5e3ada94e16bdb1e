"""The terminal database's tables: outbox and replica, in the POS's own database (prefixed)."""

from __future__ import annotations

from typing import Final

import sqlalchemy as sa

metadata = sa.MetaData()

PENDING: Final = "pending"
SENT: Final = "sent"
ACKED: Final = "acked"
REJECTED: Final = "rejected"
STATES: Final[tuple[str, ...]] = (PENDING, SENT, ACKED, REJECTED)

terminal = sa.Table(
    "cajasync_terminal",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),  # always 1: one identity per database
    sa.Column("terminal", sa.String(32), nullable=False),
    sa.Column("location", sa.String(32), nullable=False),
    sa.Column("pos", sa.String(32), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("last_seq", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # A random id of this database, new at every `terminal init` and `terminal recover`,
    # stamped on every operation (OpEnvelope.incarnation).
    sa.Column("incarnation", sa.String(36)),
)

outbox = sa.Table(
    "cajasync_outbox",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("op_id", sa.String(36), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("topic", sa.String(32), nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("state", sa.String(10), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_error", sa.Text),
    sa.Column("sent_at", sa.Float),  # epoch seconds of the broker confirm
    sa.Column("settled_at", sa.Float),  # epoch seconds of the server receipt
    sa.UniqueConstraint("op_id", "version", name="uq_cajasync_outbox_op_version"),
    sa.Index("ix_cajasync_outbox_state_seq", "state", "seq"),
)


# --- the replica ---
# The terminal's replica of server master data, in the POS database (hence the prefix).

replica = sa.Table(
    "cajasync_replica",
    metadata,
    sa.Column("topic", sa.String(32), primary_key=True),
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("deleted", sa.Boolean, nullable=False),  # tombstone: keeps the version
    sa.Column("body", sa.LargeBinary),  # msgpack record; NULL when deleted
    sa.Column("image", sa.String(64)),
    sa.Column("applied_at", sa.Float, nullable=False),  # epoch seconds
    # The scope of the stream its last applied change came by (`all`, `loc.L1`, ...): which
    # location a stock record belongs to. NULL only on a database that had no identity
    # when it was migrated (t0006).
    sa.Column("scope", sa.String(40)),
    sa.Column("seq", sa.Integer),  # that change's seq in its stream (NULL: from before t0006)
    # The last pull whose pages listed this key: what a whole snapshot did not list is
    # removed once it is applied (inbox/replica.py, sweep).
    sa.Column("listed_by", sa.String(36)),
)

# Last contiguous seq applied per stream (topic:scope).
streams = sa.Table(
    "cajasync_streams",
    metadata,
    sa.Column("stream", sa.String(80), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

broker_streams = sa.Table(
    "cajasync_broker_streams",
    metadata,
    sa.Column("stream", sa.String(120), primary_key=True),  # cajasync.s.all, cajasync.s.loc.L
    sa.Column("offset", sa.BigInteger),  # of the last event applied (None: none yet)
    sa.Column("since", sa.Float, nullable=False),  # first read (from then on while no offset)
    sa.Column("updated_at", sa.Float, nullable=False),
)

images = sa.Table(
    "cajasync_images",
    metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("stored_at", sa.Float, nullable=False),
)

# One row per pull ("Obtener datos" / "Actualizar Datos"): progress and outcome.
pulls = sa.Table(
    "cajasync_pulls",
    metadata,
    sa.Column("request_id", sa.String(36), primary_key=True),
    sa.Column("topics", sa.Text, nullable=False),  # JSON list
    sa.Column("full", sa.Boolean, nullable=False),
    sa.Column("images", sa.Boolean, nullable=False),
    sa.Column("status", sa.String(12), nullable=False),  # requested | images | done
    sa.Column("records", sa.Integer, nullable=False),
    sa.Column("bytes", sa.Integer, nullable=False),
    sa.Column("image_count", sa.Integer, nullable=False),
    sa.Column("image_bytes", sa.Integer, nullable=False),
    sa.Column("high_water", sa.Text),  # JSON {stream: seq} from SnapshotDone
    sa.Column("expected_records", sa.Integer),  # SnapshotDone.records: complete at that count
    sa.Column("expected_images", sa.Integer),  # ImagesDone.sent: complete at that count
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float),
    sa.Column("keys", sa.Text),  # JSON list: only these records were asked for (NULL: all)
    sa.Column("location", sa.String(32)),  # another location's stock was asked for
    sa.Column("whole", sa.Text),  # JSON list of streams sent whole (SnapshotDone.whole)
    sa.Column("missing_keys", sa.Text),  # JSON list: asked keys the server does not hold
    sa.Column("removed", sa.Integer),  # replica records the whole streams did not list
)

# --- clean-up ("Herramientas": borrar operaciones sincronizadas) ---

# One row per purge: who ran it, when, and what it removed (per topic and period in JSON).
purges = sa.Table(
    "cajasync_purges",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("user", sa.String(64), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("purged_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("before", sa.DateTime(timezone=True)),  # NULL: every acknowledged operation
    sa.Column(
        "counts", sa.Text, nullable=False
    ),  # JSON {topic: {"rows": n, "first": iso, "last": iso}}
)

# What a purge removed, one slim row per outbox row (no body), so compare and diff still
# count and list a purged operation as the till's, and say it was purged.
purged = sa.Table(
    "cajasync_purged",
    metadata,
    sa.Column("op_id", sa.String(36), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("topic", sa.String(32), nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("purge_id", sa.Integer, sa.ForeignKey("cajasync_purges.id"), nullable=False),
    sa.Index("ix_cajasync_purged_topic_recorded", "topic", "recorded_at"),
)
