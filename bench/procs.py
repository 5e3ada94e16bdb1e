"""Server and terminal roles as separate processes, started before the clock, released together.

Each role imports what it runs and opens its databases, says it is ready, and waits for the
clock (`Gate`): the fleet starts the clock once every process is ready, however long the
imports take on a loaded machine (a fixed warm-up let a slow machine's imports, 11 processes
on 2 cores, run on the clock).
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from multiprocessing.context import SpawnContext, SpawnProcess
from multiprocessing.synchronize import Event

from bench.common import BROKER_URL
from cajasync.core.db import make_engine
from cajasync.core.settings import load_settings


class Gate:
    """What every role is given: it says `ready()` once set up and `wait()`s for the clock;
    the fleet counts the ready ones and releases them all at once."""

    def __init__(self, ctx: SpawnContext) -> None:
        self._ready = ctx.Semaphore(0)
        self._go = ctx.Event()

    def ready(self) -> None:
        """This process is set up (imports done, databases open)."""
        self._ready.release()

    def wait(self) -> None:
        """Say ready, then wait for the clock."""
        self.ready()
        self._go.wait()

    def one_ready(self, timeout: float) -> bool:
        """One more process said it is ready within `timeout` seconds."""
        return self._ready.acquire(timeout=timeout)

    def set(self) -> None:
        self._go.set()


def _local(stop: Event) -> threading.Event:
    """The loops stop on a threading.Event: one set when the fleet's process event is."""
    local = threading.Event()

    def bridge() -> None:
        stop.wait()
        local.set()

    threading.Thread(target=bridge, daemon=True).start()
    return local


def _ingest(url: str, start: Gate, stop: Event) -> None:
    from inbox.ingest import run_ingest

    engine, settings = make_engine(url), load_settings(broker_url=BROKER_URL)
    start.wait()
    run_ingest(engine, settings, stop=_local(stop))


def _requests(url: str, start: Gate, stop: Event) -> None:
    """Connected before the clock, as a running server is when a till asks."""
    from inbox.requests import run_requests

    start.ready()
    run_requests(make_engine(url), load_settings(broker_url=BROKER_URL), stop=_local(stop))


def _feed(url: str, start: Gate, stop: Event) -> None:
    from outbox.feed_relay import run_feed_relay

    engine, settings = make_engine(url), load_settings(broker_url=BROKER_URL)
    start.wait()
    run_feed_relay(engine, settings, stop=_local(stop))


def _terminal(path: str, start: Gate, stop: Event) -> None:
    from cajasync.processes.terminal import run_terminal

    engine, settings = make_engine(path), load_settings(broker_url=BROKER_URL)
    start.wait()
    run_terminal(engine, settings, stop=_local(stop))


def _bare_consumer(url: str, start: Gate, stop: Event) -> None:
    from bench.bare import consumer

    consumer(url, start, stop)


def _bare_publisher(path: str, start: Gate, stop: Event) -> None:
    from bench.bare import publisher

    publisher(path, start, stop)


ROLES = {
    "ingest": _ingest,
    "requests": _requests,
    "feed": _feed,
    "terminal": _terminal,
    "bare_consumer": _bare_consumer,
    "bare_publisher": _bare_publisher,
}


class Fleet:
    """Processes started now, waiting on one event; `go()` releases them all at once."""

    def __init__(
        self, roles: list[tuple[str, str]], warmup_s: float = 3.0, ready_timeout: float = 300
    ) -> None:
        ctx = mp.get_context("spawn")
        self.start, self.stop = Gate(ctx), ctx.Event()
        self.procs: list[SpawnProcess] = [
            ctx.Process(target=ROLES[role], args=(target, self.start, self.stop), daemon=True)
            for role, target in roles
        ]
        for proc in self.procs:
            proc.start()
        self._wait_ready(ready_timeout)
        time.sleep(warmup_s)  # connections open and consumers start before the clock

    def _wait_ready(self, timeout: float) -> None:
        deadline, waiting = time.monotonic() + timeout, len(self.procs)
        while waiting:
            if self.start.one_ready(timeout=0.5):
                waiting -= 1
                continue
            dead = [proc.exitcode for proc in self.procs if proc.exitcode is not None]
            if dead:
                self.close()
                raise RuntimeError(
                    f"bench: a process exited while starting (exit codes {dead}); "
                    "its traceback is above"
                )
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(
                    f"bench: {waiting} of {len(self.procs)} processes not ready after "
                    f"{timeout:.0f}s"
                )

    def go(self) -> float:
        self.start.set()
        return time.perf_counter()

    def close(self) -> None:
        self.stop.set()
        self.start.set()
        for proc in self.procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
