"""Server and terminal roles as separate processes, started before the clock, released together."""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from multiprocessing.context import SpawnProcess
from multiprocessing.synchronize import Event

from bench.common import BROKER_URL
from cajasync.core.db import make_engine
from cajasync.core.settings import load_settings


def _local(stop: Event) -> threading.Event:
    """The loops stop on a threading.Event: one set when the fleet's process event is."""
    local = threading.Event()

    def bridge() -> None:
        stop.wait()
        local.set()

    threading.Thread(target=bridge, daemon=True).start()
    return local


def _ingest(url: str, start: Event, stop: Event) -> None:
    from inbox.ingest import run_ingest

    start.wait()
    run_ingest(make_engine(url), load_settings(broker_url=BROKER_URL), stop=_local(stop))


def _requests(url: str, start: Event, stop: Event) -> None:
    """Connected before the clock, as a running server is when a till asks."""
    from inbox.requests import run_requests

    run_requests(make_engine(url), load_settings(broker_url=BROKER_URL), stop=_local(stop))


def _feed(url: str, start: Event, stop: Event) -> None:
    from outbox.feed_relay import run_feed_relay

    start.wait()
    run_feed_relay(make_engine(url), load_settings(broker_url=BROKER_URL), stop=_local(stop))


def _terminal(path: str, start: Event, stop: Event) -> None:
    from cajasync.processes.terminal import run_terminal

    engine = make_engine(path)
    start.wait()
    run_terminal(engine, load_settings(broker_url=BROKER_URL), stop=_local(stop))


def _bare_consumer(url: str, start: Event, stop: Event) -> None:
    from bench.bare import consumer

    consumer(url, start, stop)


def _bare_publisher(path: str, start: Event, stop: Event) -> None:
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

    def __init__(self, roles: list[tuple[str, str]], warmup_s: float = 3.0) -> None:
        ctx = mp.get_context("spawn")
        self.start, self.stop = ctx.Event(), ctx.Event()
        self.procs: list[SpawnProcess] = [
            ctx.Process(target=ROLES[role], args=(target, self.start, self.stop), daemon=True)
            for role, target in roles
        ]
        for proc in self.procs:
            proc.start()
        time.sleep(warmup_s)  # imports and database opening happen before the clock

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
