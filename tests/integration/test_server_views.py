"""The server's views after real ingest (RabbitMQ, SQLite and PostgreSQL): `server ventas`,
weekly files as files, `server stats` counting a file once, and `held` answering a till."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from cajasync.core.periods import Period
from cajasync.core.settings import Settings
from cajasync.core.terminal_tables import outbox
from cli.main import cli
from inbox.ingest import run_ingest, server_stats
from inbox.server_views import (
    ServerFileView,
    ServerFilters,
    ServerOpView,
    held,
    list_server_operations,
)
from outbox.views import FileView, OpView, ServerHeld, list_operations
from schemas import OpEnvelope, SaleTotals, decode_op
from tests.integration.ingest_support import publish_op
from tests.integration.views_support import (
    DAY_2,
    FILE_NAME,
    FILE_SIZE,
    SALES,
    Till,
    open_till,
    sale,
    stock_till,
)

pytestmark = pytest.mark.rabbitmq


@dataclasses.dataclass
class Ingested:
    till: Till
    server: sa.Engine
    server_url: str
    terminal: str
    rejected: uuid.UUID


@pytest.fixture
def found(
    tmp_path: Path,
    engine: sa.Engine,
    server_db_url: str,
    settings: Settings,
    channel: Any,
    terminal: str,
) -> Iterator[Ingested]:
    """A stocked till whose every outbox row was published as its relay does, one sale the
    server rejects (its totals do not add up), all ingested."""
    till_engine = open_till(tmp_path / "caja.db", terminal)
    till = stock_till(till_engine)
    with till_engine.connect() as connection:
        bodies = connection.execute(sa.select(outbox.c.body).order_by(outbox.c.seq)).scalars()
        envelopes = [decode_op(body) for body in bodies]
    for envelope in envelopes:
        publish_op(channel, envelope)
    bad_sale = msgspec.structs.replace(
        sale(99), totals=SaleTotals(net=Decimal(1), tax=Decimal(0), total=Decimal(1))
    )
    rejected = uuid.uuid4()
    publish_op(
        channel,
        OpEnvelope(
            terminal=terminal,
            seq=len(envelopes) + 1,
            op_id=rejected,
            version=1,
            recorded_at=DAY_2,
            op=bad_sale,
        ),
    )
    run_ingest(engine, settings, until_idle=0.5)
    yield Ingested(till, engine, server_db_url, terminal, rejected)
    till_engine.dispose()


def sales(found: Ingested, **filters: Any) -> list[ServerOpView]:
    listing = list_server_operations(
        found.server, "ventas", ServerFilters(terminal=found.terminal, **filters)
    )
    return [row for row in listing.rows if isinstance(row, ServerOpView)]


def test_the_server_lists_each_sale_once_with_its_version_and_status(found: Ingested) -> None:
    listing = list_server_operations(found.server, "sales", ServerFilters(terminal=found.terminal))
    assert listing.total == SALES + 1
    rows = {row.op_id: row for row in listing.rows if isinstance(row, ServerOpView)}
    voided = rows[str(found.till.sales[3])]
    assert (voided.version, voided.status, voided.details["voided"]) == (2, "applied", True)
    twelve = rows[str(found.till.sales[12])]
    assert (twelve.details["total"], twelve.details["customer"]) == (Decimal("145.20"), "C2")
    bad = rows[str(found.rejected)]
    assert (bad.status, bad.details, bad.applied_version) == ("rejected", {}, None)
    assert "total" in bad.reason


def test_the_server_filters_mean_what_they_mean_on_the_till(found: Ingested) -> None:
    assert {r.details["number"] for r in sales(found, customer="C1")} == {1, 3, 5, 7, 9, 11}
    assert [r.details["number"] for r in sales(found, number=7)] == [7]
    day_2 = Period.parse("2026-03-03", "2026-03-03", dt.UTC)
    assert [r.details["number"] for r in sales(found, period=day_2)] == [12, 11, 10, 9]
    assert [r.op_id for r in sales(found, status="rejected")] == [str(found.rejected)]
    page = list_server_operations(
        found.server, "ventas", ServerFilters(terminal=found.terminal, limit=2)
    )
    assert (page.total, len(page.rows)) == (SALES + 1, 2)
    assert list_server_operations(found.server, "ventas", ServerFilters(terminal="NOPE")).total == 0


def test_a_weekly_file_is_one_row_and_server_stats_count_it_once(found: Ingested) -> None:
    listing = list_server_operations(
        found.server, "archivos-semanales", ServerFilters(terminal=found.terminal)
    )
    [file] = listing.rows
    assert isinstance(file, ServerFileView)
    assert (file.file_name, file.size, file.chunks_held, file.chunk_count, file.status) == (
        FILE_NAME,
        FILE_SIZE,
        3,
        3,
        "complete",
    )
    [mine] = [t for t in server_stats(found.server)["terminals"] if t["terminal"] == found.terminal]
    assert mine["topics"] == {"archivos-semanales": 1, "cierres-z": 1, "pagos": 2, "ventas": 12}
    assert mine["weekly_chunks"] == 3


def test_what_the_server_holds_fills_the_till_view(found: Ingested) -> None:
    def server(op_ids: list[str]) -> dict[str, ServerHeld]:
        answers = held(found.server, op_ids)
        return {op_id: ServerHeld(**msgspec.structs.asdict(a)) for op_id, a in answers.items()}

    listing = list_operations(found.till.engine, "ventas", server=server)
    assert listing.server_asked
    rows = [row for row in listing.rows if isinstance(row, OpView)]
    assert [(r.server.version if r.server else None) for r in rows] == [r.version for r in rows]
    [file] = list_operations(found.till.engine, "weekly-files", server=server).rows
    assert isinstance(file, FileView)
    assert file.server_chunks == 3


def test_the_server_commands_print_the_views(found: Ingested) -> None:
    runner = CliRunner()
    base = ["server", "ventas", "--db", found.server_url, "--terminal", found.terminal]
    table = runner.invoke(cli, [*base, "--limit", "3", "--timezone", "UTC"])
    assert table.exit_code == 0, table.output
    assert "Server: Ventas (3 shown of 13)" in table.output
    data = json.loads(runner.invoke(cli, [*base, "--customer", "C2", "--json"]).output)
    assert data["total"] == 6
    files = runner.invoke(cli, [*base, "--topic", "weekly-files"])
    assert files.output.count(FILE_NAME) == 1
    assert "complete" in files.output
    stats = runner.invoke(cli, ["server", "stats", "--db", found.server_url])
    assert stats.exit_code == 0, stats.output
    assert "weekly chunks" in stats.output
