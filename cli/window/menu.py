"""The options list: which options a till has, their Spanish labels as in the seed, and
each one's line (terminal count, server count, a mark when they differ).

Counts come from two places: the till's own database (`local_counts`, re-read every few
seconds, so they move while a relay or the change feed works) and the server's answer to
the last `compare`. A difference is marked when the live till count differs from the
server's, unless compare found them equal for a reason (operations purged on this till)
and the till's count has not moved since.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from rich.text import Text

from cajasync.core.identity import TerminalIdentity
from cli.window.context import CONFIG, PENDING
from schemas.topics import DOWN_TOPIC_SCOPES, TABLE_KINDS, TABLE_TOPICS, UP_TOPICS

if TYPE_CHECKING:
    from cajasync.processes.questions import Comparison, TopicComparison

LABELS: Final[dict[str, str]] = {
    CONFIG: "Configuración",
    "productos": "Productos",
    "clientes": "Clientes",
    "plan-de-cuentas": "Plan de Cuenta",
    "formas-de-pago": "Formas de Pago",
    "bancos-tarjetas": "Banco Tarjeta",
    "proveedores": "Proveedores",
    "talonarios": "Talonarios",
    "vendedores": "Vendedores",
    "stock": "Stock Productos",
    "combos": "Combos",
    "ofertas": "Ofertas",
    "noticias": "Noticias/Publicidad",
    "mesas": "Mesas/Habitaciones",
    "ventas": "Ventas",
    "pagos": "Pagos",
    "cierres-z": "Cierre Z",
    "archivos-semanales": "Archivo Semanal",
    PENDING: "Operaciones Pendientes",
}
LABEL_WIDTH: Final = 22
COUNT_WIDTH: Final = 9
WAITING: Final = "…"  # the server has not answered yet
NO_ANSWER: Final = "?"  # the server did not answer


def options_of(identity: TerminalIdentity) -> list[str]:
    """Configuración, the download topics this till receives (tables only on restaurants
    and hotels), the up topics, Operaciones Pendientes: the seed's drop-down, in order.

    The download topics are `cajasync.processes.pull.pull_topics(identity, None)`, spelled
    out so the window paints before it imports the pull's machinery (a test holds them
    equal)."""
    down = [t for t in DOWN_TOPIC_SCOPES if t not in TABLE_TOPICS or identity.kind in TABLE_KINDS]
    return [*down, *UP_TOPICS, PENDING]


def is_down(option: str) -> bool:
    """Whether "Obtener datos" applies (Configuración and every download topic)."""
    return option in DOWN_TOPIC_SCOPES


def is_up(option: str) -> bool:
    """Whether "Transmitir" applies (the up topics and Operaciones Pendientes)."""
    return option in UP_TOPICS or option == PENDING


def is_topic(option: str) -> bool:
    """Whether the option is a topic compare counts and diff compares record by record."""
    return option != PENDING


def label(option: str) -> str:
    return LABELS.get(option, option)


def header() -> Text:
    """The list's column titles."""
    text = Text(f"{'Opción':<{LABEL_WIDTH}}", style="bold")
    text.append(f"{'Caja':>{COUNT_WIDTH}}{'Servidor':>{COUNT_WIDTH}}", style="bold")
    return text


@dataclass
class Counts:
    """What the window knows of the counts: the till's (live), the server's (last compare,
    or why there is none), and the pending operations."""

    local: dict[str, int] | None = None
    pending: int | None = None
    comparison: Comparison | None = None
    compare_error: str | None = None
    compared_local: dict[str, int] | None = None  # the till's counts when compare answered

    def terminal(self, option: str) -> int | None:
        if option == PENDING:
            return self.pending
        return None if self.local is None else self.local.get(option)

    def server_row(self, option: str) -> TopicComparison | None:
        if self.comparison is None:
            return None
        return next((row for row in self.comparison.topics if row.topic == option), None)

    def server(self, option: str) -> str:
        """The server's count as shown: a number, "…" before the first answer, "?" when the
        server did not answer, "—" where the server has none (Operaciones Pendientes)."""
        if not is_topic(option):
            return "—"
        row = self.server_row(option)
        if row is not None:
            return number(row.server)
        return NO_ANSWER if self.compare_error is not None else WAITING

    def differs(self, option: str) -> bool:
        row, here = self.server_row(option), self.terminal(option)
        if row is None or here is None:
            return False
        if row.equal and row.terminal == here:
            return False  # equal as compare explained it, and the till has not moved since
        return here != row.server

    def line(self, option: str) -> Text:
        """The option's line in the list: label, terminal count, server count, mark."""
        here = self.terminal(option)
        shown = WAITING if here is None else number(here)
        mark = "≠" if self.differs(option) else " "
        text = Text(f"{label(option):<{LABEL_WIDTH}}")
        text.append(f"{shown:>{COUNT_WIDTH}}")
        text.append(f"{self.server(option):>{COUNT_WIDTH}}", style="dim")
        text.append(f" {mark}", style="bold red" if mark != " " else "")
        return text


def number(value: int) -> str:
    """1234567 as `1.234.567` (the seed's locale)."""
    return f"{value:,}".replace(",", ".")
