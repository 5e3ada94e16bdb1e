"""Migration s0008 on a server store that already holds operations (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from cajasync.core.db import VERSION_TABLES, make_engine, script_location, upgrade
from cajasync.core.server_tables import operations
from inbox.zreconcile import z_report

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def old_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    """A server store at s0007 holding a Z close and a sale."""
    url = (
        f"sqlite:///{tmp_path / 'server.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    engine = make_engine(url)
    config = Config()
    config.set_main_option("script_location", script_location("server"))
    config.set_main_option("version_table", VERSION_TABLES["server"])
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "s0007")
        for seq, topic in enumerate(["ventas", "cierres-z"], start=1):
            connection.execute(
                operations.insert().values(
                    op_id=str(uuid.uuid4()),
                    version=1,
                    terminal="T1",
                    seq=seq,
                    topic=topic,
                    recorded_at=NOW,
                    amount=None,
                    voided=False,
                    payload="{}",
                    applied_at=NOW,
                )
            )
    yield engine
    engine.dispose()


def test_s0008_upgrades_a_store_with_operations_and_leaves_earlier_z_closes_unchecked(
    old_store: sa.Engine,
) -> None:
    upgrade(old_store, "server")

    with old_store.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(operations)).scalar() == 2
    indexes = {i["name"] for i in sa.inspect(old_store).get_indexes("server_operations")}
    assert "ix_server_operations_terminal_topic_recorded" in indexes
    assert z_report(old_store) == []
