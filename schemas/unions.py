"""The tagged unions, one per direction of each queue, decoded once (schemas/codec.py)."""

from __future__ import annotations

from schemas.envelope import Receipt, ReplayReport, ReplayRequest, ReplaySales
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
from schemas.questions import (
    CountsQuestion,
    DigestQuestion,
    EntriesQuestion,
    HeldQuestion,
    RecordQuestion,
)
from schemas.status import TerminalStatus

# What a terminal's queue `cajasync.t.<terminal>` receives (tag field: `kind`).
DownMessage = (
    Receipt
    | ReplayRequest
    | ReplaySales
    | ChangeEvent
    | SnapshotPage
    | SnapshotDone
    | ImageData
    | ImagesDone
    | HighWaterMark
)

# What `cajasync.requests` receives from terminals (tag field: `kind`). Questions
# (schemas/questions.py) are answered to the asker's reply-to address, not to its queue;
# a TerminalStatus is answered by nothing: the server keeps the latest (inbox/status.py).
Request = (
    SnapshotRequest
    | CatchUpRequest
    | ImageRequest
    | HighWaterRequest
    | CountsQuestion
    | HeldQuestion
    | DigestQuestion
    | EntriesQuestion
    | RecordQuestion
    | ReplayReport
    | TerminalStatus
)

# The same, as the terminal relay decodes it: snapshot pages keep their records encoded.
# A HighWaterMark is not among them: only `terminal init` / `recover` wait for one
# (cajasync/processes/recover.py), holding the relay's messages back meanwhile.
TerminalInbox = (
    Receipt
    | ReplayRequest
    | ReplaySales
    | ChangeEvent
    | RawSnapshotPage
    | SnapshotDone
    | ImageData
    | ImagesDone
)
