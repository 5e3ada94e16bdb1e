"""What the POS reads: server master data from the terminal's replica, as record Structs.

    replica = Replica(engine)
    product = replica.get(Product, "7790001000011")      # Product | None
    sellers = replica.query(Seller)                      # list[Seller], by key
    counts = replica.count()                             # {"productos": 100000, ...}
    png = replica.image(product.image) if product and product.image else None

Deleted records (tombstones) are invisible here. The POS never sees messages, streams or
versions it did not ask for: the relay keeps the replica current underneath.
"""

from __future__ import annotations

from typing import TypeVar, overload

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cajasync.core.terminal_tables import images, replica
from schemas.records import KINDS_BY_TOPIC, Record
from schemas.topics import DOWN_TOPIC_SCOPES

R = TypeVar("R", bound=Record)

_decoder: msgspec.msgpack.Decoder[Record] = msgspec.msgpack.Decoder(Record)
_live = sa.not_(replica.c.deleted)


class Replica:
    """Typed reads of the replica on `engine` (each call is one short read)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self, kind: type[R], key: str) -> R | None:
        """The record of `kind` with `key`, or None (unknown, deleted or another kind)."""
        record = self.get_record(kind.topic, key)
        return record if isinstance(record, kind) else None

    def get_record(self, topic: str, key: str) -> Record | None:
        """The live record of `topic` with `key`, whatever its kind, or None."""
        with self.engine.connect() as connection:
            body = connection.execute(
                sa.select(replica.c.body).where(
                    replica.c.topic == topic, replica.c.key == key, _live
                )
            ).scalar()
        return None if body is None else _decoder.decode(body)

    @overload
    def query(self, what: type[R], *, limit: int | None = None) -> list[R]: ...

    @overload
    def query(self, what: str, *, limit: int | None = None) -> list[Record]: ...

    def query(self, what: type[R] | str, *, limit: int | None = None) -> list[R] | list[Record]:
        """Live records of a kind (`Product`) or a topic (`"productos"`), by key."""
        if isinstance(what, str):
            return self._records(what, limit)
        mixed = len(KINDS_BY_TOPIC.get(what.topic, ())) > 1  # configuracion holds several
        found = _of_kind(what, self._records(what.topic, None if mixed else limit))
        return found if limit is None else found[:limit]

    def count(self, topic: str | None = None) -> dict[str, int]:
        """Live records per topic: every down topic (0 when empty), or only `topic`."""
        query = sa.select(replica.c.topic, sa.func.count()).where(_live).group_by(replica.c.topic)
        if topic is not None:
            query = query.where(replica.c.topic == topic)
        with self.engine.connect() as connection:
            held: dict[str, int] = {row[0]: row[1] for row in connection.execute(query)}
        names = [topic] if topic is not None else [*DOWN_TOPIC_SCOPES, *sorted(held)]
        return {name: held.get(name, 0) for name in dict.fromkeys(names)}

    def image(self, sha256: str) -> bytes | None:
        """The image stored under `sha256`, or None when the terminal does not hold it."""
        with self.engine.connect() as connection:
            data: bytes | None = connection.execute(
                sa.select(images.c.data).where(images.c.sha256 == sha256)
            ).scalar()
        return data

    def _records(self, topic: str, limit: int | None) -> list[Record]:
        query = (
            sa.select(replica.c.body)
            .where(replica.c.topic == topic, _live)
            .order_by(replica.c.key)
            .limit(limit)
        )
        with self.engine.connect() as connection:
            return [_decoder.decode(body) for body in connection.execute(query).scalars()]


def _of_kind(kind: type[R], records: list[Record]) -> list[R]:
    """The records that are of `kind`."""
    return [record for record in records if isinstance(record, kind)]
