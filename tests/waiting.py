"""One way for a test to wait: poll a condition, fail naming what it waited for.

A test that runs loops in threads or processes passes them as `watched` (anything with a
`check()` that raises when the loop died): the wait then fails at once with the loop's own
error instead of timing out a minute later.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

WAIT_S = 60.0  # generous: a condition that holds is seen within a second or two


class Watched(Protocol):
    def check(self) -> None:
        """Raise when the watched loop has died."""


def wait_for(
    condition: Callable[[], bool],
    what: str,
    *watched: Watched,
    timeout: float = WAIT_S,
    interval: float = 0.05,
) -> None:
    """Poll `condition` until it holds; fail naming `what` after `timeout` seconds, or as
    soon as one of `watched` dies."""
    deadline = time.monotonic() + timeout
    while True:
        for loop in watched:
            loop.check()
        if condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
