"""A weekly fiscal file end to end: a file damaged on its way is refused as corrupt by the
server, and the good retransmission is accepted; on the real broker and both server stores."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest
import sqlalchemy as sa

from cajasync.core.identity import TerminalIdentity
from cajasync.core.settings import Settings
from cajasync.core.terminal_tables import ACKED, outbox
from cajasync.processes.terminal import run_terminal
from cajasync.processes.terminal_init import init_terminal
from inbox.server_store.base import WeeklyFile
from inbox.server_store.sql import SqlServerStore
from outbox.record import record_weekly_file
from schemas import decode_op, encode
from schemas.ops import WeeklyFileChunk
from tests.integration.down_support import Loop, Server, make_server
from tests.waiting import wait_for

pytestmark = pytest.mark.rabbitmq

CONTENT = b"LIBRO IVA VENTAS semana 48\n" * 400  # 10,800 bytes: 3 chunks of 4 KiB


@pytest.fixture
def server(server_db_url: str, settings: Settings, clean_broker: str) -> Iterator[Server]:
    server = make_server(server_db_url, settings)
    server.start()
    try:
        yield server
        server.finish()
    finally:
        assert server.loop is not None
        server.loop.stop_event.set()
        server.engine.dispose()


@pytest.fixture
def till(
    tmp_path: Path, settings: Settings, new_terminal_id: Callable[[], str]
) -> Iterator[sa.Engine]:
    identity = TerminalIdentity(new_terminal_id(), "L1", "PV1", "retail")
    engine = init_terminal(str(tmp_path / "till.db"), identity, settings)
    try:
        yield engine
    finally:
        engine.dispose()


def files(server: Server) -> list[WeeklyFile]:
    return SqlServerStore(server.engine).weekly_files()


def relay_until_acked(till: sa.Engine, server: Server, settings: Settings) -> None:
    relay = Loop("till", lambda stop: run_terminal(till, settings, stop=stop))
    assert server.loop is not None

    def all_acked() -> bool:
        with till.connect() as connection:
            states = connection.execute(sa.select(outbox.c.state)).scalars().all()
        return bool(states) and all(state == ACKED for state in states)

    wait_for(all_acked, "every chunk acked", relay, server.loop)
    relay.finish()


def damage_chunk(till: sa.Engine, index: int) -> None:
    """Flip the data of one recorded chunk, as a bad disk sector would."""
    with till.begin() as connection:
        for seq, body in connection.execute(sa.select(outbox.c.seq, outbox.c.body)):
            envelope = decode_op(body)
            assert isinstance(envelope.op, WeeklyFileChunk)
            if envelope.op.chunk_index == index:
                bad = msgspec.structs.replace(
                    envelope.op, data=bytes(b ^ 0xFF for b in envelope.op.data)
                )
                connection.execute(
                    outbox.update()
                    .where(outbox.c.seq == seq)
                    .values(body=encode(msgspec.structs.replace(envelope, op=bad)))
                )
                return
    raise AssertionError(f"no chunk {index}")


def test_a_damaged_weekly_file_is_refused_and_its_retransmission_accepted(
    till: sa.Engine, server: Server, settings: Settings
) -> None:
    with till.begin() as connection:
        first = record_weekly_file(
            connection,
            week="2026-W48",
            file_name="iva-ventas.txt",
            content=CONTENT,
            chunk_size=4096,
        )
    assert len(first) == 3
    damage_chunk(till, 1)
    relay_until_acked(till, server, settings)
    [corrupt] = files(server)
    assert (corrupt.status, corrupt.chunks_held, corrupt.chunk_count) == ("corrupt", 3, 3)
    assert "sha256" in corrupt.reason

    with till.begin() as connection:  # the technician sends the file again
        again = record_weekly_file(
            connection,
            week="2026-W48",
            file_name="iva-ventas.txt",
            content=CONTENT,
            chunk_size=4096,
        )
    assert {r.op_id for r in again}.isdisjoint({r.op_id for r in first})
    relay_until_acked(till, server, settings)
    [accepted] = files(server)
    assert (accepted.status, accepted.reason) == ("complete", "")
    assert accepted.content == CONTENT
