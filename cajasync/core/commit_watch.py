"""Whether anything was committed to a till's SQLite file since the last look.

The relay looks for new outbox rows every `poll_interval_s` (50 ms), and a look is a
connection checkout, a transaction and a query: about 1.5 ms of Python, 30 ms of CPU a
second per idle till (measured: `terminal run` on an empty outbox). On a till that is
nothing; on a machine running many tills' relays (the e2e and fleet benches, a store
server hosting virtual tills) it is most of their CPU. SQLite's `PRAGMA data_version`,
read on a connection of its own, changes whenever another connection commits (the POS
recording a sale, the relay's own marks, a replay by hand): a few microseconds to learn
that a look would find nothing new.

Only a hint: the relay still looks at least every `recheck_s`, and whoever moves rows
below its cursor by itself (a rewind) tells it so, so a missed change costs latency,
never an operation.
"""

from __future__ import annotations

import sqlite3
import weakref
from pathlib import Path

from sqlalchemy.engine import Engine


class CommitWatch:
    """`PRAGMA data_version` of one SQLite file on a private connection."""

    def __init__(self, path: str) -> None:
        self._connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        weakref.finalize(self, self._connection.close)

    @classmethod
    def of(cls, engine: Engine) -> CommitWatch | None:
        """A watch on the engine's file, or None where there is no file to watch (another
        database, an in-memory one, a file not there yet)."""
        database = engine.url.database
        if engine.dialect.name != "sqlite" or not database or database == ":memory:":
            return None
        if database.startswith("file:") or not Path(database).is_file():
            return None
        try:
            return cls(database)
        except sqlite3.Error:
            return None

    def version(self) -> int | None:
        """The file's data version (None when it cannot be read: treat as changed)."""
        try:
            row = self._connection.execute("PRAGMA data_version").fetchone()
        except sqlite3.Error:
            return None
        return int(row[0]) if row else None


class QuietSpell:
    """Skips looks that would find nothing: after a look found nothing, until the file's
    data version moves or `recheck_s` passed, whichever is first."""

    def __init__(self, watch: CommitWatch | None, recheck_s: float) -> None:
        self._watch, self._recheck_s = watch, recheck_s
        self._version: int | None = None
        self._until = 0.0

    def quiet(self, now: float) -> bool:
        """Whether a look now would find what the last one found: nothing."""
        if self._version is None or now >= self._until or self._watch is None:
            return False
        return self._watch.version() == self._version

    def before_look(self) -> int | None:
        """The version to remember if the look about to be made finds nothing (read before
        it, so a commit racing the look moves it)."""
        return self._watch.version() if self._watch is not None else None

    def after_look(self, version: int | None, now: float, *, found: bool) -> None:
        if found or version is None:
            self._version = None
        else:
            self._version, self._until = version, now + self._recheck_s

    def end(self) -> None:
        """Look next time, whatever the version says (rows were moved by hand)."""
        self._version = None
