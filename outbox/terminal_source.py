"""The terminal's outbox as a relay source: pending rows up to `cajasync.up`.

Rows are claimed by `outbox.claimer.Claimer` (pending rows by a cursor, sent rows without
a receipt again after `resend_after_s`), published by the terminal's broker session, and
marked sent when confirmed. A row the broker refuses (returned unroutable, or nacked)
goes back to pending with why and is held back with doubling back-off (`outbox.holds`);
a drain never retries it.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from contextlib import AbstractContextManager
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cajasync.broker.confirms import Window
from cajasync.core.commit_watch import CommitWatch, QuietSpell
from cajasync.core.db import reading
from cajasync.core.settings import Settings
from cajasync.core.topology import op_routing_key
from outbox.claimer import Claimer
from outbox.claims import OutRow, mark_refused, mark_sent, store_errors
from outbox.holds import Holds
from outbox.relay import WRITE_EVERY_S

log = logging.getLogger(__name__)


class RowSession(Protocol):
    """What the source needs of the terminal's broker session (`TerminalSession`)."""

    def publish(
        self, routing_key: str, body: bytes, *, message_id: str, headers: dict[str, Any]
    ) -> None: ...


class TerminalSource:
    """The outbox rows of one terminal, for `outbox.relay.Relay`."""

    write_every_s = WRITE_EVERY_S

    def __init__(
        self, engine: Engine, settings: Settings, terminal: str, *, resend: bool, retry: bool
    ) -> None:
        self.engine, self.terminal = engine, terminal
        self.name = f"relay of terminal {terminal}"
        self.window: Window[int] = Window(settings.publish_window)
        self.holds = _holds(settings, retry=retry)
        self.claimer = Claimer(settings, self.window, self.holds, resend=resend)
        self.resent = 0
        # nothing committed since a look that found nothing: skip the next looks for up to
        # 10 polls (core/commit_watch.py: a till's idle relay spent 30 ms of CPU a second)
        self.quiet = QuietSpell(CommitWatch.of(engine), 10 * settings.poll_interval_s)

    def errors(self, doing: str) -> AbstractContextManager[None]:
        return store_errors(self.terminal, doing)

    def claim(self, space: int) -> list[OutRow]:
        """Stale sent rows first, then pending ones. The claim only reads: it takes no write
        lock, so a POS transaction that reads before it writes is never caught upgrading
        its lock while the relay looks for rows."""
        now = time.monotonic()
        if self.quiet.quiet(now):
            return []
        version = self.quiet.before_look()
        with store_errors(self.terminal, "claiming outbox rows"), reading(self.engine) as c:
            stale, fresh = self.claimer.claim(c, space)
        self.quiet.after_look(version, now, found=bool(stale or fresh))
        self.resent += len(stale)
        return [*stale, *fresh]

    def keys(self, message: OutRow) -> tuple[int]:
        return (message.seq,)

    def publish(self, session: RowSession, message: OutRow) -> None:
        """One operation to `cajasync.up`: its message id is `<op_id>/<version>`, so a copy
        published again is the same message to the server."""
        session.publish(
            op_routing_key(self.terminal, message.topic),
            message.body,
            message_id=f"{message.op_id}/{message.version}",
            headers={"terminal": self.terminal, "seq": message.seq, "topic": message.topic},
        )

    def marks(self, confirmed: list[int], refused: dict[int, str]) -> bool:
        return True

    def mark(
        self, connection: sa.Connection, confirmed: list[int], refused: dict[int, str]
    ) -> None:
        """Mark confirmed rows sent and refused rows pending with why."""
        mark_sent(connection, confirmed, now=time.time())
        mark_refused(connection, refused)

    def settled(self, confirmed: list[int], refused: dict[int, str]) -> None:
        """Confirmed rows leave their holds, refused ones are held."""
        self.holds.release(confirmed)
        if not refused:
            return
        now = time.monotonic()
        self.quiet.end()
        for seq in refused:
            self.claimer.held_until(self.holds.hold(seq, now))
        for reason, count in Counter(refused.values()).items():
            log.warning("terminal %s: %d op(s) not accepted: %s", self.terminal, count, reason)

    def may_reclaim(self, now: float) -> bool:
        return self.claimer.may_reclaim(now)

    def rewind(self, seq: int) -> None:
        """The server asked for rows from `seq` on again."""
        self.quiet.end()
        self.claimer.rewind(seq)

    def reset(self) -> None:
        self.quiet.end()
        self.claimer.reset()


def _holds(settings: Settings, *, retry: bool) -> Holds:
    """Back-off for refused rows: doubling up to `resend_after_s`; without `retry` (a
    drain) a refused row is not tried again."""
    if not retry:
        return Holds(math.inf, math.inf)
    return Holds(settings.retry_initial_s, settings.resend_after_s)
