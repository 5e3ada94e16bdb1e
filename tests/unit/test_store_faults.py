"""What a database error means (outage, bad data, broken store) and how a loop waits for it."""

from __future__ import annotations

import sqlite3
import threading

import pytest
import sqlalchemy as sa

from cajasync.core.settings import Settings
from cajasync.core.store_faults import Outage, kind_of, store_error, store_retry
from cajasync.errors import StoreDataError, StoreError, StoreUnavailable


class ServerSaid(Exception):
    """A DBAPI error as psycopg raises it: with the server's SQLSTATE, or none."""

    def __init__(self, message: str, sqlstate: str | None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def wrapped(kind: type[sa.exc.DBAPIError], orig: BaseException) -> sa.exc.DBAPIError:
    return kind("INSERT INTO t VALUES (%s)", {"a": 1}, orig)


@pytest.mark.parametrize(
    ("sqlstate", "kind"),
    [
        ("08006", sa.exc.OperationalError),  # connection failure
        ("57P01", sa.exc.OperationalError),  # admin shutdown
        ("57P03", sa.exc.OperationalError),  # the database system is starting up
        ("53300", sa.exc.OperationalError),  # too many connections
        ("40001", sa.exc.OperationalError),  # serialization failure
        ("40P01", sa.exc.OperationalError),  # deadlock
        (None, sa.exc.OperationalError),  # connection refused: no answer, no SQLSTATE
        (None, sa.exc.InterfaceError),
    ],
)
def test_outages_are_unavailable(sqlstate: str | None, kind: type[sa.exc.DBAPIError]) -> None:
    assert kind_of(wrapped(kind, ServerSaid("gone", sqlstate))) is StoreUnavailable


@pytest.mark.parametrize(
    ("sqlstate", "kind"),
    [
        ("22003", sa.exc.DataError),  # numeric field overflow
        ("22021", sa.exc.DataError),  # invalid byte sequence
        ("23502", sa.exc.IntegrityError),  # not null violation
        ("23505", sa.exc.IntegrityError),  # unique violation outside ON CONFLICT
        (None, sa.exc.DataError),  # refused by the driver (a NUL in a text)
    ],
)
def test_refused_values_are_data_errors(
    sqlstate: str | None, kind: type[sa.exc.DBAPIError]
) -> None:
    assert kind_of(wrapped(kind, ServerSaid("bad value", sqlstate))) is StoreDataError


def test_a_broken_store_is_neither() -> None:
    missing = wrapped(sa.exc.ProgrammingError, ServerSaid("relation does not exist", "42P01"))
    assert kind_of(missing) is StoreError


def test_an_invalidated_connection_is_an_outage() -> None:
    lost = sa.exc.OperationalError("SELECT 1", {}, ServerSaid("closed", None))
    lost.connection_invalidated = True
    assert kind_of(lost) is StoreUnavailable


def test_a_pool_timeout_is_an_outage() -> None:
    assert kind_of(sa.exc.TimeoutError("QueuePool limit reached")) is StoreUnavailable


def sqlite_error(kind: type[sqlite3.Error], name: str) -> sqlite3.Error:
    error = kind("database says no")
    error.sqlite_errorname = name
    return error


@pytest.mark.parametrize(
    ("orig", "expected"),
    [
        (sqlite_error(sqlite3.OperationalError, "SQLITE_BUSY"), StoreUnavailable),
        (sqlite_error(sqlite3.OperationalError, "SQLITE_IOERR_WRITE"), StoreUnavailable),
        (sqlite_error(sqlite3.IntegrityError, "SQLITE_CONSTRAINT_NOTNULL"), StoreDataError),
        (sqlite_error(sqlite3.OperationalError, "SQLITE_ERROR"), StoreError),  # no such table
    ],
)
def test_sqlite_errors_by_their_code(orig: sqlite3.Error, expected: type[StoreError]) -> None:
    assert kind_of(wrapped(sa.exc.OperationalError, orig)) is expected


def test_a_number_sqlite_cannot_bind_is_a_data_error() -> None:
    assert kind_of(OverflowError("Python int too large to convert to SQLite INTEGER")) is (
        StoreDataError
    )


def test_a_value_a_column_type_refuses_to_bind_is_a_data_error() -> None:
    """The amount column refuses on SQLite what NUMERIC(16, 2) refuses on PostgreSQL."""
    refused = sa.exc.StatementError("bind", "INSERT ...", {}, OverflowError("amount 1E+14"))
    assert kind_of(refused) is StoreDataError
    error = sa.exc.StatementError("bind", "INSERT ...", {}, ValueError("?"))
    assert kind_of(error) is StoreError


def test_store_error_keeps_the_database_words_without_the_statement() -> None:
    says = ServerSaid("numeric field overflow\nDETAIL:  precision 16, scale 2", "22003")
    error = store_error(wrapped(sa.exc.DataError, says), "server store X", "applying a batch")
    assert isinstance(error, StoreDataError)
    assert error.reason == "numeric field overflow DETAIL: precision 16, scale 2"
    assert "INSERT" not in str(error)


SETTINGS = Settings(retry_initial_s=0.5, retry_max_s=4.0, store_give_up_s=10.0)


class Clock:
    """A fake sleep that moves tenacity's clock forward."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 1000.0
        self.slept: list[float] = []
        monkeypatch.setattr("time.monotonic", lambda: self.now)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_an_outage_is_retried_with_backoff_until_the_store_is_back(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock(monkeypatch)
    failures = iter([StoreUnavailable("refused")] * 4)

    def work() -> str:
        error = next(failures, None)
        if error is not None:
            raise error
        return "done"

    assert store_retry(SETTINGS, what="ingest", sleep=clock.sleep)(work) == "done"
    assert clock.slept == [0.5, 1.0, 2.0, 4.0]
    assert "ingest: server store unreachable (refused); retrying in 0.5s" in caplog.text
    assert "giving up after 10s" in caplog.text


def test_an_outage_past_the_limit_stops_with_its_cause(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(monkeypatch)

    def work() -> None:
        raise StoreUnavailable("connection refused")

    with pytest.raises(StoreUnavailable, match=r"unreachable for 10s.*connection refused"):
        store_retry(SETTINGS, what="ingest", sleep=clock.sleep)(work)
    assert sum(clock.slept) >= SETTINGS.store_give_up_s


def test_a_stop_ends_the_wait_with_the_outage_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(monkeypatch)
    stop = threading.Event()
    stop.set()

    def work() -> None:
        raise StoreUnavailable("connection refused")

    with pytest.raises(StoreUnavailable, match=r"^connection refused$"):
        store_retry(SETTINGS, what="ingest", stop=stop, sleep=clock.sleep)(work)
    assert clock.slept == []


def test_data_errors_are_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(monkeypatch)

    def work() -> None:
        raise StoreDataError("refused", "numeric field overflow")

    with pytest.raises(StoreDataError):
        store_retry(SETTINGS, what="ingest", sleep=clock.sleep)(work)
    assert clock.slept == []


def test_outage_on_an_ioloop_waits_then_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(monkeypatch)
    outage = Outage(SETTINGS, what="feed relay")
    outage.failed(StoreUnavailable("refused"))
    assert outage.waiting()
    clock.sleep(0.5)
    assert not outage.waiting()
    clock.sleep(9.5)
    with pytest.raises(StoreUnavailable, match="unreachable for 10s"):
        outage.failed(StoreUnavailable("refused"))


def test_outage_on_an_ioloop_starts_afresh_once_the_store_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock(monkeypatch)
    outage = Outage(SETTINGS, what="feed relay")
    outage.failed(StoreUnavailable("refused"))
    clock.sleep(9.9)
    outage.over()
    clock.sleep(5)
    outage.failed(StoreUnavailable("refused"))  # a new outage: its own limit
    assert outage.waiting()
