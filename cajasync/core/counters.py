"""Loop counters as people read them: `published 120, confirmed 120, receipts 3`."""

from __future__ import annotations

from dataclasses import fields
from typing import Any


def counters_text(stats: Any) -> str:
    """The non-zero integer counters of a stats dataclass, in field order, by name; "nothing
    yet" when all are zero (what `terminal run`, `server run` and the feed relay print)."""
    parts = []
    for field in fields(stats):
        value = getattr(stats, field.name)
        if isinstance(value, int) and not isinstance(value, bool) and value:
            parts.append(f"{field.name.replace('_', ' ')} {value:,}")
    return ", ".join(parts) or "nothing yet"
