"""In-memory bookkeeping of the relay: the confirm window and the back-off of refused rows.

Pure Python, no I/O: what is in flight under which delivery tag, which rows the broker
refused and when they may be tried again.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Window:
    """Unconfirmed publishes on one channel, by delivery tag (tags count from 1 per channel)."""

    size: int
    _seq_by_tag: dict[int, int] = field(default_factory=dict)
    _seqs: set[int] = field(default_factory=set)
    _last_tag: int = 0

    @property
    def space(self) -> int:
        return max(0, self.size - len(self._seq_by_tag))

    @property
    def empty(self) -> bool:
        return not self._seq_by_tag

    def __len__(self) -> int:
        return len(self._seq_by_tag)

    def __contains__(self, seq: object) -> bool:
        return seq in self._seqs

    def add(self, seq: int) -> int:
        """Record a publish of `seq`; return its delivery tag."""
        self._last_tag += 1
        self._seq_by_tag[self._last_tag] = seq
        self._seqs.add(seq)
        return self._last_tag

    def add_untracked(self) -> int:
        """Record a publish that is no outbox row (a request); return its delivery tag.

        It takes a tag like any publish on the channel, so later tags stay aligned, but
        maps to no seq: its confirm settles nothing, and it takes no room in the window.
        """
        self._last_tag += 1
        return self._last_tag

    def settle(self, tag: int, *, multiple: bool) -> list[int]:
        """The seqs a broker ack/nack of `tag` (and, if `multiple`, every earlier tag) covers."""
        if not multiple:
            seq = self._seq_by_tag.pop(tag, None)
            return [] if seq is None else self._release([seq])
        settled = []
        for pending_tag in list(self._seq_by_tag):  # insertion order == tag order
            if pending_tag > tag:
                break
            settled.append(self._seq_by_tag.pop(pending_tag))
        return self._release(settled)

    def reset(self) -> list[int]:
        """Forget everything in flight (the channel is gone); return the seqs that were."""
        lost = list(self._seq_by_tag.values())
        self._seq_by_tag.clear()
        self._seqs.clear()
        self._last_tag = 0
        return lost

    def _release(self, seqs: list[int]) -> list[int]:
        self._seqs.difference_update(seqs)
        return seqs


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
        delay = min(self.max_s, self.initial_s * 2 ** (failures - 1))
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
