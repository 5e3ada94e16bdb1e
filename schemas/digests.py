"""What a record-level diff exchanges: bucket summaries of (key, version), then the entries
of the buckets that differ (the algorithm is cajasync/core/digests.py).

Every key is placed by a 64-bit hash; a `Bucket` is the set of keys whose hash starts with
`prefix` (its top `depth` bits). Summaries travel compactly: for one bucket, the counts of
its 2**fanout children and their digests as one byte string (8 bytes per child), so a
summary of 1,024 children weighs about 10 KB.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

MAX_FANOUT_BITS = 12  # children per summarised bucket: at most 4,096
MAX_BUCKETS = 4096  # buckets one question may name
DIGEST_BYTES = 8


class Bucket(msgspec.Struct, frozen=True, array_like=True):
    """The keys whose 64-bit hash starts with the `depth`-bit `prefix`."""

    depth: Annotated[int, msgspec.Meta(ge=0, le=64)]
    prefix: Annotated[int, msgspec.Meta(ge=0)]  # < 2**depth; msgspec cannot bound at 2**64


class Children(msgspec.Struct, frozen=True, array_like=True):
    """The summary of a bucket's 2**fanout children: their counts and digests in order."""

    bucket: Bucket
    counts: list[int]
    digests: bytes  # DIGEST_BYTES per child, child 0 first


class Entries(msgspec.Struct, frozen=True, array_like=True):
    """Keys and their versions (parallel lists), sorted by key."""

    keys: list[str]
    versions: list[int]


Buckets = Annotated[list[Bucket], msgspec.Meta(max_length=MAX_BUCKETS)]
FanoutBits = Annotated[int, msgspec.Meta(ge=1, le=MAX_FANOUT_BITS)]
