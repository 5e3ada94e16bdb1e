"""The store's lease: which of several server processes on one store does the duties that
must be done once, not once per process.

Several `server run` processes share a store: ingest and requests are competing consumers,
but publishing the change log (outbox/feed_relay.py), asking tills to replay gaps, recording
lost seqs and sweeping waiting Z closes (inbox/ingest.py) are each done by one of them at a
time. Two feed relays publish every change twice and in an order a till can only mend with
catch-ups; N gap trackers ask every till N times and overwrite each other's saved states.

On PostgreSQL the lease is a session advisory lock (`pg_try_advisory_lock`) on a connection
the holder keeps open: a process that dies (even by SIGKILL) closes its connection and the
lock is free at once; a holder whose connection breaks (a database outage) stops holding it
and takes it again, or lets another take it, once the database is back. On SQLite the store
is one machine's file and one process serves it: the lease is always held.

    lease = StoreLease(engine)
    if lease.held():  # cheap: the database is asked at most every CHECK_S
        ...
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

CHECK_S: Final = 1.0  # how often the holder checks its connection, and others try to take it
NAME: Final = "cajasync.server.singletons"


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for `name`."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class StoreLease:
    """Held by at most one process of a store at a time (always held on SQLite)."""

    def __init__(self, engine: Engine, name: str = NAME, check_s: float = CHECK_S) -> None:
        self._engine = engine
        self._key = lock_key(name)
        self._check_s = check_s
        self._shared = engine.dialect.name != "postgresql"
        self._connection: sa.Connection | None = None
        self._held = self._shared
        self._checked = float("-inf")
        self._lock = threading.Lock()

    def held(self) -> bool:
        """Whether this process holds the lease now (trying to take it when due)."""
        if self._shared:
            return True
        with self._lock:
            now = time.monotonic()
            if now - self._checked >= self._check_s:
                self._checked = now
                self._refresh()
            return self._held

    def release(self) -> None:
        """Give the lease up (closing its connection), for the next holder."""
        with self._lock:
            self._drop()

    def _refresh(self) -> None:
        was = self._held
        try:
            if self._connection is None:
                self._connection = self._engine.connect()
            if self._held:  # still ours while its connection lives
                self._connection.execute(sa.text("SELECT 1"))
            else:
                taken = self._connection.execute(
                    sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": self._key}
                ).scalar_one()
                self._held = bool(taken)
            self._connection.commit()  # a session lock outlives the transaction
        except sa.exc.SQLAlchemyError as exc:
            log.warning("store lease: the database did not answer (%s); not holding it", exc)
            self._drop()
        if self._held != was:
            log.info("store lease %s", "taken" if self._held else "lost")

    def _drop(self) -> None:
        self._held = self._shared
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.invalidate()  # never back to the pool holding the lock
                connection.close()
            except sa.exc.SQLAlchemyError:
                pass
