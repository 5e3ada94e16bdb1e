"""Database engines and migrations, through SQLAlchemy Core and Alembic."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Engine

from cajasync.errors import StoreError

Tree = Literal["terminal", "server"]
VERSION_TABLES: dict[Tree, str] = {
    "terminal": "cajasync_terminal_version",
    "server": "cajasync_server_version",
}


def database_url(target: str) -> str:
    """A SQLAlchemy URL for a URL or a plain SQLite file path."""
    if "://" not in target:
        return f"sqlite:///{Path(target).expanduser()}"
    if target.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + target.split("://", 1)[1]
    return target


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(target: str, *, immediate: bool = True, **kwargs: Any) -> Engine:
    """An engine for `target`; SQLite gets WAL, a busy timeout and BEGIN IMMEDIATE.

    BEGIN IMMEDIATE takes the write lock up front, so two writers (the POS and the relay)
    wait for each other instead of failing with "database is locked" on lock upgrade.
    """
    url = database_url(target)
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {"timeout": 30})
        engine = sa.create_engine(url, **kwargs)
        _tune_sqlite(engine, immediate=immediate)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    try:
        return sa.create_engine(url, **kwargs)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise StoreError(f"cannot use database {target!r}: {exc}") from exc


def _tune_sqlite(engine: Engine, *, immediate: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def upgrade(engine: Engine, tree: Tree) -> None:
    """Bring the terminal or server schema of `engine` to the latest migration."""
    config = Config()
    config.set_main_option("script_location", f"migrations:{tree}")
    config.set_main_option("version_table", VERSION_TABLES[tree])
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def current_revision(engine: Engine, tree: Tree) -> str | None:
    """The applied migration of `tree`, or None when the database was never initialised."""
    table = VERSION_TABLES[tree]
    with engine.connect() as connection:
        if not sa.inspect(connection).has_table(table):
            return None
        return connection.execute(sa.text(f"SELECT version_num FROM {table}")).scalar()  # noqa: S608


INIT_HINT: dict[Tree, str] = {
    "terminal": "cajasync terminal init --db {target} --id ... --location ... --pos ...",
    "server": "cajasync server init --db {target}",
}
INIT_NOTE: dict[Tree, str] = {
    "terminal": (
        " (init asks the server where a terminal id it already knows continues; a till "
        "restored from a backup: `cajasync terminal recover --db {target} --id ...`)"
    ),
    "server": "",
}


def open_database(target: str, tree: Tree) -> Engine:
    """An engine on an existing, initialised database; StoreError saying what to run if not.

    Unlike `make_engine`, a missing SQLite file is an error here: opening it would create
    an empty database and hide a typo in the path.
    """
    url = database_url(target)
    hint = INIT_HINT[tree].format(target=target)
    note = INIT_NOTE[tree].format(target=target)
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_file():
            raise StoreError(f"no {tree} database at {path}; create it with `{hint}`{note}")
    engine = make_engine(target)
    try:
        revision = current_revision(engine, tree)
    except sa.exc.DBAPIError as exc:
        raise StoreError(f"cannot open {tree} database {target}: {exc.orig}") from exc
    if revision is None:
        raise StoreError(
            f"{target} is not a cajasync {tree} database; initialise it with `{hint}`{note}"
        )
    upgrade(engine, tree)  # a newer cajasync brings its tables up to date (no-op when current)
    return engine


@contextmanager
def opened(target: str, tree: Tree) -> Iterator[Engine]:
    """`open_database` for the length of a command; its connections are closed after."""
    engine = open_database(target, tree)
    try:
        yield engine
    finally:
        engine.dispose()


def head_revision(tree: Tree) -> str:
    """The latest migration of `tree` shipped with this cajasync."""
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", f"migrations:{tree}")
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head
