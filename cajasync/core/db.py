"""Database engines and migrations, through SQLAlchemy Core and Alembic."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, Literal

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from cajasync.core.settings import Settings
from cajasync.core.store_faults import kind_of, store_retry
from cajasync.errors import ConfigError, StoreError, StoreUnavailable

Tree = Literal["terminal", "server"]
MIGRATIONS_DIR: Final = Path(__file__).resolve().parent.parent / "migrations"

VERSION_TABLES: dict[Tree, str] = {
    "terminal": "cajasync_terminal_version",
    "server": "cajasync_server_version",
}
# The newest migration of each tree (tests/unit/test_migration_heads.py checks it against
# the scripts): a database already there opens without loading Alembic and its scripts,
# about 0.2 s of a command's start-up (the window's among them).
HEADS: dict[Tree, str] = {"terminal": "t0007", "server": "s0011"}


def database_url(target: str) -> str:
    """A SQLAlchemy URL for a URL or a plain SQLite file path."""
    if "://" not in target:
        return f"sqlite:///{Path(target).expanduser()}"
    if target.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + target.split("://", 1)[1]
    return target


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


READ_ONLY: Final = "cajasync_read_only"
"""Execution option for a connection that only reads: SQLite begins it deferred (no lock)."""

BUSY_TIMEOUT_S: Final = 30.0
DURABLE_WAL: Final = ("journal_mode=WAL", "synchronous=FULL")


def make_engine(target: str, *, immediate: bool = True, **kwargs: Any) -> Engine:
    """An engine for `target`; SQLite gets WAL, a busy timeout and BEGIN IMMEDIATE.

    BEGIN IMMEDIATE takes the write lock up front, so two writers (the POS and the relay)
    wait for each other instead of failing with "database is locked" on lock upgrade.
    A connection opened with `reading(engine)` begins deferred instead: it reads a
    snapshot without taking the write lock.
    """
    url = database_url(target)
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {"timeout": BUSY_TIMEOUT_S})
        engine = sa.create_engine(url, **kwargs)
        _tune_sqlite(engine, immediate=immediate)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    try:
        return sa.create_engine(url, **kwargs)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise StoreError(f"cannot use database {target!r}: {exc}") from exc


@contextmanager
def reading(engine: Engine) -> Iterator[sa.Connection]:
    """A connection for reads only: on SQLite its transaction takes no write lock.

    Writing through it would fail with "database is locked" whenever another connection
    writes at the same time (a deferred transaction cannot wait to upgrade its lock), so
    write through `engine.begin()` instead.
    """
    with engine.connect() as connection:
        yield connection.execution_options(**{READ_ONLY: True})


def pos_engine(target: str, **kwargs: Any) -> Engine:
    """An engine for a POS on the terminal database, set up as `configure_pos_engine` says."""
    return configure_pos_engine(sa.create_engine(database_url(target), **kwargs))


def configure_pos_engine(engine: Engine, *, busy_timeout_s: float = BUSY_TIMEOUT_S) -> Engine:
    """Set up a POS's own SQLite engine to write beside the relay without "database is locked".

    Every connection gets WAL (readers never block the writer), `synchronous=FULL` (a
    committed sale survives a power cut), a busy timeout, and transactions that begin
    IMMEDIATE: a transaction that reads and then writes (the next ticket number, then
    the sale) takes the write lock up front, so it waits for the relay's short writes
    instead of failing on lock upgrade. Connections opened with `reading(engine)` stay
    deferred. Call it on a new engine, in place of SQLAlchemy's pysqlite recipe (its own
    "begin" listener would emit a second BEGIN); other databases are left as they are.
    """
    if not is_sqlite(engine):
        return engine
    if engine.dispatch.begin:
        raise ConfigError(
            "this engine already has a 'begin' listener (SQLAlchemy's pysqlite recipe?): "
            "remove it, configure_pos_engine emits BEGIN IMMEDIATE itself"
        )
    engine.dispose()  # connections pooled before now would miss the settings below
    pragmas = (*DURABLE_WAL, f"busy_timeout={round(busy_timeout_s * 1000)}")
    _tune_sqlite(engine, immediate=True, pragmas=pragmas)
    return engine


def _tune_sqlite(
    engine: Engine, *, immediate: bool, pragmas: tuple[str, ...] = (*DURABLE_WAL, "foreign_keys=ON")
) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        for pragma in pragmas:
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        deferred = not immediate or connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")


def script_location(tree: Tree) -> str:
    """Where the Alembic tree `tree` is, as a path inside the installed cajasync package.

    Found by file path, never by a module name, so a POS with a `migrations` package of its
    own on sys.path does not change which migrations cajasync runs.
    """
    return str(MIGRATIONS_DIR / tree)


def upgrade(engine: Engine, tree: Tree) -> None:
    """Bring the terminal or server schema of `engine` to the latest migration."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", script_location(tree))
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
    """An engine on an existing, initialised database; StoreError saying what to run if not,
    StoreUnavailable when the database does not answer (refused, lost, locked).

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
        if revision is None:
            raise StoreError(
                f"{target} is not a cajasync {tree} database; initialise it with `{hint}`{note}"
            )
        if revision != HEADS[tree]:
            upgrade(engine, tree)  # a newer cajasync brings its tables up to date
    except sa.exc.DBAPIError as exc:
        engine.dispose()
        unavailable = kind_of(exc) is StoreUnavailable
        error = StoreUnavailable if unavailable else StoreError
        raise error(f"cannot open {tree} database {target}: {exc.orig}") from exc
    except BaseException:
        engine.dispose()
        raise
    return engine


def open_waiting(
    target: str, tree: Tree, settings: Settings, *, stop: threading.Event | None = None
) -> Engine:
    """`open_database`, waiting for a database that does not answer as the running loops do
    (`store_retry`: the same backoff and log line, up to `settings.store_give_up_s`, or until
    `stop` is set). One that answers but is not initialised fails at once."""

    def sleep(seconds: float) -> None:  # wakes up as soon as `stop` is set
        if stop is None:
            time.sleep(seconds)
        else:
            stop.wait(seconds)

    retry = store_retry(settings, what=f"opening the {tree} database", stop=stop, sleep=sleep)
    return retry(open_database, target, tree)


@contextmanager
def opened(
    target: str,
    tree: Tree,
    *,
    waiting: Settings | None = None,
    stop: threading.Event | None = None,
) -> Iterator[Engine]:
    """`open_database` for the length of a command; its connections are closed after.
    With `waiting` settings, a database that does not answer yet is waited for
    (`open_waiting`), until `stop` is set."""
    if waiting is None:
        engine = open_database(target, tree)
    else:
        engine = open_waiting(target, tree, waiting, stop=stop)
    try:
        yield engine
    finally:
        engine.dispose()


def head_revision(tree: Tree) -> str:
    """The latest migration of `tree` shipped with this cajasync."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", script_location(tree))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head
