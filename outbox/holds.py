"""The back-off of outbox rows the broker refused: pure Python, no I/O.

Which rows the broker refused (returned or nacked) and when they may be tried again.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Holds:
    """Rows the broker refused (returned or nacked), held back with exponential back-off."""

    initial_s: float
    max_s: float
    _until: dict[int, float] = field(default_factory=dict)
    _failures: dict[int, int] = field(default_factory=dict)

    def hold(self, seq: int, now: float) -> float:
        """Hold `seq` after one more refusal; return when it may be published again."""
        failures = self._failures.get(seq, 0) + 1
        self._failures[seq] = failures
        delay = doubling(self.initial_s, self.max_s, failures)
        self._until[seq] = now + delay
        return self._until[seq]

    def held(self, seq: int, now: float) -> bool:
        return self._until.get(seq, 0.0) > now

    def release(self, seqs: list[int]) -> None:
        """Forget rows that went through."""
        for seq in seqs:
            self._until.pop(seq, None)
            self._failures.pop(seq, None)

    def next_expiry(self, now: float) -> float | None:
        """When the earliest still-held row may be published again, if any is held."""
        future = [until for until in self._until.values() if until > now]
        return min(future) if future else None


def doubling(initial_s: float, max_s: float, attempt: int) -> float:
    """`initial_s` doubled for each attempt after the first, never above `max_s`.

    The exponent is capped: a row refused for days, or a broker nacking a thousand times in
    a row, would otherwise overflow the float (2**1024) and stop the relay.
    """
    return min(max_s, initial_s * 2.0 ** min(max(attempt - 1, 0), 60))
