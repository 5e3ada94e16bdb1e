"""The till's views on a real SQLite file: `ventas` (one row per operation, one per weekly
file, purged ones too), `pending list` with business columns and `pending show`."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import Engine

from cajasync.core.periods import Period
from cajasync.core.terminal_tables import outbox
from cajasync.errors import BrokerUnavailable, ConfigError
from cli.main import cli
from outbox.pending import pending_page, show_operation
from outbox.record import record
from outbox.views import (
    FileView,
    Filters,
    OpView,
    ServerHeld,
    count_operations,
    list_operations,
)
from tests.integration.views_support import (
    DAY_2,
    FILE_NAME,
    FILE_SIZE,
    SALES,
    Till,
    open_till,
    purge,
    sale,
    set_state,
    stock_till,
)

UTC = dt.UTC


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "caja.db")


@pytest.fixture
def till(db: str) -> Iterator[Till]:
    engine = open_till(Path(db), "CAJA-01")
    yield stock_till(engine)
    engine.dispose()


def ops(engine: Engine, topic: str = "ventas", **filters: object) -> list[OpView]:
    rows = list_operations(engine, topic, Filters(**filters)).rows  # type: ignore[arg-type]
    return [row for row in rows if isinstance(row, OpView)]


def test_each_sale_is_listed_once_at_its_latest_version_newest_first(till: Till) -> None:
    listing = list_operations(till.engine, "sales")
    rows = [row for row in listing.rows if isinstance(row, OpView)]
    assert listing.total == SALES
    # newest first by the seq of the latest version: the void of sale 3 came last
    assert [row.details["number"] for row in rows] == [3, *range(SALES, 3, -1), 2, 1]
    [voided] = [row for row in rows if row.details["number"] == 3]
    assert (voided.version, voided.details["voided"], voided.state) == (2, True, "pending")
    assert rows[1].details["total"] == Decimal("145.20")  # sale 12: 12 x 10 + 21 %
    assert rows[1].details["customer"] == "C2"


def test_a_page_is_the_newest_and_the_total_still_counts_every_match(till: Till) -> None:
    listing = list_operations(till.engine, "ventas", Filters(limit=5))
    assert listing.total == SALES
    assert [row.seq for row in listing.rows] == sorted((r.seq for r in listing.rows), reverse=True)
    assert len(listing.rows) == 5


def test_customer_number_and_period_narrow_the_sales(till: Till) -> None:
    assert {r.details["number"] for r in ops(till.engine, customer="C1")} == {1, 3, 5, 7, 9, 11}
    assert list_operations(till.engine, "ventas", Filters(customer="C1", limit=2)).total == 6
    assert [r.details["number"] for r in ops(till.engine, number=7)] == [7]
    day_2 = Period.parse("2026-03-03", "2026-03-03", UTC)
    assert [r.details["number"] for r in ops(till.engine, period=day_2)] == [12, 11, 10, 9]
    both = ops(till.engine, period=day_2, customer="C2")
    assert [r.details["number"] for r in both] == [12, 10]


def test_the_state_filter_takes_the_state_of_the_latest_version(till: Till) -> None:
    set_state(till.engine, [till.sales[n] for n in (1, 2)], "acked")
    assert [r.details["number"] for r in ops(till.engine, state="acked")] == [2, 1]
    assert list_operations(till.engine, "ventas", Filters(state="pending", limit=1)).total == 10


def test_payments_and_z_closes_show_their_own_columns(till: Till) -> None:
    payments = ops(till.engine, "payments")
    assert {(p.details["payee"], p.details["amount"]) for p in payments} == {
        ("SUP-1", Decimal("25.50")),
        ("EMP-7", Decimal("25.50")),
    }
    [close] = ops(till.engine, "cierres-z", number=41)
    assert (close.details["sale_count"], close.details["total"]) == (8, Decimal("100.00"))


def test_a_weekly_file_is_one_row_summarising_its_chunks(till: Till) -> None:
    listing = list_operations(till.engine, "archivos-semanales")
    [file] = listing.rows
    assert isinstance(file, FileView)
    assert (file.file_name, file.size, file.chunks_held, file.chunk_count) == (
        FILE_NAME,
        FILE_SIZE,
        3,
        3,
    )
    assert (listing.total, file.state, set(file.op_ids)) == (
        1,
        "pending",
        set(map(str, till.chunks)),
    )
    set_state(till.engine, till.chunks, "acked")
    assert count_operations(till.engine, "weekly-files") == 1  # the demo's "recorded" column
    set_state(till.engine, till.chunks[1:2], "rejected", "chunk 1 is not what the file announced")
    [file] = list_operations(till.engine, "weekly-files").rows
    assert file.state == "rejected"
    assert list_operations(till.engine, "weekly-files", Filters(state="acked")).total == 0


def test_purged_operations_are_still_listed_as_purged_without_their_columns(till: Till) -> None:
    purge(till.engine, [till.sales[1], till.sales[2], till.sales[3], *till.chunks])
    listing = list_operations(till.engine, "ventas")
    assert listing.total == SALES
    gone = [r for r in listing.rows if isinstance(r, OpView) and r.state == "purged"]
    assert sorted((r.op_id, r.version) for r in gone) == sorted(
        [(str(till.sales[1]), 1), (str(till.sales[2]), 1), (str(till.sales[3]), 2)]
    )
    assert all(r.details == {} for r in gone)
    assert list_operations(till.engine, "ventas", Filters(state="purged")).total == 3
    [file] = list_operations(till.engine, "weekly-files").rows
    assert isinstance(file, FileView)
    assert (file.state, file.chunks_held, file.file_name) == ("purged", 3, None)
    [(version, state, operation, purged_at)] = [
        (v.version, v.state, v.operation, v.purged_at)
        for v in show_operation(till.engine, till.sales[1]).versions
    ]
    assert (version, state, operation, purged_at) == (1, "purged", None, DAY_2)


def test_the_server_columns_say_what_it_holds_or_that_it_was_not_asked(till: Till) -> None:
    when = DAY_2.replace(hour=20)
    asked: list[list[str]] = []

    def server(op_ids: list[str]) -> dict[str, ServerHeld]:
        asked.append(op_ids)
        held = {str(till.sales[n]) for n in (11, 12)} | {str(c) for c in till.chunks[:2]}
        return {
            i: ServerHeld(version=1, received_at=when, status="applied")
            for i in op_ids
            if i in held
        }

    listing = list_operations(till.engine, "ventas", Filters(limit=3), server=server)
    assert listing.server_asked
    assert len(asked[0]) == 3  # only the page is asked about
    # the page: the void of sale 3 (not held), sales 12 and 11 (held)
    assert [r.server.version if r.server else None for r in listing.rows] == [None, 1, 1]
    [file] = list_operations(till.engine, "weekly-files", server=server).rows
    assert isinstance(file, FileView)
    assert (file.server_chunks, file.server_received_at) == (2, when)

    def away(op_ids: list[str]) -> dict[str, ServerHeld]:
        raise BrokerUnavailable("broker at localhost:5672 refused the connection")

    offline = list_operations(till.engine, "ventas", Filters(limit=3), server=away)
    assert not offline.server_asked
    assert "refused" in offline.server_note
    assert not list_operations(till.engine, "ventas").server_asked


def test_filters_that_do_not_apply_to_a_topic_are_refused(till: Till) -> None:
    with pytest.raises(ConfigError, match="--customer applies to ventas"):
        list_operations(till.engine, "pagos", Filters(customer="C1"))
    with pytest.raises(ConfigError, match="--number"):
        list_operations(till.engine, "weekly-files", Filters(number=1))


def test_pending_rows_say_what_they_are_and_count_all_under_a_limit(till: Till) -> None:
    set_state(till.engine, [till.sales[n] for n in range(1, 11)], "acked")
    page = pending_page(till.engine, limit=2)
    assert page.total == 2 + 2 + 1 + 3  # sales 11 and 12, two payments, the Z, three chunks
    assert [(o.reference, o.amount, o.customer) for o in page.ops] == [
        ("A-11", Decimal("133.10"), "C1"),
        ("A-12", Decimal("145.20"), "C2"),
    ]
    chunks = pending_page(till.engine, topic="weekly-files").ops
    assert [(o.file_name, o.reference) for o in chunks] == [
        (FILE_NAME, f"{FILE_NAME} [{i}/3]") for i in (1, 2, 3)
    ]
    day_2 = Period.parse("2026-03-03", None, UTC)
    assert pending_page(till.engine, topic="ventas", period=day_2).total == 2


def test_pending_show_gives_every_version_and_a_chunk_by_its_size(till: Till) -> None:
    set_state(till.engine, [till.sales[3]], "rejected", "sale A-3 totals do not add up")
    history = show_operation(till.engine, till.sales[3])
    assert [(v.version, v.state) for v in history.versions] == [(1, "rejected"), (2, "rejected")]
    assert history.versions[1].last_error == "sale A-3 totals do not add up"
    assert history.versions[1].operation is not None
    assert history.versions[1].operation["voided"] is True
    chunk = show_operation(till.engine, till.chunks[0]).versions[0].operation
    assert chunk is not None
    assert chunk["data"] == "<262,144 bytes>"


# -- the commands ---------------------------------------------------------------------------


def cajasync(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )


def test_the_ventas_command_prints_a_page_titled_shown_of_total(till: Till, db: str) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["ventas", "--db", db, "--limit", "5", "--timezone", "UTC"])
    assert result.exit_code == 0, result.output
    assert "Ventas (5 shown of 12); server not asked" in result.output
    assert "A-12" in result.output
    assert "A-7" not in result.output
    local = runner.invoke(cli, ["ventas", "--db", db, "--local", "--customer", "C1", "--json"])
    data = json.loads(local.output)
    assert (data["total"], data["server_asked"]) == (6, False)
    assert {row["details"]["customer"] for row in data["rows"]} == {"C1"}
    files = runner.invoke(cli, ["ventas", "--db", db, "--topic", "archivos-semanales"])
    assert files.output.count(FILE_NAME) == 1
    assert "3/3" in files.output
    day = runner.invoke(
        cli, ["ventas", "--db", db, "--since", "2026-03-03", "--timezone", "UTC", "--json"]
    )
    assert json.loads(day.output)["total"] == 4


def test_the_ventas_command_refuses_a_bad_filter_in_one_line(till: Till, db: str) -> None:
    result = cajasync("ventas", "--db", db, "--topic", "pagos", "--customer", "C1")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: --customer applies to ventas, not pagos"
    bad_date = cajasync("ventas", "--db", db, "--since", "yesterday")
    assert bad_date.returncode == 2
    assert "--since 'yesterday' is not a date" in bad_date.stderr


def test_pending_list_titles_shown_of_total_and_keeps_every_field_in_json(
    till: Till, db: str
) -> None:
    runner = CliRunner()
    table = runner.invoke(cli, ["pending", "list", "--db", db, "--limit", "3"])
    assert table.exit_code == 0, table.output
    assert "Operaciones Pendientes (3 shown of 19)" in table.output
    assert "A-1 " in table.output
    assert "C1" in table.output
    rows = json.loads(runner.invoke(cli, ["pending", "list", "--db", db, "--json"]).output)
    assert len(rows) == 19
    assert {"op_id", "seq", "topic", "version", "state", "attempts", "last_error"} <= set(rows[0])
    assert (rows[0]["reference"], rows[0]["amount"], rows[0]["customer"]) == ("A-1", "12.10", "C1")
    assert {r["file_name"] for r in rows if r["topic"] == "archivos-semanales"} == {FILE_NAME}


def test_pending_show_prints_the_reason_and_the_operation(till: Till, db: str) -> None:
    set_state(till.engine, [till.sales[5]], "rejected", "sale A-5 totals do not add up")
    result = CliRunner().invoke(cli, ["pending", "show", "--db", db, str(till.sales[5])])
    assert result.exit_code == 0, result.output
    assert "rejected because" in result.output
    assert "sale A-5 totals do not add up" in result.output
    assert '"customer": "C1"' in result.output
    chunk = CliRunner().invoke(cli, ["pending", "show", "--db", db, str(till.chunks[0])])
    assert "<262,144 bytes>" in chunk.output
    assert len(chunk.output) < 5_000  # the data itself is never dumped


def test_pending_show_of_an_unknown_id_is_one_line_and_exit_1(till: Till, db: str) -> None:
    missing = str(uuid.uuid4())
    result = cajasync("pending", "show", "--db", db, missing)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: not in this terminal's outbox: {missing}"


def test_an_undecodable_row_is_listed_with_its_reason_not_a_crash(db: str) -> None:
    """A corrupt outbox body (a bad disk, a bug) is reported by every view, never a crash."""
    engine = open_till(Path(db), "CAJA-02")
    with engine.begin() as connection:
        for number in (1, 2, 3):
            record(connection, sale(number))
        connection.execute(outbox.update().where(outbox.c.seq == 2).values(body=b"\xc1 bad"))
    listed = CliRunner().invoke(cli, ["pending", "list", "--db", db, "--json"])
    assert listed.exit_code == 0, listed.output
    [row] = [r for r in json.loads(listed.output) if r["seq"] == 2]
    assert row["reference"] == "<undecodable>"
    assert row["details"]["undecodable"].startswith("undecodable operation")
    shown = CliRunner().invoke(cli, ["pending", "show", "--db", db, row["op_id"], "--json"])
    assert shown.exit_code == 0, shown.output
    assert "undecodable operation" in shown.output
    sales = CliRunner().invoke(cli, ["ventas", "--db", db, "--local", "--json"])
    assert sales.exit_code == 0, sales.output
    assert "undecodable operation" in sales.output
    engine.dispose()


def test_a_page_from_an_offset_continues_where_the_previous_one_ended(till: Till) -> None:
    every = [row.op_id for row in ops(till.engine)]
    pages = [
        [row.op_id for row in ops(till.engine, limit=5, offset=offset)] for offset in (0, 5, 10)
    ]
    assert [op for page in pages for op in page] == every
    # C1's sales newest first: 3 (voided last), 11, 9, 7, 5, 1
    assert [r.details["number"] for r in ops(till.engine, customer="C1", limit=2, offset=2)] == [
        9,
        7,
    ]
    assert list_operations(till.engine, "archivos-semanales", Filters(offset=1)).rows == []
    pending = pending_page(till.engine, topic="ventas", limit=4, offset=10)
    assert (pending.total, [o.details["number"] for o in pending.ops]) == (13, [11, 12, 3])
