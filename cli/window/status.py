"""The status bar: broker connection, relay, pending operations, last pull, replica lag.

`probe(ctx)` runs in a thread every few seconds and costs one AMQP round trip (a passive
declare of the till's own queue, which also says how many consume it: a running `cajasync
terminal run`, or a pull) and a few small reads of the till's database (`read_status`,
what `cajasync terminal status` shows, and the relay's last activity). The replica's lag
is what the last `compare` found missing on the till among the download topics.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.text import Text

from cajasync.core.db import reading
from cajasync.errors import CajasyncError
from cajasync.processes.till_status import last_activity, read_status
from cli.filters import age
from cli.window.context import WindowContext
from cli.window.menu import number

if TYPE_CHECKING:
    from cajasync.processes.questions import Comparison


@dataclass(frozen=True)
class Health:
    """One probe of the till: `broker_error` is None when the broker answered."""

    broker_error: str | None
    consumers: int | None  # on the till's queue; None when the broker did not answer
    last_activity: dt.datetime | None
    pending: int
    oldest_pending: dt.datetime | None
    last_pull_at: dt.datetime | None
    last_pull_status: str
    at: dt.datetime


def probe(ctx: WindowContext) -> Health:
    """The till's health now (database first: it answers even when the broker does not)."""
    from cajasync.broker.queues import terminal_queue

    status = read_status(ctx.engine, ctx.identity)
    with reading(ctx.engine) as connection:
        activity = last_activity(connection)
    broker_error: str | None = None
    consumers: int | None = None
    try:
        queue = terminal_queue(ctx.settings, ctx.identity.terminal)
        consumers = 0 if queue is None else queue.consumers
    except CajasyncError as exc:
        broker_error = str(exc)
    return Health(
        broker_error=broker_error,
        consumers=consumers,
        last_activity=activity,
        pending=sum(status.pending.values()),
        oldest_pending=status.oldest_pending,
        last_pull_at=status.last_pull_at,
        last_pull_status=status.last_pull_status,
        at=dt.datetime.now(dt.UTC),
    )


def relay_running(health: Health, own_sessions: int) -> bool | None:
    """Whether a relay (`terminal run`) consumes the till's queue besides the window's own
    session (a running Obtener datos / Transmitir consumes it too); None: unknown."""
    if health.consumers is None:
        return None
    return health.consumers - own_sessions > 0


def replica_lag(comparison: Comparison | None) -> str:
    """Records the server holds that the till lacks, per the last compare."""
    if comparison is None:
        return "—"
    missing = sum(
        max(row.server - row.terminal, 0) for row in comparison.topics if row.direction == "down"
    )
    return "al día" if missing == 0 else f"{number(missing)} registros por bajar"


def render(
    health: Health | None,
    own_sessions: int,
    comparison: Comparison | None,
    tz: dt.tzinfo,
    now: dt.datetime | None = None,
) -> Text:
    """The status bar's line."""
    if health is None:
        return Text("Broker: comprobando… · Relay: … · Pendientes: …", style="dim")
    now = now or dt.datetime.now(dt.UTC)
    text = Text()
    if health.broker_error is None:
        text.append("Broker: conectado", style="green")
    else:
        text.append("Broker: sin conexión", style="bold red")
    text.append(" · ")
    activity = _ago(health.last_activity, now)
    running = relay_running(health, own_sessions)
    if running is None:
        text.append(f"Relay: desconocido (última actividad {activity})", style="yellow")
    elif running:
        text.append(f"Relay: activo (última actividad {activity})", style="green")
    else:
        text.append(f"Relay: detenido (última actividad {activity})", style="yellow")
    text.append(" · ")
    pending = f"Pendientes: {number(health.pending)}"
    if health.oldest_pending is not None:
        pending += f" (la más antigua {_ago(health.oldest_pending, now)})"
    text.append(pending, style="bold yellow" if health.pending else "")
    text.append(" · ")
    pulled = "nunca"
    if health.last_pull_at is not None:
        pulled = health.last_pull_at.astimezone(tz).strftime("%d/%m %H:%M")
        if health.last_pull_status and health.last_pull_status != "done":
            pulled += f" ({health.last_pull_status})"
    text.append(f"Última bajada: {pulled}")
    text.append(" · ")
    text.append(f"Réplica: {replica_lag(comparison)}")
    return text


def _ago(moment: dt.datetime | None, now: dt.datetime) -> str:
    if moment is None:
        return "nunca"
    return f"hace {age(max((now - moment).total_seconds(), 0.0))}"
