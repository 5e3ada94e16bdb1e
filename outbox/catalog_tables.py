"""The server's catalog (current master data), its change log, and image store."""

from __future__ import annotations

import sqlalchemy as sa

from inbox.store.tables import metadata

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

# Head seq of every stream (topic:scope).
stream_heads = sa.Table(
    "catalog_streams",
    metadata,
    sa.Column("stream", sa.String(80), primary_key=True),
    sa.Column("seq", sa.Integer, nullable=False),
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
