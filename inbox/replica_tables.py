"""The terminal's replica of server master data, in the POS database (hence the prefix)."""

from __future__ import annotations

import sqlalchemy as sa

from outbox.tables import metadata

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
)

# Last contiguous seq applied per stream (topic:scope).
streams = sa.Table(
    "cajasync_streams",
    metadata,
    sa.Column("stream", sa.String(80), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
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
)
