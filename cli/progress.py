"""A live one-line status for long-running loops (server run, terminal run)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

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
            live.update(Text(f"{label}: {stats}"))

        yield update


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM, so a run loop ends cleanly and reports."""
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set():  # a second Ctrl-C: the user means it
            raise KeyboardInterrupt
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


@contextmanager
def cancel_on_signals() -> Iterator[threading.Event]:
    """`stop_on_signals` for one call: an event set by SIGINT or SIGTERM while the block
    runs (a second Ctrl-C interrupts), the previous handlers put back after it. Off the
    main thread (a command run by another program's thread) signals cannot be caught:
    the event is never set, and Ctrl-C interrupts as it always did."""
    if threading.current_thread() is not threading.main_thread():
        yield threading.Event()
        return
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop_on_signals()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
