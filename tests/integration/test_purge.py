"""`cajasync tools purge-synced` on a real SQLite till with the seeded configuration:
who may purge, what goes (acknowledged operations only), what is logged, and that the
till goes on as before afterwards (seqs, versions, receipts, replays, recover)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy.engine import Engine

from cajasync.core.db import open_database
from cajasync.core.identity import TerminalIdentity, load_position
from cajasync.core.periods import Period
from cajasync.core.settings import Settings
from cajasync.core.terminal_tables import ACKED, PENDING, REJECTED, SENT, outbox, purged, purges
from cajasync.errors import NotAuthorised
from cajasync.processes.recover import unacknowledged
from cajasync.processes.terminal_init import init_terminal
from cajasync.samples.seed import Sample
from cli.main import cli
from inbox.receipts import apply_receipt, apply_replay
from inbox.replica_store import SqlReplicaStore
from inbox.users import authorise_user
from outbox import claims
from outbox.purge import plan_purge, purge, purge_log, purged_counts, purged_keys
from outbox.record import Recorded, record
from schemas.envelope import Receipt, ReceiptItem, ReplayRequest
from schemas.feed import Change
from tests.integration.relay_support import cash_payment, sale

TERMINAL = "T1"
DAY1 = dt.datetime(2026, 11, 2, 10, 0, tzinfo=dt.UTC)
DAY2 = dt.datetime(2026, 11, 3, 10, 0, tzinfo=dt.UTC)


@pytest.fixture
def database(tmp_path: Path) -> str:
    return str(tmp_path / "caja.db")


@pytest.fixture
def engine(database: str) -> Iterator[Engine]:
    """A till set up with `terminal init`, its configuration pulled (the seeded users:
    master, admin, supervisor, cajero1..3, each with their key as password)."""
    identity = TerminalIdentity(TERMINAL, "L1", "PV1", "retail")
    engine = init_terminal(database, identity, Settings(), declare=False)
    pull_config(engine)
    yield engine
    engine.dispose()


def pull_config(engine: Engine) -> None:
    """The seeded configuration in the replica, as a pull of `configuracion` leaves it."""
    config = Sample(0, 0, 0, False, ["L1"], ["PV1"]).config
    SqlReplicaStore(engine).apply(
        [
            Change(
                stream="configuracion:all",
                seq=index,
                topic="configuracion",
                key=item.key,
                version=1,
                record=item,
            )
            for index, item in enumerate(config, 1)
        ],
        now=0.0,
    )


class Till:
    """The till's outbox in every state: what a purge must take and what it must leave."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # Day 1: 4 sales and a payment acknowledged, a sale rejected, a sale sent, a sale
        # pending; a sale acked whose void (version 2) is still pending.
        self.acked = [self.record(sale(n), DAY1) for n in (1, 2, 3, 4)]
        self.acked.append(self.record(cash_payment(), DAY1))
        self.rejected = self.record(sale(5), DAY1)
        self.sent = self.record(sale(6), DAY1)
        self.pending = self.record(sale(7), DAY1)
        self.voided = self.record(sale(8), DAY1)
        self.void = self.record(sale(8), DAY1, op_id=self.voided.op_id)
        # Day 2: two more acknowledged sales.
        self.acked_later = [self.record(sale(n), DAY2) for n in (9, 10)]
        self.receipt(ACKED, *self.acked, self.voided, *self.acked_later)
        self.receipt(REJECTED, self.rejected)
        with engine.begin() as connection:
            claims.mark_sent(connection, [self.sent.seq], now=1.0)

    def record(
        self, operation: Any, when: dt.datetime, *, op_id: uuid.UUID | None = None
    ) -> Recorded:
        with self.engine.begin() as connection:
            return record(connection, operation, op_id=op_id, now=when)

    def receipt(self, status: Any, *rows: Recorded) -> tuple[int, int]:
        items = [
            ReceiptItem(op_id=r.op_id, version=r.version, seq=r.seq, status=status) for r in rows
        ]
        with self.engine.begin() as connection:
            return apply_receipt(connection, Receipt(terminal=TERMINAL, items=items))

    def kept(self) -> list[Recorded]:
        return [self.rejected, self.sent, self.pending, self.voided, self.void]


@pytest.fixture
def till(engine: Engine) -> Till:
    return Till(engine)


def outbox_rows(engine: Engine) -> dict[int, tuple[str, int, str]]:
    """seq -> (op_id, version, state)."""
    with engine.connect() as connection:
        query = sa.select(outbox.c.seq, outbox.c.op_id, outbox.c.version, outbox.c.state)
        return {seq: (op_id, v, state) for seq, op_id, v, state in connection.execute(query)}


def table_count(engine: Engine, table: sa.Table) -> int:
    with engine.connect() as connection:
        return int(connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def cajasync(
    *args: str, password: str | None, broker: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The command as a script runs it: its password from CAJASYNC_PASSWORD, if any."""
    env = {k: v for k, v in os.environ.items() if k != "CAJASYNC_PASSWORD"}
    if broker is not None:
        env["CAJASYNC_BROKER_URL"] = broker
    if password is not None:
        env["CAJASYNC_PASSWORD"] = password
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


# -- who may purge -------------------------------------------------------------------------


def test_purge_refuses_a_cashier_in_one_line_and_deletes_and_logs_nothing(
    till: Till, database: str
) -> None:
    before = outbox_rows(till.engine)

    result = cajasync(
        "tools", "purge-synced", "--db", database, "--user", "cajero1", "--yes", password="cajero1"
    )

    assert result.returncode == 1
    assert result.stderr == (
        "error: user cajero1 (CASHIER) may not tools.delete-synced: it takes the role MASTER "
        "or ADMIN, or the tools.delete-synced permission\n"
    )
    assert "ventas" not in result.stdout  # nothing shown before the role was checked
    assert outbox_rows(till.engine) == before
    assert table_count(till.engine, purges) == 0


@pytest.mark.parametrize(
    ("user", "password", "line"),
    [
        ("admin", "wrong", "error: wrong password for user admin"),
        ("nadie", "nadie", "error: unknown user 'nadie': not in this till's configuration"),
    ],
)
def test_purge_refuses_a_wrong_password_or_an_unknown_user_in_one_line(
    till: Till, database: str, user: str, password: str, line: str
) -> None:
    before = outbox_rows(till.engine)

    result = cajasync(
        "tools", "purge-synced", "--db", database, "--user", user, "--yes", password=password
    )

    assert (result.returncode, result.stderr, result.stdout) == (1, line + "\n", "")
    assert outbox_rows(till.engine) == before
    assert table_count(till.engine, purges) == 0


def test_a_refusal_is_logged_but_never_written_to_the_database(
    till: Till, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, "inbox.users"), pytest.raises(NotAuthorised):
        authorise_user(till.engine, "supervisor", "supervisor")

    assert "refused tools.delete-synced to user 'supervisor'" in caplog.text
    assert table_count(till.engine, purges) == 0


def test_the_password_is_asked_for_with_the_input_hidden_when_no_variable_gives_it(
    till: Till, database: str
) -> None:
    runner = CliRunner(env={"CAJASYNC_PASSWORD": None})

    result = runner.invoke(
        cli, ["tools", "purge-synced", "--db", database, "--user", "admin"], input="admin\n"
    )

    assert result.exit_code == 0, result.output
    assert "password for admin:" in result.output
    assert "admin" not in result.output.replace("password for admin", "")  # not echoed
    assert "nothing deleted; run again with --yes" in result.output


# -- what goes -----------------------------------------------------------------------------


def test_without_yes_the_plan_is_shown_and_nothing_is_deleted(till: Till, database: str) -> None:
    before = outbox_rows(till.engine)

    result = cajasync(
        "tools", "purge-synced", "--db", database, "--user", "admin", "--json", password="admin"
    )

    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["rows"] == 7
    assert {t["topic"]: t["rows"] for t in shown["plan"]["topics"]} == {"pagos": 1, "ventas": 6}
    assert shown["deleted"] is None
    assert outbox_rows(till.engine) == before
    assert table_count(till.engine, purges) == 0


def test_an_admin_with_yes_purges_exactly_the_acknowledged_operations(
    till: Till, database: str
) -> None:
    result = cajasync(
        "tools", "purge-synced", "--db", database, "--user", "admin", "--yes", password="admin"
    )

    assert result.returncode == 0, result.stderr
    assert "purge 1: 7 acknowledged operations deleted by admin" in result.stdout
    left = outbox_rows(till.engine)
    assert sorted(left) == sorted(r.seq for r in till.kept())
    assert {seq: state for seq, (_o, _v, state) in left.items()} == {
        till.rejected.seq: REJECTED,
        till.sent.seq: SENT,
        till.pending.seq: PENDING,
        till.voided.seq: ACKED,  # acked, but its void is pending: the sale stays whole
        till.void.seq: PENDING,
    }
    assert table_count(till.engine, purged) == 7


def test_the_purge_log_says_who_when_and_how_many_per_topic_and_period(
    till: Till, database: str
) -> None:
    plan = plan_purge(till.engine)
    at = dt.datetime(2026, 11, 10, 9, 0, tzinfo=dt.UTC)
    done = purge(till.engine, plan, "admin", "ADMIN", now=at)

    [logged] = purge_log(till.engine)
    assert logged == done
    assert (logged.user, logged.role, logged.purged_at, logged.before) == (
        "admin",
        "ADMIN",
        at,
        None,
    )
    assert [(s.topic, s.rows, s.first, s.last) for s in logged.topics] == [
        ("pagos", 1, DAY1, DAY1),
        ("ventas", 6, DAY1, DAY2),
    ]
    listed = cajasync("tools", "purges", "--db", database, "--json", password=None)
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert (row["id"], row["user"], row["role"]) == (done.id, "admin", "ADMIN")
    assert {t["topic"]: t["rows"] for t in row["topics"]} == {"pagos": 1, "ventas": 6}


def test_before_a_date_purges_only_what_was_recorded_before_it(till: Till) -> None:
    plan = plan_purge(till.engine, Period.before("2026-11-03", dt.UTC))
    done = purge(till.engine, plan, "master", "MASTER")

    assert done.before == dt.datetime(2026, 11, 3, tzinfo=dt.UTC)
    assert done.rows == 5
    left = outbox_rows(till.engine)
    assert all(r.seq in left for r in till.acked_later)
    assert not any(r.seq in left for r in till.acked)


def test_a_row_that_stopped_being_acknowledged_after_the_plan_is_not_purged(till: Till) -> None:
    plan = plan_purge(till.engine)
    assert plan.rows == 7
    with till.engine.begin() as connection:  # the server asked for 1..2 again meanwhile
        apply_replay(connection, ReplayRequest(terminal=TERMINAL, from_seq=1, to_seq=2))

    done = purge(till.engine, plan, "admin", "ADMIN")

    assert done.rows == 5
    assert {1, 2} <= set(outbox_rows(till.engine))


def test_compare_and_diff_can_count_and_list_what_was_purged(till: Till) -> None:
    purge(till.engine, plan_purge(till.engine), "admin", "ADMIN")

    assert purged_counts(till.engine) == {"pagos": 1, "ventas": 6}
    day2 = Period(DAY2.replace(hour=0), None)
    assert purged_counts(till.engine, "sales", day2) == {"ventas": 2}
    assert purged_keys(till.engine, "ventas", day2) == sorted(
        (str(r.op_id), 1) for r in till.acked_later
    )


# -- the till goes on ----------------------------------------------------------------------


def test_the_next_recorded_operation_continues_after_the_highest_seq_ever_used(
    till: Till,
) -> None:
    # The highest seqs are acknowledged and purged: the counter, not the outbox, says where
    # the next one goes.
    highest = max(r.seq for r in till.acked_later)
    purge(till.engine, plan_purge(till.engine), "admin", "ADMIN")
    assert max(outbox_rows(till.engine)) < highest

    nxt = till.record(sale(11), DAY2)

    assert nxt.seq == highest + 1
    with till.engine.connect() as connection:
        assert load_position(connection).last_seq == highest + 1


def test_a_new_version_of_a_purged_operation_continues_after_its_purged_versions(
    till: Till,
) -> None:
    purge(till.engine, plan_purge(till.engine), "admin", "ADMIN")
    sold = till.acked[0]

    void = till.record(sale(1), DAY2, op_id=sold.op_id)

    assert void.version == 2


def test_a_receipt_for_a_purged_row_is_ignored(till: Till) -> None:
    purge(till.engine, plan_purge(till.engine), "admin", "ADMIN")
    before = outbox_rows(till.engine)

    assert till.receipt(ACKED, *till.acked) == (0, 0)
    assert till.receipt(REJECTED, *till.acked) == (0, 0)
    assert outbox_rows(till.engine) == before


def test_a_replay_of_purged_seqs_is_logged_and_the_rest_is_replayed(
    till: Till, caplog: pytest.LogCaptureFixture
) -> None:
    purge(till.engine, plan_purge(till.engine), "admin", "ADMIN")
    request = ReplayRequest(terminal=TERMINAL, from_seq=1, to_seq=till.void.seq)

    with caplog.at_level(logging.WARNING, "inbox.receipts"), till.engine.begin() as connection:
        replayed = apply_replay(connection, request)

    assert replayed == 5  # the rows the till still holds
    assert {state for _o, _v, state in outbox_rows(till.engine).values()} == {PENDING}
    assert f"the server asks again for seq 1..{till.void.seq}; 5 of them (seq 1..5)" in (
        caplog.text
    )


def test_replaying_a_purged_operation_by_hand_says_it_was_purged(till: Till, database: str) -> None:
    purge(till.engine, plan_purge(till.engine), "admin", "ADMIN")
    op_id = str(till.acked[0].op_id)

    result = cajasync("pending", "replay", "--db", database, op_id, password=None)

    assert (result.returncode, result.stderr) == (
        1,
        f"error: not in this terminal's outbox: {op_id} ({op_id}: purged after the server "
        "acknowledged it; nothing to send)\n",
    )


def test_recover_asks_the_server_only_about_the_rows_left_after_a_purge(till: Till) -> None:
    purge(till.engine, plan_purge(till.engine), "admin", "ADMIN")

    with till.engine.connect() as connection:
        refs = unacknowledged(connection)

    assert [ref.seq for ref in refs] == sorted(r.seq for r in till.kept() if r is not till.voided)


def test_pending_list_after_a_purge_shows_the_same_operations_as_before(
    till: Till, database: str
) -> None:
    runner = CliRunner()
    before = runner.invoke(cli, ["pending", "list", "--db", database, "--json"])
    purge(till.engine, plan_purge(till.engine), "admin", "ADMIN")

    after = runner.invoke(cli, ["pending", "list", "--db", database, "--json"])

    assert after.exit_code == 0, after.output
    assert json.loads(after.output) == json.loads(before.output)
    assert len(json.loads(after.output)) == 4


# -- against the real broker and server ----------------------------------------------------


@pytest.mark.rabbitmq
def test_after_a_purge_new_sales_reach_the_server_after_the_purged_ones_with_no_gap(
    tmp_path: Path, server_db_url: str, new_terminal_id: Any, clean_broker: str
) -> None:
    terminal, db = new_terminal_id(), str(tmp_path / "caja.db")

    def run(*args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
        done = cajasync(*args, password=password, broker=clean_broker)
        assert done.returncode == 0, done.stderr
        return done

    def store_day() -> None:
        """`server run` and `terminal run`, each until idle."""
        command = [
            "server",
            "run",
            "--db",
            server_db_url,
            "--until-idle",
            "4",
            "--allow-shared-user",
        ]
        server = subprocess.Popen(
            [sys.executable, "-m", "cli.main", *command],
            env={**os.environ, "CAJASYNC_BROKER_URL": clean_broker},
        )
        run("terminal", "run", "--db", db, "--until-idle", "3")
        assert server.wait(timeout=60) == 0

    init = ["terminal", "init", "--db", db, "--id", terminal, "--location", "L1", "--pos", "PV1"]
    run(*init, "--offline")  # a new id: nothing to ask the server
    run("server", "init", "--db", server_db_url)
    run("terminal", "simulate", "--db", db, "--sales", "8")
    store_day()
    engine = open_database(db, "terminal")
    pull_config(engine)
    recorded = outbox_rows(engine)  # a few sales were voided: version 2 of the same op
    assert {state for _o, _v, state in recorded.values()} == {ACKED}
    purge_cmd = ["tools", "purge-synced", "--db", db, "--user", "admin", "--yes", "--json"]
    deleted = json.loads(run(*purge_cmd, password="admin").stdout)["deleted"]
    assert sum(t["rows"] for t in deleted["topics"]) == len(recorded)

    run("terminal", "simulate", "--db", db, "--sales", "5")
    store_day()

    assert json.loads(run("pending", "list", "--db", db, "--json").stdout) == []
    left = outbox_rows(engine)
    assert min(left) == max(recorded) + 1
    with engine.connect() as connection:
        last_seq = load_position(connection).last_seq
    stats = json.loads(run("server", "stats", "--db", server_db_url, "--json").stdout)
    mine = next(t for t in stats["terminals"] if t["terminal"] == terminal)
    assert mine["contiguous_seq"] == last_seq == max(left)
    # What compare will do: the till's sales are those it holds plus those it purged.
    held = {op_id for op_id, _v, _s in left.values()}
    assert mine["topics"]["ventas"] == len(held) + purged_counts(engine)["ventas"] == 13
    engine.dispose()
