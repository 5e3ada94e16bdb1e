"""Who may take a till's seq, on the real RabbitMQ and both server stores (SQLite, PostgreSQL).

A message from nowhere (garbage, a bare `seq` header, another terminal's envelope or route,
no `user_id`) is dead-lettered with its reason and claims nothing; a second claim on a held
seq, or a second copy of an (op_id, version) with other content, is dead-lettered and never
displaces what the server holds. Counted op by op.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from click.testing import CliRunner

from cajasync.core import topology
from cajasync.core.db import VERSION_TABLES, make_engine, script_location, upgrade
from cajasync.core.identity import TerminalIdentity
from cajasync.core.server_tables import progress, received
from cajasync.core.settings import Settings
from cajasync.core.terminal_tables import outbox
from cajasync.processes.fleet import bind_queue
from cajasync.processes.terminal_init import init_terminal
from cli.main import cli
from inbox.server_store import Gap, SqlServerStore
from schemas import encode, to_json
from tests.integration.ingest_support import (
    DeadQueue,
    broker_user,
    channel_as,
    envelope,
    held_ops,
    publish,
    publish_op,
    reason_of,
    running_server,
    sale,
    take_dead,
    take_receipt_items,
    tracking_rows,
)
from tests.integration.relay_support import (
    record_sales,
    running_relay,
    states,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.rabbitmq


def test_rogue_claims_on_a_tills_seq_go_dead_and_its_real_operation_is_acked(
    engine: sa.Engine,
    settings: Settings,
    channel: Any,
    clean_broker: str,
    tmp_path: Path,
    new_terminal_id: Callable[[], str],
) -> None:
    till, other = new_terminal_id(), new_terminal_id()
    till_db = init_terminal(
        str(tmp_path / "till.db"), TerminalIdentity(till, "L1", "PV1", "retail"), settings
    )
    recorded = record_sales(till_db, 5)
    real_3 = recorded[2]
    claim = {"terminal": till, "seq": 3, "topic": "ventas"}
    own_route = topology.op_routing_key(till, "ventas")
    rogues: list[tuple[str, Callable[[], None]]] = [
        (
            "undecodable",  # garbage with a bare seq header and the real op's message id
            lambda: publish(
                channel,
                b"\xc1 garbage",
                own_route,
                message_id=f"{real_3.op_id}/{real_3.version}",
                headers=claim,
            ),
        ),
        (
            "does not match",  # the till's envelope under another terminal's routing key
            lambda: publish(
                channel,
                encode(envelope(till, 3, op_id=real_3.op_id)),
                topology.op_routing_key(other, "ventas"),
                headers=claim,
            ),
        ),
        (
            "does not match",  # another terminal's envelope under the till's routing key
            lambda: publish(channel, encode(envelope(other, 3)), own_route, headers=claim),
        ),
        (
            "no user_id",  # the till's envelope on its own route, without user_id
            lambda: publish(
                channel, encode(envelope(till, 3)), own_route, user_id=None, headers=claim
            ),
        ),
    ]
    dead = DeadQueue(channel)
    with running_server(engine, settings) as server:
        for _, send in rogues:
            send()
        wait_for(lambda: dead.count() >= len(rogues), "the rogues dead-lettered", server)
        with running_relay(till_db, settings) as relay:
            wait_for(
                lambda: not {"pending", "sent"} & set(states(till_db).values()),
                "every till row settled",
                relay,
            )
        assert server.running()
        stats = server.finish()

    assert states(till_db) == dict.fromkeys(range(1, 6), "acked")
    assert {op_id: held[:2] for op_id, held in held_ops(engine, till).items()} == {
        str(r.op_id): (1, r.seq) for r in recorded
    }
    assert [row[:3] for row in tracking_rows(engine, till)] == [
        (r.seq, str(r.op_id), 1) for r in recorded
    ]
    assert {row[3] for row in tracking_rows(engine, till)} == {"applied"}
    assert [reason_of(headers).split(":")[0] for _, headers in dead.seen] == [
        "undecodable operation",
        f"routing key 'op.{other}.ventas' does not match the operation ('op.{till}.ventas')",
        f"routing key 'op.{till}.ventas' does not match the operation ('op.{other}.ventas')",
        "no user_id",
    ]
    assert take_dead(channel) == []
    assert (stats.applied, stats.rejected, stats.dead_lettered) == (5, 4, 4)
    till_db.dispose()


def test_conflicting_claim_on_a_held_seq_goes_dead_and_the_held_op_stays(
    engine: sa.Engine, settings: Settings, channel: Any, terminal: str
) -> None:
    held = envelope(terminal, 1)
    claim = envelope(terminal, 1, sale(99))
    with running_server(engine, settings) as server:
        publish_op(channel, held)
        wait_for(lambda: bool(held_ops(engine, terminal)), "the first op applied", server)
        publish_op(channel, claim)
        publish_op(channel, held)  # a duplicate of the held one is still acked
        wait_for(lambda: server.latest.received >= 3, "the claim and the duplicate", server)
        stats = server.finish()

    assert held_ops(engine, terminal) == {str(held.op_id): (1, 1, to_json(held.op).decode())}
    [(body, headers)] = take_dead(channel)
    assert body == encode(claim)
    assert f"seq 1 of terminal {terminal} is held by another operation" in reason_of(headers)
    items = take_receipt_items(channel, terminal)
    assert [(i.op_id, i.seq, i.status) for i in items] == [
        (held.op_id, 1, "acked"),
        (claim.op_id, 1, "rejected"),
        (held.op_id, 1, "acked"),
    ]
    assert (stats.applied, stats.conflicts, stats.duplicates) == (1, 1, 1)


def test_same_op_and_version_with_other_content_goes_dead_with_both_digests(
    engine: sa.Engine, settings: Settings, channel: Any, terminal: str
) -> None:
    first = envelope(terminal, 1)
    other = msgspec.structs.replace(first, op=sale(42))
    with running_server(engine, settings) as server:
        publish_op(channel, first)
        wait_for(lambda: bool(held_ops(engine, terminal)), "the first copy applied", server)
        publish_op(channel, other)
        publish_op(channel, first)
        wait_for(lambda: server.latest.received >= 3, "both later copies", server)
        stats = server.finish()

    assert held_ops(engine, terminal) == {str(first.op_id): (1, 1, to_json(first.op).decode())}
    [(body, headers)] = take_dead(channel)
    assert body == encode(other)
    reason = reason_of(headers)
    assert hashlib.sha256(encode(first)).hexdigest() in reason
    assert hashlib.sha256(encode(other)).hexdigest() in reason
    assert "the first is kept" in reason
    items = take_receipt_items(channel, terminal)
    assert [(i.op_id, i.version, i.status) for i in items] == [(first.op_id, 1, "acked")] * 3
    assert (stats.applied, stats.conflicts, stats.duplicates) == (1, 1, 1)


def test_undecodable_message_is_answered_only_to_its_authenticated_terminal(
    engine: sa.Engine, settings: Settings, channel: Any, terminal: str, broker_url: str
) -> None:
    route = topology.op_routing_key(terminal, "ventas")
    signed, unsigned = uuid.uuid4(), uuid.uuid4()
    with broker_user(broker_url, terminal) as own_url, channel_as(own_url) as own_channel:
        publish(own_channel, b"\xc1", route, user_id=terminal, message_id=f"{signed}/2")
    publish(channel, b"\xc1", route, message_id=f"{unsigned}/1")  # as guest: anyone
    with running_server(engine, settings) as server:
        wait_for(lambda: server.latest.received >= 2, "both messages", server)
        server.finish()

    assert len(take_dead(channel)) == 2
    [item] = take_receipt_items(channel, terminal)
    assert (item.op_id, item.version, item.seq, item.status) == (signed, 2, None, "rejected")
    assert "undecodable" in item.reason
    assert tracking_rows(engine, terminal) == []


def test_an_unreadable_row_of_an_authenticated_till_is_rejected_and_holds_its_seq(
    engine: sa.Engine,
    settings: Settings,
    channel: Any,
    clean_broker: str,
    broker_url: str,
    tmp_path: Path,
    new_terminal_id: Callable[[], str],
) -> None:
    till = new_terminal_id()
    with broker_user(broker_url, till) as own_url:
        own = settings.with_overrides(broker_url=own_url)  # the till's own broker user
        db = str(tmp_path / "till.db")
        identity = TerminalIdentity(till, "L1", "PV1", "retail")
        till_db = init_terminal(db, identity, own)
        bind_queue(settings, identity)  # as `server terminal add` does: a till's own user cannot
        recorded = record_sales(till_db, 5)
        with till_db.begin() as connection:  # row 3 is garbage on the wire (a bug, a bad disk)
            connection.execute(outbox.update().where(outbox.c.seq == 3).values(body=b"\xc1 bad"))
        with running_server(engine, settings) as server:
            with running_relay(till_db, own) as relay:
                wait_for(
                    lambda: not {"pending", "sent"} & set(states(till_db).values()),
                    "every till row settled",
                    relay,
                )
                wait_for(
                    lambda: SqlServerStore(engine).stats()[0].contiguous_seq == 5,
                    "contiguity past the unreadable row",
                    server,
                )
            stats = server.finish()

    assert states(till_db) == {1: "acked", 2: "acked", 3: "rejected", 4: "acked", 5: "acked"}
    listed = CliRunner().invoke(cli, ["pending", "list", "--db", db, "--json"])
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.output)
    assert (row["seq"], row["op_id"], row["state"]) == (3, str(recorded[2].op_id), "rejected")
    assert row["last_error"].startswith("undecodable operation")
    assert tracking_rows(engine, till) == [
        (r.seq, str(r.op_id), 1, "rejected" if r.seq == 3 else "applied") for r in recorded
    ]
    assert SqlServerStore(engine).gaps() == []
    assert (stats.applied, stats.rejected, stats.replays_requested) == (4, 1, 0)
    [(body, headers)] = take_dead(channel)
    assert body == b"\xc1 bad"
    assert reason_of(headers).startswith("undecodable operation")
    till_db.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migration_frees_the_seqs_that_rejections_held(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    sqlite = f"sqlite:///{tmp_path / 'server.db'}"
    engine = make_engine(request.getfixturevalue("pg_url") if backend == "postgresql" else sqlite)
    config = Config()
    config.set_main_option("script_location", script_location("server"))
    config.set_main_option("version_table", VERSION_TABLES["server"])
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "s0003")
    now = sa.func.current_timestamp()
    rows = [
        (str(uuid.uuid4()), 1, "T1", 1),
        (str(uuid.uuid4()), 1, "T1", 2),
        ("bad:T1:3", 0, "T1", 3),
        (str(uuid.uuid4()), 1, "T1", 4),
        ("bad:T1:5", 0, "T1", 5),
        ("bad:T2:1", 0, "T2", 1),
    ]
    with engine.begin() as connection:
        for op_id, version, terminal, seq in rows:
            connection.execute(
                sa.text(
                    "INSERT INTO inbox_received (op_id, version, terminal, seq, topic, status,"
                    " reason, received_at) VALUES (:o, :v, :t, :s, 'ventas', 'applied', '', :n)"
                ),
                {"o": op_id, "v": version, "t": terminal, "s": seq, "n": "2026-03-02"},
            )
        for terminal, top in (("T1", 5), ("T2", 1)):
            connection.execute(
                progress.insert().values(
                    terminal=terminal, contiguous_seq=top, max_seq=top, updated_at=now
                )
            )

    upgrade(engine, "server")

    with engine.connect() as connection:
        left = connection.execute(sa.select(received.c.seq, received.c.digest)).all()
    assert sorted(left) == [(1, None), (2, None), (4, None)]
    store = SqlServerStore(engine)
    assert {(s.terminal, s.contiguous_seq, s.max_seq) for s in store.stats()} == {
        ("T1", 2, 4),
        ("T2", 0, 0),
    }
    assert store.gaps() == [Gap("T1", 3, 3)]
    engine.dispose()
