"""A till's status, sent up to the server periodically and when its pending counts change.

`TerminalStatus` travels as a request (`req.<terminal>.status` to `cajasync.requests`,
tag `status`); the server keeps the latest per terminal and answers nothing
(inbox/status.py). Every field but the terminal and the moment has a default, so a status
from a newer till with more fields still decodes on an older server and the other way
round.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import msgspec

from schemas.envelope import TerminalId

Count = Annotated[int, msgspec.Meta(ge=0)]


class TerminalStatus(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="status", omit_defaults=True
):
    """What a running till reports of itself.

    `pending` counts outbox rows not acknowledged by state (`pending`, `sent`,
    `rejected`); `oldest_pending` is the `recorded_at` of the oldest of them. `streams`
    maps each down stream the till holds to its last applied seq. `last_pull_at` and
    `last_pull_status` describe its last pull (`requested`, `images`, `done`).
    """

    terminal: TerminalId
    sent_at: dt.datetime
    version: str = ""
    location: str = ""
    pos: str = ""
    terminal_kind: str = ""
    pending: dict[str, Count] = {}
    oldest_pending: dt.datetime | None = None
    streams: dict[str, Count] = {}
    last_pull_at: dt.datetime | None = None
    last_pull_status: str = ""

    @property
    def pending_total(self) -> int:
        return sum(self.pending.values())
