"""Dead letters: listed without being lost, replayed to the queue they came from and applied
once, purged only when told (`cajasync dead`); the server's queues get their dead-letter
exchange and delivery limit from a policy. Each test has its own vhost, so `cajasync.dead`
holds only its own messages."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pika
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from cajasync.broker.dead import Selection, list_dead, purge_dead, replay_dead
from cajasync.broker.management import effective_policy
from cajasync.broker.ports import QUEUE_HEADER, REASON_HEADER, ROUTING_KEY_HEADER
from cajasync.core import topology
from cajasync.core.db import make_engine
from cajasync.core.settings import Settings
from cajasync.processes.server_init import init_server
from cli.main import cli
from inbox.ingest import run_ingest, server_stats
from schemas import encode
from schemas.feed import SnapshotRequest
from tests.integration.relay_support import private_vhost, rabbitmqctl_missing
from tests.integration.test_server_ingest import IDLE_S, envelope, publish
from tests.waiting import wait_for

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def vhost_settings(broker_url: str, settings: Settings) -> Iterator[Settings]:
    """Settings on a fresh vhost, deleted afterwards."""
    with private_vhost(broker_url, "dead") as url:
        if url is None:
            rabbitmqctl_missing("dead letters")
            return
        yield settings.with_overrides(broker_url=url)


@pytest.fixture
def server(vhost_settings: Settings, server_db_url: str) -> Iterator[sa.Engine]:
    """A server store, initialised with its topology and policies on the test's vhost."""
    init_server(server_db_url, vhost_settings)
    engine = make_engine(server_db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def channel_on(vhost_settings: Settings) -> Iterator[Any]:
    connection = pika.BlockingConnection(pika.URLParameters(vhost_settings.broker_url))
    channel = connection.channel()
    channel.confirm_delivery()
    yield channel
    if connection.is_open:
        connection.close()


def _depth(channel: Any, queue: str) -> int:
    return int(channel.queue_declare(queue, passive=True).method.message_count)


def _dead_by_hand(channel: Any, terminal: str, seq: int, op_id: uuid.UUID, reason: str) -> None:
    """An operation on the DLX as server ingest puts it there."""
    env = envelope(terminal, seq, op_id=op_id)
    key = topology.op_routing_key(terminal, "ventas")
    channel.basic_publish(
        topology.DEAD_EXCHANGE,
        key,
        encode(env),
        pika.BasicProperties(
            delivery_mode=2,
            content_type="application/msgpack",
            message_id=f"{op_id}/1",
            user_id="guest",
            headers={
                "seq": seq,
                REASON_HEADER: reason,
                ROUTING_KEY_HEADER: key,
                QUEUE_HEADER: topology.OPS_QUEUE,
            },
        ),
    )


def test_a_float_amount_is_dead_lettered_naming_its_field_and_dead_list_shows_it(
    server: sa.Engine, vhost_settings: Settings, channel_on: Any, tmp_path: Path
) -> None:
    env = envelope("CAJA-F1", 1)
    raw = msgspec.to_builtins(env)
    raw["op"]["lines"][0]["unit_price"] = 1.1
    publish(channel_on, env, body=msgspec.msgpack.encode(raw))
    run_ingest(server, vhost_settings, until_idle=IDLE_S)

    for _ in range(2):  # listing gives every dead letter back
        letters = list_dead(vhost_settings)
        assert [(x.id, x.queue, x.terminal) for x in letters] == [
            (f"{env.op_id}/1", topology.OPS_QUEUE, "CAJA-F1")
        ]
    assert "op.lines[0].unit_price: 1.1 is a float; amounts travel as decimal strings" in (
        letters[0].reason
    )
    assert letters[0].dead_at is not None

    runner = CliRunner(env={"CAJASYNC_BROKER_URL": vhost_settings.broker_url})
    listed = runner.invoke(cli, ["dead", "list", "--reason", "IS A FLOAT", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [x["terminal"] for x in json.loads(listed.output)] == ["CAJA-F1"]
    table = runner.invoke(cli, ["dead", "list", "--terminal", "CAJA-F1"])
    assert f"{env.op_id}/1" in table.output
    assert _depth(channel_on, topology.DEAD_QUEUE) == 1


def test_dead_letters_replayed_are_applied_once(
    server: sa.Engine, vhost_settings: Settings, channel_on: Any
) -> None:
    op_id = uuid.uuid4()
    for _ in range(2):  # the same operation dead-lettered twice
        _dead_by_hand(channel_on, "CAJA-R1", 1, op_id, "server store unreachable (test)")
    _dead_by_hand(channel_on, "CAJA-R2", 1, uuid.uuid4(), "something else")
    assert len(list_dead(vhost_settings, Selection(terminal="CAJA-R1"))) == 2

    runner = CliRunner(env={"CAJASYNC_BROKER_URL": vhost_settings.broker_url})
    replayed = runner.invoke(cli, ["dead", "replay", f"{op_id}/1", "--json"])
    assert replayed.exit_code == 0, replayed.output
    assert [x["terminal"] for x in json.loads(replayed.output)["replayed"]] == ["CAJA-R1"] * 2
    assert _depth(channel_on, topology.OPS_QUEUE) == 2
    run_ingest(server, vhost_settings, until_idle=IDLE_S)

    held = {t["terminal"]: t for t in server_stats(server)["terminals"]}
    assert held["CAJA-R1"]["topics"] == {"ventas": 1}
    assert held["CAJA-R1"]["contiguous_seq"] == 1
    assert [x.terminal for x in list_dead(vhost_settings)] == ["CAJA-R2"]

    # replayed again (dead-lettered once more by hand): still applied once
    _dead_by_hand(channel_on, "CAJA-R1", 1, op_id, "again")
    assert [x.id for x in replay_dead(vhost_settings, Selection(reason="AGAIN"))] == [f"{op_id}/1"]
    run_ingest(server, vhost_settings, until_idle=IDLE_S)
    held = {t["terminal"]: t for t in server_stats(server)["terminals"]}
    assert held["CAJA-R1"]["topics"] == {"ventas": 1}


def test_purge_deletes_only_the_selected_and_only_with_yes(
    vhost_settings: Settings, channel_on: Any, tmp_path: Path
) -> None:
    init_server(str(tmp_path / "server.db"), vhost_settings)
    _dead_by_hand(channel_on, "CAJA-P1", 1, uuid.uuid4(), "keep me")
    channel_on.basic_publish(  # no message id: named by a hash that listing does not change
        topology.DEAD_EXCHANGE, "op.CAJA-P2.ventas", b"\xc1junk", pika.BasicProperties()
    )
    first = {x.terminal: x.id for x in list_dead(vhost_settings)}
    assert first == {x.terminal: x.id for x in list_dead(vhost_settings)}

    runner = CliRunner(env={"CAJASYNC_BROKER_URL": vhost_settings.broker_url})
    dry = runner.invoke(cli, ["dead", "purge", first["CAJA-P2"]])
    assert dry.exit_code == 0, dry.output
    assert "Would delete 1" in dry.output
    assert _depth(channel_on, topology.DEAD_QUEUE) == 2
    assert runner.invoke(cli, ["dead", "purge"]).exit_code == 2  # nothing selected

    gone = runner.invoke(cli, ["dead", "purge", first["CAJA-P2"], "--yes", "--json"])
    assert gone.exit_code == 0, gone.output
    assert [x["terminal"] for x in json.loads(gone.output)["deleted"]] == ["CAJA-P2"]
    assert [x.terminal for x in list_dead(vhost_settings)] == ["CAJA-P1"]
    shown = runner.invoke(cli, ["dead", "show", first["CAJA-P1"], "--json"])
    assert json.loads(shown.output)["body"]["terminal"] == "CAJA-P1"
    assert [x.terminal for x in purge_dead(vhost_settings, Selection(reason="keep"))] == ["CAJA-P1"]
    assert _depth(channel_on, topology.DEAD_QUEUE) == 0


def test_a_request_nacked_past_the_delivery_limit_lands_in_dead_with_its_reason(
    vhost_settings: Settings, channel_on: Any, tmp_path: Path
) -> None:
    init_server(str(tmp_path / "server.db"), vhost_settings)  # declares, sets the policy
    wait_for(
        lambda: (
            effective_policy(vhost_settings, topology.REQUESTS_QUEUE).get("delivery-limit")
            == topology.DELIVERY_LIMIT
        ),
        "the policy on cajasync.requests",
    )
    request = SnapshotRequest(
        terminal="CAJA-Q1",
        location="L1",
        pos="PV1",
        terminal_kind="retail",
        request_id="r1",
        topics=["productos"],
    )
    channel_on.basic_publish(
        topology.UP_EXCHANGE,
        topology.request_routing_key("CAJA-Q1", "snapshot"),
        encode(request),
        pika.BasicProperties(delivery_mode=2, message_id="req-1", user_id="guest"),
    )
    for _ in range(topology.DELIVERY_LIMIT * 3):  # a consumer that keeps failing on it
        method, _props, _body = channel_on.basic_get(topology.REQUESTS_QUEUE)
        if method is None:
            break
        channel_on.basic_nack(method.delivery_tag, requeue=True)
    wait_for(lambda: _depth(channel_on, topology.DEAD_QUEUE) == 1, "the request's dead letter")

    [letter] = list_dead(vhost_settings, decoded=True)
    assert (letter.id, letter.queue, letter.terminal) == (
        "req-1",
        topology.REQUESTS_QUEUE,
        "CAJA-Q1",
    )
    assert letter.reason == "delivery limit reached"
    assert letter.body is not None
    assert letter.body["kind"] == "snapshot"
    replayed = replay_dead(vhost_settings, Selection(queue=topology.REQUESTS_QUEUE))
    assert [x.id for x in replayed] == ["req-1"]
    assert _depth(channel_on, topology.REQUESTS_QUEUE) == 1
