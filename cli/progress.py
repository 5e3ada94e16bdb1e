"""A live one-line status for long-running loops (server run, terminal run)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
from rich.live import Live
from rich.text import Text

from cli.output import console


@contextmanager
def live_stats(label: str) -> Iterator[Callable[[Any], None]]:
    """Yield an `on_progress` callback that refreshes a status line with the stats it gets."""
    if not console.is_terminal:
        yield lambda _stats: None
        return
    with Live(Text(f"{label}: starting…"), console=console, refresh_per_second=4) as live:

        def update(stats: Any) -> None:
            fields = (
                msgspec.structs.asdict(stats) if isinstance(stats, msgspec.Struct) else vars(stats)
            )
            live.update(Text(f"{label}: " + "  ".join(f"{k} {v}" for k, v in fields.items())))

        yield update
