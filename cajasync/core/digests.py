"""Which records differ between two sides, by exchanging digests instead of key lists.

    local = EntrySet(till_entries)                     # [(key, version), ...]
    differences = reconcile(local, server_side)        # server_side: a DigestSide
    differences.missing_remote, differences.missing_local, differences.version_differs

Each (key, version) is placed by a 64-bit hash of its key and summarised by a 64-bit hash
of key and version (`hashes`); a bucket's digest is the XOR of its entries' hashes, so two buckets
with the same count and digest hold the same entries (up to a 2**-64 accident). The local
side asks the remote one for the summaries of the children of every bucket that differs,
round after round, until a differing bucket is small enough (`leaf`) to ask for its
entries outright; a bucket empty on one side needs no more questions. Two sides of 100,000
records with 10 differences settle in three rounds and about 10 KB, where the full (key,
version) list weighs about 1.5 MB (bench/diff.py measures both): the first round splits the
root into about one child per 400 entries, later rounds split a differing bucket 64 ways.

The remote side is anything with `children` and `entries` (`DigestSide`): the server over
the request queue for a till (cajasync/processes/questions.py), another EntrySet in tests
and in the benchmark (`LocalSide`, which also counts the bytes its messages would weigh).
"""

from __future__ import annotations

import bisect
import hashlib
import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Final, Protocol, TypeVar

import msgspec

from schemas.digests import DIGEST_BYTES, MAX_FANOUT_BITS, Bucket, Children, Entries

HASH_BITS: Final = 64
LEAF: Final = 64  # a differing bucket with at most this many entries on each side is listed
TARGET_PER_BUCKET: Final = 400  # the first round's fanout aims at about this many per child
FANOUT_BITS: Final = 6  # later rounds split a differing bucket into 64 children
ROOT: Final = Bucket(0, 0)
T = TypeVar("T")


MASK: Final = (1 << 64) - 1
GOLDEN: Final = 0x9E3779B97F4A7C15


def hashes(key: str, version: int) -> tuple[int, int]:
    """Where a key is placed (the top 64 bits of a 128-bit BLAKE2b of the key) and what the
    (key, version) contributes to its bucket's digest (the other 64 bits, mixed with the
    version by splitmix64's finaliser): one hash per entry instead of two."""
    both = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=16).digest(), "big")
    return both >> 64, _mix((both & MASK) ^ (version * GOLDEN & MASK))


def _mix(value: int) -> int:
    value = (value ^ (value >> 30)) * 0xBF58476D1CE4E5B9 & MASK
    value = (value ^ (value >> 27)) * 0x94D049BB133111EB & MASK
    return value ^ (value >> 31)


def bounds(bucket: Bucket) -> tuple[int, int]:
    """The half-open range of key hashes a bucket covers."""
    width = HASH_BITS - bucket.depth
    return bucket.prefix << width, (bucket.prefix + 1) << width


def child(bucket: Bucket, fanout_bits: int, index: int) -> Bucket:
    return Bucket(bucket.depth + fanout_bits, (bucket.prefix << fanout_bits) | index)


class EntrySet:
    """One side's (key, version) entries, indexed by key hash for bucket questions.

    With `background=True` the index is built on a thread and every question waits for
    it: a till asks the server its first question while it hashes its own side.
    """

    def __init__(self, entries: Iterable[tuple[str, int]], *, background: bool = False) -> None:
        listed = list(entries)
        self._count = len(listed)
        self._hashes: list[int] = []
        self._digests: list[int] = []
        self._keys: list[str] = []
        self._versions: list[int] = []
        self._built = threading.Event()
        if background:
            threading.Thread(target=self._build, args=(listed,), daemon=True).start()
        else:
            self._build(listed)

    def _build(self, listed: list[tuple[str, int]]) -> None:
        rows = sorted(
            ((*hashes(key, version), key, version) for key, version in listed),
            key=itemgetter(0),
        )
        self._hashes = [row[0] for row in rows]
        self._digests = [row[1] for row in rows]
        self._keys = [row[2] for row in rows]
        self._versions = [row[3] for row in rows]
        self._built.set()

    def __len__(self) -> int:
        return self._count

    def _range(self, bucket: Bucket) -> range:
        self._built.wait()
        low, high = bounds(bucket)
        return range(bisect.bisect_left(self._hashes, low), bisect.bisect_left(self._hashes, high))

    def children(self, bucket: Bucket, fanout_bits: int) -> Children:
        """Counts and digests of the 2**fanout_bits children of `bucket`."""
        fanout_bits = min(fanout_bits, HASH_BITS - bucket.depth)
        size = 1 << fanout_bits
        counts = [0] * size
        xors = [0] * size
        shift = HASH_BITS - bucket.depth - fanout_bits
        mask = size - 1
        for i in self._range(bucket):
            index = (self._hashes[i] >> shift) & mask
            counts[index] += 1
            xors[index] ^= self._digests[i]
        digests = b"".join(x.to_bytes(DIGEST_BYTES, "big") for x in xors)
        return Children(bucket, counts, digests)

    def entries(self, bucket: Bucket) -> Entries:
        """The entries of `bucket`, sorted by key."""
        pairs = sorted((self._keys[i], self._versions[i]) for i in self._range(bucket))
        return Entries([key for key, _ in pairs], [version for _, version in pairs])

    def all_entries(self) -> Entries:
        return self.entries(ROOT)


class DigestSide(Protocol):
    """The other side of a diff: answers bucket questions, counts what they weighed."""

    @property
    def bytes_moved(self) -> int:
        """Bytes of questions and answers exchanged so far."""

    def children(self, buckets: Sequence[Bucket], fanout_bits: int) -> list[Children]:
        """The children summaries of each bucket, in order."""

    def entries(self, buckets: Sequence[Bucket]) -> list[Entries]:
        """The entries of each bucket, in order."""


class LocalSide:
    """A DigestSide over an EntrySet in this process; counts the bytes its questions and
    answers would weigh encoded (msgpack), for tests and the benchmark."""

    def __init__(self, entries: EntrySet) -> None:
        self._set = entries
        self._encode = msgspec.msgpack.Encoder().encode
        self.bytes_moved = 0

    def children(self, buckets: Sequence[Bucket], fanout_bits: int) -> list[Children]:
        answer = [self._set.children(bucket, fanout_bits) for bucket in buckets]
        self.bytes_moved += len(self._encode([list(buckets), fanout_bits])) + len(
            self._encode(answer)
        )
        return answer

    def entries(self, buckets: Sequence[Bucket]) -> list[Entries]:
        answer = [self._set.entries(bucket) for bucket in buckets]
        self.bytes_moved += len(self._encode(list(buckets))) + len(self._encode(answer))
        return answer


@dataclass(slots=True)
class Differences:
    """What differs, by key: on this side only, on the other only, or in version."""

    missing_remote: list[str] = field(default_factory=list)  # here, not there
    missing_local: list[str] = field(default_factory=list)  # there, not here
    version_differs: list[tuple[str, int, int]] = field(default_factory=list)  # key, here, there
    rounds: int = 0
    bytes_moved: int = 0
    local_count: int = 0
    remote_count: int = 0

    @property
    def equal(self) -> bool:
        return not (self.missing_remote or self.missing_local or self.version_differs)

    def sort(self) -> None:
        self.missing_remote.sort()
        self.missing_local.sort()
        self.version_differs.sort()


def first_fanout(count: int) -> int:
    """Children of the root in the first round: about TARGET_PER_BUCKET entries each."""
    if count <= TARGET_PER_BUCKET:
        return 1
    return max(1, min(MAX_FANOUT_BITS, math.ceil(math.log2(count / TARGET_PER_BUCKET))))


def reconcile(
    local: EntrySet,
    remote: DigestSide,
    *,
    leaf: int = LEAF,
    fanout_bits: int = FANOUT_BITS,
    max_buckets: int = 1024,
) -> Differences:
    """Every key that differs between `local` and `remote`, asking `remote` only about
    buckets whose summaries differ."""
    found = Differences(local_count=len(local))
    to_split: list[tuple[Bucket, int]] = [(ROOT, first_fanout(len(local)))]
    to_list: list[Bucket] = []
    while to_split or to_list:
        if to_split:
            found.rounds += 1
            next_split: list[tuple[Bucket, int]] = []
            for chunk in _chunks(to_split, max_buckets):
                by_fanout: dict[int, list[Bucket]] = {}
                for bucket, bits in chunk:
                    by_fanout.setdefault(bits, []).append(bucket)
                for bits, buckets in by_fanout.items():
                    for theirs in remote.children(buckets, bits):
                        mine = local.children(theirs.bucket, bits)
                        if theirs.bucket == ROOT:
                            found.remote_count = sum(theirs.counts)
                        _compare_children(
                            mine, theirs, local, found, next_split, to_list, leaf, fanout_bits
                        )
            to_split = next_split
        if to_list:
            found.rounds += 1
            for chunk_buckets in _chunks(to_list, max_buckets):
                for bucket, theirs_entries in zip(
                    chunk_buckets, remote.entries(chunk_buckets), strict=True
                ):
                    _compare_entries(local.entries(bucket), theirs_entries, found)
            to_list = []
    found.bytes_moved = remote.bytes_moved
    found.sort()
    return found


def _chunks(items: list[T], size: int) -> Iterable[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _compare_children(
    mine: Children,
    theirs: Children,
    local: EntrySet,
    found: Differences,
    to_split: list[tuple[Bucket, int]],
    to_list: list[Bucket],
    leaf: int,
    fanout_bits: int,
) -> None:
    bits = int(math.log2(len(theirs.counts)))
    for index, (my_count, their_count) in enumerate(zip(mine.counts, theirs.counts, strict=True)):
        start = index * DIGEST_BYTES
        if (
            my_count == their_count
            and mine.digests[start : start + DIGEST_BYTES]
            == theirs.digests[start : start + DIGEST_BYTES]
        ):
            continue
        bucket = child(theirs.bucket, bits, index)
        if their_count == 0:  # everything here is missing there: no question needed
            found.missing_remote.extend(local.entries(bucket).keys)
        elif max(my_count, their_count) <= leaf or my_count == 0 or bucket.depth >= HASH_BITS:
            to_list.append(bucket)
        else:
            to_split.append((bucket, min(fanout_bits, HASH_BITS - bucket.depth)))


def _compare_entries(mine: Entries, theirs: Entries, found: Differences) -> None:
    here = dict(zip(mine.keys, mine.versions, strict=True))
    there = dict(zip(theirs.keys, theirs.versions, strict=True))
    for key, version in here.items():
        other = there.get(key)
        if other is None:
            found.missing_remote.append(key)
        elif other != version:
            found.version_differs.append((key, version, other))
    found.missing_local.extend(key for key in there if key not in here)
