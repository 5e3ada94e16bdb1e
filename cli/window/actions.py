"""The window's actions, run in threads: the same library calls as the commands.

* Obtener datos      `cajasync pull TOPIC [--images] [--combo-products] [--location L]
                     [--key K ...] [--full]`  → cajasync.processes.pull.pull
* Transmitir         `cajasync terminal run --until-idle 10` → run_terminal(until_idle=...),
                     stopped as soon as what was pending is acknowledged
* Actualizar Datos   `cajasync pull --all`, then `cajasync compare`

Every action takes a `cancel` event (the window's Cancelar) and reports its progress;
what a cancelled action already applied stays applied. Work runs in daemon threads of
our own, not Textual's thread workers: a thread worker runs in asyncio's default
executor, which the event loop waits for on exit, so a question to a silent server would
hold the window open for its whole timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar

from rich.filesize import decimal

from cajasync.core.db import reading
from cajasync.core.terminal_tables import PENDING, SENT
from cajasync.errors import CajasyncError
from cajasync.processes.till_status import pending_counts
from cli.window.context import WindowContext
from cli.window.menu import label, number

if TYPE_CHECKING:  # the pull and the relay load when an action first runs
    from cajasync.processes.pull import PullResult
    from cajasync.processes.terminal import RelayStats

log = logging.getLogger(__name__)

TRANSMIT_IDLE_S: Final = 10.0  # Transmitir gives up waiting once nothing moved this long
PULL_TIMEOUT_S: Final = 600.0

T = TypeVar("T")


def explain(exc: BaseException) -> str:
    """What went wrong, for a message in the window: a cajasync error's own words, else
    the kind of error and its text (never a traceback; that goes to the log)."""
    if isinstance(exc, CajasyncError):
        return str(exc)
    log.error("unexpected error in the window", exc_info=exc)
    return f"error inesperado ({type(exc).__name__}): {exc}"


def in_thread(
    name: str,
    work: Callable[[], T],
    done: Callable[[T], None],
    failed: Callable[[BaseException], None],
    post: Callable[..., Any],
) -> threading.Thread:
    """Run `work` in a daemon thread; `done(result)` or `failed(error)` then run on the
    window's loop through `post` (the app's call_from_thread, safe once it has closed)."""

    def run() -> None:
        try:
            result = work()
        except BaseException as exc:
            post(failed, exc)
        else:
            post(done, result)

    thread = threading.Thread(target=run, name=f"window-{name}", daemon=True)
    thread.start()
    return thread


@dataclass(frozen=True)
class PullChoice:
    """What "Obtener datos" / "Actualizar Datos" asks for (None: every topic)."""

    topics: list[str] | None
    images: bool = False
    combo_products: bool = False
    location: str | None = None
    keys: tuple[str, ...] = ()
    full: bool = False

    def title(self) -> str:
        if self.topics is None:
            return "Actualizar Datos"
        return "Obtener datos: " + ", ".join(label(topic) for topic in self.topics)


def run_pull(
    ctx: WindowContext,
    choice: PullChoice,
    cancel: threading.Event,
    on_progress: Callable[[int, int, int, int], None],
) -> PullResult:
    """`cajasync pull` with the window's choices."""
    from cajasync.processes.pull import pull

    return pull(
        ctx.engine,
        ctx.settings,
        choice.topics,
        images=choice.images,
        full=choice.full,
        combo_products=choice.combo_products,
        keys=choice.keys,
        location=choice.location,
        timeout=PULL_TIMEOUT_S,
        on_progress=on_progress,
        cancel=cancel,
    )


@dataclass(frozen=True)
class Transmitted:
    """What Transmitir did: the relay's counters, the operations it had to settle, those
    still not acknowledged after it, and whether Cancelar stopped it."""

    stats: RelayStats
    to_settle: int
    pending: int
    cancelled: bool


def run_transmit(
    ctx: WindowContext, cancel: threading.Event, on_progress: Callable[[RelayStats], None]
) -> Transmitted:
    """`cajasync terminal run --until-idle`: publish what is pending and apply the
    server's receipts until every operation pending at the start is settled (acknowledged
    or refused), nothing moved for TRANSMIT_IDLE_S, or `cancel` is set."""
    from cajasync.processes.terminal import RelayStats, run_terminal

    to_settle = _unsettled(ctx)
    if not to_settle:
        return Transmitted(RelayStats(), 0, _not_acked(ctx), cancelled=False)
    settled = threading.Event()

    def progress(stats: RelayStats) -> None:
        on_progress(stats)
        if stats.acked + stats.rejected >= to_settle:
            settled.set()
            cancel.set()  # this run's own stop: the action's event, new for every action

    stats = run_terminal(
        ctx.engine, ctx.settings, until_idle=TRANSMIT_IDLE_S, stop=cancel, on_progress=progress
    )
    cancelled = cancel.is_set() and not settled.is_set()
    return Transmitted(stats, to_settle, _not_acked(ctx), cancelled=cancelled)


def _unsettled(ctx: WindowContext) -> int:
    """Operations waiting to be sent or for their receipt."""
    with reading(ctx.engine) as connection:
        counts, _oldest = pending_counts(connection)
    return counts.get(PENDING, 0) + counts.get(SENT, 0)


def _not_acked(ctx: WindowContext) -> int:
    with reading(ctx.engine) as connection:
        counts, _oldest = pending_counts(connection)
    return sum(counts.values())


@dataclass
class Progress:
    """A running action's progress: `done` of `total` units (None: not known in advance),
    bytes and images where they apply, and the ETA from the rate so far."""

    unit: str
    total: int | None = None
    done: int = 0
    bytes: int = 0
    images: int = 0
    image_bytes: int = 0
    extra: str = ""
    started: float = field(default_factory=time.monotonic)

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left at the rate so far; None when the total or the rate is unknown."""
        if self.total is None or self.done <= 0:
            return None
        elapsed = (now or time.monotonic()) - self.started
        left = max(self.total - self.done, 0)
        return left * elapsed / self.done

    def describe(self) -> str:
        of = f" de {number(self.total)}" if self.total is not None else ""
        parts = [f"{number(self.done)}{of} {self.unit}"]
        if self.bytes:
            parts.append(decimal(self.bytes))
        if self.images:
            parts.append(f"{number(self.images)} imágenes ({decimal(self.image_bytes)})")
        if self.extra:
            parts.append(self.extra)
        eta = self.eta()
        parts.append("ETA —" if eta is None else f"ETA {eta:.0f} s")
        return " · ".join(parts)


def pull_message(choice: PullChoice, result: PullResult) -> str:
    """What a pull brought, in words."""
    what = f"{number(result.records)} registros ({decimal(result.bytes)})"
    if choice.images:
        what += f" y {number(result.images)} imágenes ({decimal(result.image_bytes)})"
    kind = " (instantánea completa)" if result.full else ""
    where = f" de la ubicación {result.location}" if result.location else ""
    lines = [f"{choice.title()}{where}{kind}: {what} en {result.seconds:.1f} s"]
    if result.removed:
        lines.append(f"se quitaron {number(result.removed)} registros que el servidor ya no tiene")
    if result.missing_keys:
        lines.append(f"no están en el servidor: {', '.join(result.missing_keys)}")
    return "; ".join(lines)


def cancelled_message(title: str, records: int, images: int) -> str:
    kept = f"{number(records)} registros"
    if images:
        kept += f" y {number(images)} imágenes"
    return (
        f"{title}: cancelado. Se conserva lo que llegó ({kept}, ya aplicado); "
        "volver a pedirlo completa lo que falta"
    )


def transmit_message(done: Transmitted) -> str:
    """What Transmitir did, and what is still pending."""
    stats = done.stats
    if not done.to_settle:
        return "Transmitir: no hay operaciones para enviar" + (
            f" ({number(done.pending)} rechazadas: ver Operaciones Pendientes)"
            if done.pending
            else ""
        )
    head = "Transmitir: detenido" if done.cancelled else "Transmitir"
    said = (
        f"{head}: {number(stats.confirmed)} enviadas al broker, "
        f"{number(stats.acked)} acusadas por el servidor"
    )
    if stats.rejected:
        said += f", {number(stats.rejected)} rechazadas (ver Operaciones Pendientes)"
    if done.pending:
        said += f"; {number(done.pending)} siguen pendientes"
        if not stats.acked:
            said += " (¿está `cajasync server run` en marcha?)"
    else:
        said += "; no queda nada pendiente"
    return said
