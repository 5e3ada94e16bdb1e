"""Which outbox rows the relay publishes next, without re-reading what is in flight.

Pending rows are read by a cursor over `seq`, so a claim never re-reads the rows already
published in this session. Rows that fall back to pending *below* the cursor (refused by
the broker, replay requested, re-queued by hand) are found by going back to the start
("wrapping") once the cursor reaches the end: at most every `MIN_WRAP_S`, and while
refused rows are held, not before the first of them comes due. Sent rows without a
receipt are looked for separately, every quarter of `resend_after_s`.
"""

from __future__ import annotations

import time

import sqlalchemy as sa

from cajasync.broker.confirms import Window
from cajasync.core.settings import Settings
from outbox.claims import OutRow, claim_pending, claim_stale
from outbox.holds import Holds

MIN_WRAP_S = 0.5


class Claimer:
    """The relay's claim cursors for one broker session (`reset` for the next one)."""

    def __init__(
        self, settings: Settings, window: Window[int], holds: Holds, *, resend: bool
    ) -> None:
        self.settings, self.window, self.holds, self.resend = settings, window, holds, resend
        self.reset()

    def reset(self) -> None:
        """Start from the first row again (a new session: nothing is in flight)."""
        self.cursor = 0  # highest seq claimed; rows in flight or held lie below it
        self.wrap_at = 0.0  # when the claim may go back below the cursor
        self.stale_cursor = 0
        self.stale_check_at = 0.0

    def rewind(self, seq: int) -> None:
        """Make sure rows from `seq` on are looked at again (the server asked for them)."""
        self.cursor = min(self.cursor, seq - 1)

    def held_until(self, until: float) -> None:
        """A refused row may be published again at `until`: wrap by then."""
        self.wrap_at = min(self.wrap_at, until)

    def may_reclaim(self, now: float) -> bool:
        """Whether a claim at `now` may look at rows claimed before: by going back below
        the cursor, or by looking for sent rows without a receipt."""
        return now >= self.wrap_at or (self.resend and now >= self.stale_check_at)

    def claim(self, connection: sa.Connection, space: int) -> tuple[list[OutRow], list[OutRow]]:
        """Up to `space` rows to publish: (stale sent rows to resend, pending rows)."""
        now = time.monotonic()
        stale = self._stale(connection, now, space) if self.resend else []
        return stale, self._pending(connection, now, space - len(stale))

    def _pending(self, connection: sa.Connection, now: float, space: int) -> list[OutRow]:
        picked: dict[int, OutRow] = {}  # by seq: a wrapped scan meets the same rows again
        wrapped = False
        while len(picked) < space:
            limit = min(self.settings.claim_batch, space - len(picked))
            batch = claim_pending(connection, after_seq=self.cursor, limit=limit)
            picked |= {row.seq: row for row in batch if self._claimable(row.seq, now)}
            if batch:
                self.cursor = batch[-1].seq
            if len(batch) == limit:
                continue
            if wrapped or self.cursor == 0 or now < self.wrap_at:
                break
            self.cursor, wrapped = 0, True
            self.wrap_at = self._next_wrap(now)
        return sorted(picked.values())

    def _next_wrap(self, now: float) -> float:
        expiry = self.holds.next_expiry(now)
        return max(now + MIN_WRAP_S, expiry if expiry is not None else 0.0)

    def _claimable(self, seq: int, now: float) -> bool:
        return seq not in self.window and not self.holds.held(seq, now)

    def _stale(self, connection: sa.Connection, now: float, space: int) -> list[OutRow]:
        if now < self.stale_check_at or space == 0:
            return []
        cutoff = time.time() - self.settings.resend_after_s
        batch = claim_stale(
            connection, sent_before=cutoff, after_seq=self.stale_cursor, limit=space
        )
        if len(batch) < space:
            self.stale_cursor = 0
            self.stale_check_at = now + max(
                self.settings.poll_interval_s, self.settings.resend_after_s / 4
            )
        else:
            self.stale_cursor = batch[-1].seq
        return [row for row in batch if row.seq not in self.window]
