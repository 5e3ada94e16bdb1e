"""The confirm window: what is published on one channel and not yet confirmed.

Pure Python, no I/O. Every publish on a channel in confirm mode takes the next delivery
tag (from 1 per channel); a publish carries the keys it will settle once the broker
confirms it (an outbox seq, the change ids of an event) or none (a request, stream
heads: a tag, but nothing to settle and no room taken).
"""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")


class Window(Generic[K]):
    """Unconfirmed publishes on one channel by delivery tag, and the keys each carries."""

    def __init__(self, size: int) -> None:
        self.size = size  # keys in flight at most
        self._keys_by_tag: dict[int, tuple[K, ...]] = {}
        self._keys: set[K] = set()
        self._last_tag = 0

    @property
    def space(self) -> int:
        return max(0, self.size - len(self._keys))

    @property
    def empty(self) -> bool:
        """Nothing to settle is in flight (publishes without keys do not count)."""
        return not self._keys_by_tag

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def add(self, *keys: K) -> int:
        """Record one publish carrying `keys`; return its delivery tag.

        With no keys it still takes a tag, so later tags stay aligned, but its confirm
        settles nothing and it takes no room.
        """
        self._last_tag += 1
        if keys:
            self._keys_by_tag[self._last_tag] = keys
            self._keys.update(keys)
        return self._last_tag

    def settle(self, tag: int, *, multiple: bool) -> list[K]:
        """The keys a broker ack/nack of `tag` (and, if `multiple`, every earlier tag) covers."""
        if not multiple:
            return self._release(self._keys_by_tag.pop(tag, ()))
        settled: list[K] = []
        for pending_tag in list(self._keys_by_tag):  # insertion order == tag order
            if pending_tag > tag:
                break
            settled += self._keys_by_tag.pop(pending_tag)
        return self._release(settled)

    def reset(self) -> list[K]:
        """Forget everything in flight (the channel is gone); return the keys that were."""
        lost = [key for keys in self._keys_by_tag.values() for key in keys]
        self._keys_by_tag.clear()
        self._keys.clear()
        self._last_tag = 0
        return lost

    def _release(self, keys: tuple[K, ...] | list[K]) -> list[K]:
        self._keys.difference_update(keys)
        return list(keys)
