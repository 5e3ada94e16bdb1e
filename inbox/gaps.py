"""When to ask a terminal to replay a gap: after a grace period, then less and less often.

A gap is usually a message still in flight (another consumer holds it, or it is being
redelivered), so it is only requested once it has stayed open for `grace` seconds. A gap
that stays open is requested again with exponential backoff: 2 x grace after the first
request, then 4 x grace, 8 x grace, ... never more than `cap` apart (server ingest: ten
times `resend_after_s`, 300 s by default). A gap nobody can fill (a till row the server
cannot read, sent under a shared broker user) is so asked for a few times an hour, not
every grace period for ever.

Each open gap is known by (terminal, first missing seq): when more seqs arrive inside it
it keeps its backoff; when its first seq arrives it is a new gap. The states of the gaps
requested at least once (`states`) are what ingest saves for `server stats`, and what a
restarted ingest resumes from (`resume`), so it does not start asking every grace period
again. Times are epoch seconds, from whatever clock the caller passes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Final

from inbox.server_store.base import Gap, GapState

GapId = tuple[str, int]  # (terminal, from_seq)

MIN_STEP_S: Final = 0.5  # the backoff's first step when the grace period is 0


class GapTracker:
    """Remembers since when each gap is open, how often and when it was last requested."""

    def __init__(self, grace: float, cap: float) -> None:
        self._grace = grace
        self._cap = max(cap, grace)
        self._states: dict[GapId, GapState] = {}

    @property
    def grace(self) -> float:
        return self._grace

    @property
    def cap(self) -> float:
        return self._cap

    def interval(self, asked: int) -> float:
        """How long after its last request a gap asked `asked` times (1 or more) is asked again."""
        step = max(self._grace, MIN_STEP_S)
        return float(min(self._cap, step * 2 ** min(asked, 62)))

    def resume(self, states: Iterable[GapState]) -> None:
        """Take up saved states (of a previous ingest) for the gaps that are still open."""
        for state in states:
            self._states.setdefault((state.terminal, state.from_seq), state)

    def due(self, gaps: Sequence[Gap], now: float) -> list[Gap]:
        """The gaps to request now, given every gap currently open."""
        states: dict[GapId, GapState] = {}
        result = []
        for gap in gaps:
            gid = (gap.terminal, gap.from_seq)
            held = self._states.get(gid)
            state = (
                GapState(gap.terminal, gap.from_seq, gap.to_seq, opened_at=now)
                if held is None
                else dataclasses.replace(held, to_seq=gap.to_seq)
            )
            if self._is_due(state, now):
                state = dataclasses.replace(state, asked=state.asked + 1, asked_at=now)
                result.append(gap)
            states[gid] = state
        self._states = states
        return result

    def waiting(self) -> bool:
        """Whether an open gap has not been requested yet (its grace period is running)."""
        return any(state.asked == 0 for state in self._states.values())

    def states(self) -> list[GapState]:
        """The open gaps requested at least once, by terminal."""
        return sorted(
            (state for state in self._states.values() if state.asked),
            key=lambda state: (state.terminal, state.from_seq),
        )

    def _is_due(self, state: GapState, now: float) -> bool:
        """Due once its wait is over (or the clock went back past its last request)."""
        if state.asked == 0 or state.asked_at is None:
            elapsed, wait = now - state.opened_at, self._grace
        else:
            elapsed, wait = now - state.asked_at, self.interval(state.asked)
        return elapsed >= wait or elapsed < 0
