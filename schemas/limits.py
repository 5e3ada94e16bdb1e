"""Limits every edge enforces: what the server store holds and what one message may weigh.

`outbox.record` refuses an operation beyond them before writing anything, and the server
rejects (dead-letters with the reason) a message beyond them, with the same numbers.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

MAX_OP_BYTES: Final = 1024 * 1024
"""The largest operation message (its encoded envelope) the server decodes: 1 MiB."""

ENVELOPE_ROOM: Final = 4 * 1024
"""Room kept for the envelope around an operation (terminal, seq, ids, times): far more
than it takes, so an operation of at most MAX_OPERATION_BYTES always fits MAX_OP_BYTES."""

MAX_OPERATION_BYTES: Final = MAX_OP_BYTES - ENVELOPE_ROOM
"""The largest encoded operation `record()` accepts."""

MAX_INT: Final = 2**31 - 1
"""The largest seq, version and chunk count: the server stores them as 32-bit integers."""

MAX_SIZE: Final = 2**63 - 1
"""The largest weekly file size: a 64-bit integer on the server."""

MONEY_PLACES: Final = 2
"""Decimal places of an amount in the currency; quantities and tax rates may have more."""

AMOUNT_DIGITS: Final = 16
"""Digits of a stored amount, cents included: the server's amount column is NUMERIC(16, 2)."""

MAX_AMOUNT: Final = Decimal(10) ** (AMOUNT_DIGITS - MONEY_PLACES)
"""Every amount is below this (10^14) in absolute value, once rounded to cents."""
