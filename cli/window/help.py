"""The help screen (`?`): every key and button, its Spanish label, what it does, and the
English command it corresponds to, so what a technician does here can be repeated in a shell."""

from __future__ import annotations

from typing import ClassVar, Final

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

# (key, Spanish label, what it does, the command)
ENTRIES: Final[tuple[tuple[str, str, str, str], ...]] = (
    ("↑ ↓", "Opciones", "elegir una opción (Configuración, un tema, Operaciones Pendientes)", ""),
    (
        "o",
        "Obtener datos",
        "bajar a la caja los datos de la opción elegida (con Incluir Imágenes, sincronizar "
        "los productos del combo, Ubicación, Claves, completo)",
        "cajasync pull TOPIC [--images] [--combo-products]\n  [--location L] [--key K] [--full]",
    ),
    (
        "t",
        "Transmitir",
        "subir ya las operaciones pendientes y esperar el acuse del servidor "
        "(termina cuando todas están acusadas)",
        "cajasync terminal run --until-idle 10",
    ),
    (
        "a",
        "Actualizar Datos",
        "bajar las novedades de todos los temas de la caja y volver a contar",
        "cajasync pull --all; cajasync compare",
    ),
    (
        "escape",
        "Cancelar",
        "detener la acción en curso; lo que llegó se conserva",
        "Ctrl-C en `cajasync pull`",
    ),
    (
        "r",
        "Comparar",
        "contar otra vez los registros de la caja y del servidor (desde / hasta)",
        "cajasync compare [--since D] [--until D]",
    ),
    (
        "c, right click",
        "Comparar registros",
        "los registros exactos que difieren, cada uno en ambos lados",
        "cajasync diff TOPIC [--since D] [--until D]",
    ),
    (
        "f",
        "Desde / Hasta",
        "el filtro de fechas (AAAA-MM-DD o fecha y hora ISO, en la zona de la caja)",
        "",
    ),
    ("h", "Herramientas", "las herramientas de limpieza:", "cajasync tools"),
    (
        "",
        "  Depurar productos",
        "quitar los productos que el servidor ya no tiene",
        "cajasync tools prune productos",
    ),
    (
        "",
        "  Depurar clientes",
        "quitar los clientes que el servidor ya no tiene",
        "cajasync tools prune clientes",
    ),
    (
        "",
        "  Borrar operaciones sincronizadas",
        "borrar las operaciones ya acusadas (MASTER / ADMIN)",
        "cajasync tools purge-synced --user U",
    ),
    (
        "",
        "Operaciones Pendientes",
        "las operaciones que el servidor aún no acusó",
        "cajasync pending list",
    ),
    (
        "",
        "Ventas, Pagos, Cierre Z, Archivo Semanal",
        "las operaciones de la caja",
        "cajasync ventas --topic T",
    ),
    (
        "",
        "Barra de estado",
        "broker, relay, pendientes, última bajada, réplica",
        "cajasync terminal status",
    ),
    ("?", "Ayuda", "esta pantalla", "cajasync --help"),
    ("q", "Salir", "cerrar la ventana (antes cancela la acción en curso)", ""),
)


class HelpScreen(ModalScreen[None]):
    """Keys, buttons and the commands they correspond to."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 96%; height: 90%; border: thick $accent; background: $surface; padding: 0 1;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Cerrar"),
        Binding("question_mark", "close", "Cerrar", show=False),
        Binding("q", "close", "Cerrar", show=False),
    ]

    def compose(self) -> ComposeResult:
        table = Table(title="Ayuda: teclas, botones y comandos", expand=True, title_justify="left")
        table.add_column("tecla", no_wrap=True)
        table.add_column("botón / opción: qué hace", ratio=1)
        table.add_column("comando", style="cyan", no_wrap=True)
        for key, spanish, what, command in ENTRIES:
            entry = Text(spanish, style="bold")
            if what:
                entry.append(f"\n{what}", style="dim")
            table.add_row(key, entry, command)
        with VerticalScroll():
            yield Static(table, id="help-table")
            yield Static("escape: volver", classes="dim")

    def action_close(self) -> None:
        self.dismiss(None)
