"""The tagged unions, one per direction of each queue, decoded once (schemas/codec.py)."""

from __future__ import annotations

from schemas.envelope import Receipt, ReplayRequest
from schemas.feed import (
    CatchUpRequest,
    ChangeEvent,
    HighWaterMark,
    HighWaterRequest,
    ImageData,
    ImageRequest,
    ImagesDone,
    RawSnapshotPage,
    SnapshotDone,
    SnapshotPage,
    SnapshotRequest,
)
from schemas.status import TerminalStatus

# What a terminal's queue `cajasync.t.<terminal>` receives (tag field: `kind`).
DownMessage = (
    Receipt
    | ReplayRequest
    | ChangeEvent
    | SnapshotPage
    | SnapshotDone
    | ImageData
    | ImagesDone
    | HighWaterMark
)

# What `cajasync.requests` receives from terminals (tag field: `kind`).
# A TerminalStatus is answered by nothing: the server keeps the latest (inbox/status.py).
Request = SnapshotRequest | CatchUpRequest | ImageRequest | HighWaterRequest | TerminalStatus

# The same, as the terminal relay decodes it: snapshot pages keep their records encoded.
# A HighWaterMark is not among them: only `terminal init` / `recover` wait for one
# (cajasync/processes/recover.py), holding the relay's messages back meanwhile.
TerminalInbox = (
    Receipt | ReplayRequest | ChangeEvent | RawSnapshotPage | SnapshotDone | ImageData | ImagesDone
)
