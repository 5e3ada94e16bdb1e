"""What a database error means, and the one way to wait for a database that is away.

SQLAlchemy's errors stop at the store adapters, which turn them into cajasync errors with
`store_error`, by SQLSTATE (PostgreSQL) or SQLite's error code:

* StoreUnavailable: the database is away or briefly refuses work: connection refused or
  lost (SQLSTATE class 08, or no SQLSTATE at all: the server never answered), admin or
  crash shutdown and "the database system is starting up" (57P01-57P03), too many
  connections or out of disk (class 53), serialization failure and deadlock (40001,
  40P01), a standby still read-only after a failover (25006), a pool timeout; on SQLite
  busy, locked, I/O error, full, cannot open. The same work is tried again with
  `store_retry` (or `Outage` on an ioloop), and only an outage that lasts past
  `settings.store_give_up_s` stops the loop, with its cause;
* StoreDataError: the database refused a value or a row (class 22 data exception, class 23
  integrity violation, a driver or a column type that cannot bind a value): the message is
  bad, not the database, and is rejected with the database's reason;
* StoreError for anything else (a missing table, a syntax error): the store is broken.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

import sqlalchemy as sa
import tenacity

from cajasync.core.identity import NO_TABLES
from cajasync.core.settings import Settings
from cajasync.core.terminal_tables import terminal as terminal_table
from cajasync.errors import NotInitialised, StoreDataError, StoreError, StoreUnavailable

log = logging.getLogger(__name__)

TRANSIENT_CLASSES: Final = frozenset({"08", "53"})
TRANSIENT_STATES: Final = frozenset(
    {"40001", "40P01", "57P01", "57P02", "57P03", "25006"}  # 25006: a read-only standby
)
DATA_CLASSES: Final = frozenset({"22", "23"})
SQLITE_TRANSIENT: Final = frozenset(
    {"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_FULL", "SQLITE_CANTOPEN"}
)
SQLITE_DATA: Final = frozenset({"SQLITE_CONSTRAINT", "SQLITE_TOOBIG", "SQLITE_MISMATCH"})


def kind_of(exc: BaseException) -> type[StoreError]:
    """StoreUnavailable, StoreDataError or StoreError: what a database error means."""
    if isinstance(exc, sa.exc.TimeoutError):  # no pooled connection came free in time
        return StoreUnavailable
    if isinstance(exc, OverflowError):  # the driver cannot bind a number (SQLite's int64)
        return StoreDataError
    if isinstance(exc, sa.exc.StatementError) and isinstance(exc.orig, OverflowError):
        return StoreDataError  # a column type refused to bind a value (an amount on SQLite)
    if not isinstance(exc, sa.exc.DBAPIError):
        return StoreError
    if exc.connection_invalidated:
        return StoreUnavailable
    if isinstance(exc.orig, sqlite3.Error):
        return _sqlite_kind(exc.orig)
    state = _sqlstate(exc.orig)
    if state is not None:
        if state[:2] in TRANSIENT_CLASSES or state in TRANSIENT_STATES:
            return StoreUnavailable
        return StoreDataError if state[:2] in DATA_CLASSES else StoreError
    if isinstance(exc, sa.exc.DataError | sa.exc.IntegrityError):
        return StoreDataError  # refused by the driver before the server saw it
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        return StoreUnavailable  # no SQLSTATE: the server did not answer (refused, lost)
    return StoreError


def _sqlite_kind(error: sqlite3.Error) -> type[StoreError]:
    name = getattr(error, "sqlite_errorname", "")
    primary = "_".join(name.split("_")[:2])  # SQLITE_IOERR_WRITE -> SQLITE_IOERR
    if primary in SQLITE_TRANSIENT:
        return StoreUnavailable
    if primary in SQLITE_DATA or isinstance(error, sqlite3.DataError | sqlite3.IntegrityError):
        return StoreDataError
    return StoreError


def _sqlstate(error: BaseException | None) -> str | None:
    code = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    return code if isinstance(code, str) else None


def database_says(exc: BaseException) -> str:
    """The database's own message on one line, without the statement and its parameters."""
    orig = getattr(exc, "orig", None) or exc
    return " ".join(str(orig).split()) or type(orig).__name__


def store_error(
    exc: BaseException, where: str, doing: str, *, init: str = "cajasync server init"
) -> StoreError:
    """The cajasync error for a database error met at `where` while `doing`; `init` is the
    command that sets that database up."""
    kind = kind_of(exc)
    says = database_says(exc)
    if kind is StoreDataError:
        return StoreDataError(f"{where}: {doing} refused by the database: {says}", says)
    if kind is StoreUnavailable:
        return StoreUnavailable(f"{where}: {doing} failed: {says}")
    return StoreError(f"{where}: {doing} failed ({says}); is it initialised (`{init}`)?")


@contextmanager
def translated(where: str, doing: str, *, init: str = "cajasync server init") -> Iterator[None]:
    """Inside, a database error (or a value too large for a column) becomes the cajasync
    error `store_error` gives: the one way a SQLAlchemy error turns into ours."""
    try:
        yield
    except (sa.exc.SQLAlchemyError, OverflowError) as exc:
        raise store_error(exc, where, doing, init=init) from exc


@contextmanager
def server_transaction(engine: sa.Engine, what: str, doing: str) -> Iterator[sa.Connection]:
    """A transaction on a server database whose errors `translated` turns into ours,
    naming `what` and the database (password hidden)."""
    where = f"{what} {engine.url.render_as_string(hide_password=True)}"
    with translated(where, doing), engine.begin() as connection:
        yield connection


@contextmanager
def terminal_connection(engine: sa.Engine, doing: str, *, write: bool) -> Iterator[sa.Connection]:
    """A transaction (`write`) or a read on a terminal database; its errors become ours,
    NotInitialised where `cajasync terminal init` never ran (`terminal_store_error`)."""
    try:
        with engine.begin() if write else engine.connect() as connection:
            yield connection
    except (sa.exc.SQLAlchemyError, OverflowError) as exc:
        raise terminal_store_error(exc, engine, doing) from exc


def terminal_store_error(exc: BaseException, engine: sa.Engine, doing: str) -> StoreError:
    """`store_error` for a terminal database: NotInitialised when it has no cajasync tables
    (`cajasync terminal init` never ran on it)."""
    if kind_of(exc) is StoreError and not _has_terminal_tables(engine):
        return NotInitialised(NO_TABLES)
    where = f"terminal store {engine.url.render_as_string(hide_password=True)}"
    return store_error(exc, where, doing, init="cajasync terminal init")


def _has_terminal_tables(engine: sa.Engine) -> bool:
    try:
        return sa.inspect(engine).has_table(terminal_table.name)
    except sa.exc.SQLAlchemyError:
        return True  # the database cannot say: report the first error as it is


# -- waiting for the database --------------------------------------------------------------


def backoff(settings: Settings, attempt: int) -> float:
    """Seconds to wait after the `attempt`-th failure in a row (the reconnect settings)."""
    return float(min(settings.retry_max_s, settings.retry_initial_s * 2 ** (attempt - 1)))


def _waiting(what: str, exc: BaseException | None, delay: float, settings: Settings) -> None:
    log.warning(
        "%s: server store unreachable (%s); retrying in %.1fs, giving up after %gs",
        what,
        exc,
        delay,
        settings.store_give_up_s,
    )


def _given_up(what: str, exc: BaseException | None, settings: Settings) -> StoreUnavailable:
    return StoreUnavailable(
        f"{what}: the server store stayed unreachable for {settings.store_give_up_s:g}s, "
        f"giving up (CAJASYNC_STORE_GIVE_UP_S sets how long to wait): {exc}"
    )


def store_retry(
    settings: Settings,
    *,
    what: str,
    stop: threading.Event | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> tenacity.Retrying:
    """The one retry policy for a database that is away: StoreUnavailable is retried with
    exponential backoff, logged, until it works or `settings.store_give_up_s` passed (then
    StoreUnavailable saying so, with the cause) or `stop` is set (the last error, as is).
    Other errors pass through at once. `sleep` may keep a broker connection serviced."""
    give_up: tenacity.stop.stop_base = tenacity.stop_after_delay(settings.store_give_up_s)
    if stop is not None:
        give_up = give_up | tenacity.stop_when_event_set(stop)

    def fail(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if exc is None or (stop is not None and stop.is_set()):
            raise exc or StoreUnavailable(f"{what}: stopped while the server store was away")
        raise _given_up(what, exc, settings) from exc

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        _waiting(what, exc, state.upcoming_sleep, settings)

    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(StoreUnavailable),
        wait=tenacity.wait_exponential(
            multiplier=settings.retry_initial_s, max=settings.retry_max_s
        ),
        stop=give_up,
        sleep=sleep,
        before_sleep=before_sleep,
        retry_error_callback=fail,
    )


class Outage:
    """`store_retry` for a loop that must not block (an ioloop): after a failure, it says
    when to try again; the same backoff, log line and give-up."""

    def __init__(self, settings: Settings, *, what: str) -> None:
        self._settings = settings
        self._what = what
        self._since: float | None = None
        self._failures = 0
        self._retry_at = 0.0

    def waiting(self) -> bool:
        """True while the backoff after the last failure runs."""
        return time.monotonic() < self._retry_at

    def failed(self, exc: StoreUnavailable) -> None:
        """Note a failure and schedule the next try; StoreUnavailable once it lasted too long."""
        now = time.monotonic()
        self._since = now if self._since is None else self._since
        if now - self._since >= self._settings.store_give_up_s:
            raise _given_up(self._what, exc, self._settings) from exc
        self._failures += 1
        delay = backoff(self._settings, self._failures)
        _waiting(self._what, exc, delay, self._settings)
        self._retry_at = now + delay

    def over(self) -> None:
        """The database answered again."""
        if self._since is not None:
            log.warning("%s: server store reachable again", self._what)
        self._since, self._failures, self._retry_at = None, 0, 0.0
