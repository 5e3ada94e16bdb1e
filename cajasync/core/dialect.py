"""The dialect's own INSERT (it has ON CONFLICT), and the fastest bulk form of it.

On SQLite a bulk insert is an executemany, which SQLAlchemy sends as multi-row VALUES
(insertmanyvalues, RETURNING included). On PostgreSQL the same rows go as one array per
column, `INSERT ... SELECT unnest(:a), unnest(:b) ...`: the statement text stays the same
whatever the batch size, so psycopg parses it once instead of re-parsing thousands of
placeholders per batch (measured: 2x faster at 500 rows). Long texts full of quotes (JSON)
are the exception: escaping them into a text[] literal costs more than it saves; those rows
go as one JSON document instead (`bulk_json`), `INSERT ... SELECT ... FROM
json_to_recordset(:rows)`: msgspec encodes it in C and PostgreSQL parses it in C, so a batch
of 500 sale payloads costs one parameter, and the statement text again stays the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from cajasync.errors import StoreError

Insert = postgresql.Insert | sqlite.Insert
Params = list[dict[str, Any]] | dict[str, Any]


class Dialect:
    """INSERT statements for the engine's dialect."""

    def __init__(self, engine: Engine) -> None:
        self.name = engine.dialect.name
        if self.name not in ("postgresql", "sqlite"):
            raise StoreError(f"the server store runs on PostgreSQL or SQLite, not {self.name}")

    def insert(self, table: sa.Table) -> Insert:
        """`insert(table)` with `on_conflict_do_*`."""
        if self.name == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    def bulk_insert(self, table: sa.Table, rows: Sequence[dict[str, Any]]) -> tuple[Insert, Params]:
        """An INSERT of `rows` (all with the same keys) and the parameters to execute it with."""
        if self.name != "postgresql":
            return sqlite.insert(table), list(rows)
        names = list(rows[0])
        arrays = sa.select(
            *(
                sa.func.unnest(sa.bindparam(name, type_=postgresql.ARRAY(table.c[name].type)))
                for name in names
            )
        )
        statement = postgresql.insert(table).from_select(names, arrays)
        return statement, {name: [row[name] for row in rows] for name in names}

    def bulk_json(
        self, table: sa.Table, rows: Sequence[dict[str, Any]], *, json_texts: Sequence[str] = ()
    ) -> tuple[Insert, Params]:
        """As `bulk_insert`, with the rows as one JSON parameter on PostgreSQL (for rows
        carrying long texts full of quotes). Values must be what msgspec encodes as the
        column's text form: str, int, bool, None, Decimal, aware datetime. The columns named
        in `json_texts` hold JSON texts: they go into the document as they are, unescaped
        (PostgreSQL's json keeps a value's text), and are stored unchanged."""
        if self.name != "postgresql":
            return sqlite.insert(table), list(rows)
        names = list(rows[0])
        if json_texts:
            rows = [
                {**row, **{name: msgspec.Raw(row[name].encode()) for name in json_texts}}
                for row in rows
            ]
        document = sa.cast(sa.bindparam("rows", type_=sa.Text), postgresql.JSON)
        source = (
            sa.func.json_to_recordset(document)
            .table_valued(*(sa.column(name, table.c[name].type) for name in names))
            .render_derived(name="r", with_types=True)
        )
        statement = postgresql.insert(table).from_select(names, sa.select(*source.c))
        return statement, {"rows": _json.encode(list(rows)).decode()}


_json = msgspec.json.Encoder(decimal_format="string")
