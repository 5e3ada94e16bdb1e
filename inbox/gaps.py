"""When to ask a terminal to replay a gap: after a grace period, then once per grace period.

A gap is usually a message still in flight (another consumer holds it, or it is being
redelivered), so it is only requested once it has stayed open for `grace` seconds.
"""

from __future__ import annotations

from collections.abc import Sequence

from inbox.store.base import Gap

GapId = tuple[str, int]  # (terminal, from_seq)


class GapTracker:
    """Remembers since when each gap is open and when it was last requested."""

    def __init__(self, grace: float) -> None:
        self._grace = grace
        self._opened: dict[GapId, float] = {}
        self._requested: dict[GapId, float] = {}

    def due(self, gaps: Sequence[Gap], now: float) -> list[Gap]:
        """The gaps to request now, given every gap currently open."""
        current = {(gap.terminal, gap.from_seq): gap for gap in gaps}
        self._opened = {gid: self._opened.get(gid, now) for gid in current}
        self._requested = {gid: t for gid, t in self._requested.items() if gid in current}
        result = []
        for gid, gap in current.items():
            if now - self._requested.get(gid, self._opened[gid]) >= self._grace:
                self._requested[gid] = now
                result.append(gap)
        return result

    def waiting(self) -> bool:
        """Whether an open gap has not been requested yet (its grace period is running)."""
        return any(gid not in self._requested for gid in self._opened)
