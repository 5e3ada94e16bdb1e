"""A store day against the configured broker: one server, three tills, one network cut.

Everything runs in this process on embedded SQLite files under one directory; the broker
is the real RabbitMQ. The library part is here; `cli/demo.py` draws it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cajasync.broker.management import apply_policies
from cajasync.broker.rabbitmq import blocking_channel
from cajasync.core import topology
from cajasync.core.db import make_engine
from cajasync.core.identity import TerminalIdentity
from cajasync.core.settings import Settings, first_url
from cajasync.core.terminal_tables import ACKED, outbox
from cajasync.errors import BrokerUnavailable, ConfigError
from cajasync.samples import backoffice as backoffice
from cajasync.samples.netcut import NetCut
from cajasync.samples.simulate import PosSimulator
from outbox.views import count_operations
from schemas.topics import UP_TOPICS, WEEKLY_FILES

log = logging.getLogger(__name__)


class TopicRow(msgspec.Struct, frozen=True):
    terminal: str
    topic: str
    recorded: int  # distinct operations recorded on the terminal
    held: int  # operations the server holds for it
    pending: int  # outbox rows not yet acked


@dataclass
class DemoTerminal:
    identity: TerminalIdentity
    engine: Engine
    sales: int
    payments: int
    settings: Settings
    netcut: NetCut | None = None
    sold: int = 0
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def online(self) -> bool:
        return self.netcut is None or self.netcut.online


@dataclass
class DemoPlan:
    sales_per_terminal: int = 120
    payments_per_terminal: int = 6
    sale_pause_s: float = 0.1
    offline_from: float = 0.3  # fraction of the day when the cut till goes offline
    offline_until: float = 0.7
    settle_timeout_s: float = 90.0


@dataclass
class DemoState:
    """What the display reads while the day runs."""

    terminals: list[DemoTerminal]
    server_engine: Engine
    office: backoffice.BackOffice
    phase: str = "opening"
    events: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.events.append(f"{time.strftime('%H:%M:%S')} {text}")


def preflight(settings: Settings) -> None:
    """BrokerUnavailable, in one line with how to start one, when no broker answers."""
    with blocking_channel(settings.broker_url, doing="starting the demo"):
        pass


def run_demo(
    directory: Path,
    settings: Settings,
    *,
    plan: DemoPlan | None = None,
    on_tick: Callable[[DemoState], None] | None = None,
) -> DemoResult:
    """Run the store day; return the final tables: operations up, replicas down."""
    from cajasync.processes.server import serve
    from cajasync.processes.server_init import init_server
    from cajasync.processes.terminal import run_terminal
    from cajasync.processes.terminal_init import init_terminal
    from inbox.zreconcile import z_report

    plan = plan or DemoPlan()
    preflight(settings)
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.db*"):
        old.unlink()
    server_url = f"sqlite:///{directory / 'server.db'}"
    init_server(server_url, settings, policies=False)
    try:  # the demo runs without the management API too: the policies are for operators
        apply_policies(settings)
    except (BrokerUnavailable, ConfigError) as exc:
        log.warning("no dead-letter policy on cajasync.requests: %s", exc)
    server_engine = make_engine(server_url)
    backoffice.seed(server_engine)
    stop = threading.Event()
    server = threading.Thread(
        target=serve, args=(server_engine, settings), kwargs={"stop": stop}, daemon=True
    )
    server.start()
    _wait_published(server_engine)  # the seed's change log goes out before any till exists
    run_tag = uuid.uuid4().hex[:4].upper()
    kinds = ["retail", "restaurant", "hotel"]
    terminals = []
    for n, kind in enumerate(kinds, start=1):
        identity = TerminalIdentity(f"T{n}-{run_tag}", "L1", f"PV{n}", kind)
        engine = init_terminal(str(directory / f"{identity.terminal}.db"), identity, settings)
        terminals.append(
            DemoTerminal(
                identity, engine, plan.sales_per_terminal, plan.payments_per_terminal, settings
            )
        )
    cut_terminal = terminals[1]
    cut_terminal.netcut = _netcut_for(settings)
    cut_terminal.settings = settings.with_overrides(
        broker_url=_via(settings.broker_url, cut_terminal.netcut.port)
    )

    state = DemoState(
        terminals, server_engine, office=backoffice.BackOffice(server_engine, lambda _: None)
    )
    state.office.note = state.note
    for terminal in terminals:  # Obtener datos: from empty to stocked
        stocked = backoffice.stock_terminal(terminal.engine, settings)
        state.note(f"{terminal.identity.terminal} stocked: {stocked}")
        if on_tick:
            on_tick(state)
    workers = [server, threading.Thread(target=state.office.run, daemon=True)]
    workers += [
        threading.Thread(
            target=run_terminal, args=(t.engine, t.settings), kwargs={"stop": stop}, daemon=True
        )
        for t in terminals
    ]
    workers += [threading.Thread(target=_sell, args=(t, plan), daemon=True) for t in terminals]
    for worker in workers[1:]:
        worker.start()
    try:
        state.phase = "selling"
        state.note("store open: 3 tills selling")
        _day(state, cut_terminal, plan, on_tick)
        state.office.stop.set()
        state.phase = "settling"
        state.note("day over: waiting for every till to be acknowledged and up to date")
        changes = len(state.office.changed)
        _wait(
            lambda: (
                all(
                    _pending(t.engine) == 0 and state.office.seen_by(t.engine) == changes
                    for t in terminals
                )
                and not z_report(server_engine, state="waiting")
            ),
            plan.settle_timeout_s,
            state,
            on_tick,
        )
        state.phase = "closed"
        if on_tick:
            on_tick(state)
    finally:
        stop.set()
        state.office.stop.set()
        for worker in workers:
            worker.join(timeout=5)
        cut_terminal.netcut.close()
        _delete_queues(settings, terminals)
    return DemoResult(
        closes=z_report(server_engine),
        operations=final_table(state),
        replicas=backoffice.replica_rows(
            server_engine, [(t.identity.terminal, t.engine) for t in terminals], state.office
        ),
    )


class DemoResult(msgspec.Struct, frozen=True):
    operations: list[TopicRow]
    replicas: list[backoffice.ReplicaRow]
    closes: list[dict[str, Any]]  # every Z close as `server z-report` lists it


def _wait_published(server: Engine, timeout: float = 60) -> None:
    from cajasync.core.server_tables import change_log

    deadline = time.monotonic() + timeout
    query = sa.select(sa.func.count()).where(change_log.c.published_at.is_(None))
    while time.monotonic() < deadline:
        with server.connect() as connection:
            if connection.execute(query).scalar_one() == 0:
                return
        time.sleep(0.2)


def _day(
    state: DemoState,
    cut_terminal: DemoTerminal,
    plan: DemoPlan,
    on_tick: Callable[[DemoState], None] | None,
) -> None:
    assert cut_terminal.netcut is not None
    while not all(t.done.is_set() for t in state.terminals):
        progress = cut_terminal.sold / max(1, cut_terminal.sales)
        if cut_terminal.netcut.online and plan.offline_from <= progress < plan.offline_until:
            cut_terminal.netcut.cut()
            state.note(
                f"{cut_terminal.identity.terminal} lost its network: it keeps selling offline"
            )
        elif not cut_terminal.netcut.online and progress >= plan.offline_until:
            cut_terminal.netcut.restore()
            state.note(f"{cut_terminal.identity.terminal} is back online: catching up")
        if on_tick:
            on_tick(state)
        time.sleep(0.2)
    if not cut_terminal.netcut.online:
        cut_terminal.netcut.restore()
        state.note(f"{cut_terminal.identity.terminal} is back online: catching up")


def _sell(terminal: DemoTerminal, plan: DemoPlan) -> None:
    pos = PosSimulator(terminal.engine, seed=hash(terminal.identity.terminal) & 0xFFFF)
    rng = random.Random(terminal.identity.terminal)
    sold: list[uuid.UUID] = []
    payment_every = max(1, terminal.sales // max(1, terminal.payments))
    for n in range(terminal.sales):
        sold.append(pos.sale().op_id)
        terminal.sold = n + 1
        if n % payment_every == payment_every - 1:
            pos.cash_payment()
        if n % 40 == 39:
            pos.void(sold[rng.randrange(len(sold))])
        time.sleep(plan.sale_pause_s * rng.uniform(0.5, 1.5))
    pos.z_close()
    pos.weekly_file(200_000)
    terminal.done.set()


def _wait(
    done: Callable[[], bool],
    timeout: float,
    state: DemoState,
    on_tick: Callable[[DemoState], None] | None,
) -> None:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        if on_tick:
            on_tick(state)
        time.sleep(0.25)


def _pending(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                sa.select(sa.func.count()).where(outbox.c.state != ACKED)
            ).scalar_one()
        )


def terminal_counts(terminal: DemoTerminal) -> dict[str, dict[str, int]]:
    """Per topic: distinct operations recorded, rows by state."""
    query = sa.select(
        outbox.c.topic,
        outbox.c.state,
        sa.func.count(),
        sa.func.count(sa.distinct(outbox.c.op_id)),
    ).group_by(outbox.c.topic, outbox.c.state)
    counts: dict[str, dict[str, int]] = {}
    with terminal.engine.connect() as connection:
        for topic, row_state, rows, _ops in connection.execute(query):
            counts.setdefault(topic, {})[row_state] = int(rows)
        for topic, ops in connection.execute(
            sa.select(outbox.c.topic, sa.func.count(sa.distinct(outbox.c.op_id))).group_by(
                outbox.c.topic
            )
        ):
            counts.setdefault(topic, {})["operations"] = int(ops)
    return counts


def final_table(state: DemoState) -> list[TopicRow]:
    from inbox.ingest import server_stats

    held = {
        row["terminal"]: row["topics"] for row in server_stats(state.server_engine)["terminals"]
    }
    rows = []
    for terminal in state.terminals:
        counts = terminal_counts(terminal)
        # the server counts a weekly file once, however many chunks it travelled in
        recorded_files = count_operations(terminal.engine, WEEKLY_FILES)
        for topic in UP_TOPICS:
            by_state = counts.get(topic, {})
            rows.append(
                TopicRow(
                    terminal=terminal.identity.terminal,
                    topic=topic,
                    recorded=recorded_files
                    if topic == WEEKLY_FILES
                    else by_state.get("operations", 0),
                    held=held.get(terminal.identity.terminal, {}).get(topic, 0),
                    pending=sum(v for k, v in by_state.items() if k not in ("operations", ACKED)),
                )
            )
    return rows


def _netcut_for(settings: Settings) -> NetCut:
    parts = urlsplit(first_url(settings.broker_url))  # a cluster: the cut is to its first node
    return NetCut(parts.hostname or "localhost", parts.port or 5672)


def _via(url: str, port: int) -> str:
    parts = urlsplit(first_url(url))
    credentials = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{credentials}127.0.0.1:{port}"))


def _delete_queues(settings: Settings, terminals: list[DemoTerminal]) -> None:
    try:
        with blocking_channel(settings.broker_url, doing="removing the demo queues") as channel:
            for terminal in terminals:
                channel.queue_delete(topology.terminal_queue(terminal.identity.terminal))
    except BrokerUnavailable:
        log.warning(
            "could not remove the demo queues; delete cajasync.t.*-%s by hand",
            terminals[0].identity.terminal[-4:],
        )
