"""The window frame's pure parts: which options a till has, how a count line reads, the
progress's ETA and the status bar's words (no broker, no database)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest

from cajasync.core.identity import TerminalIdentity
from cajasync.processes.pull import pull_topics
from cajasync.processes.questions import Comparison, TopicComparison
from cli.window.actions import Progress
from cli.window.context import CONFIG, PENDING
from cli.window.menu import Counts, options_of
from cli.window.status import Health, render
from schemas.topics import TERMINAL_KINDS, UP_TOPICS


@pytest.mark.parametrize("kind", TERMINAL_KINDS)
def test_the_options_are_configuration_the_till_s_download_topics_then_the_up_ones(
    kind: str,
) -> None:
    identity = TerminalIdentity("T1", "L1", "PV1", kind)
    options = options_of(identity)
    assert options == [*pull_topics(identity, None), *UP_TOPICS, PENDING]
    assert options[0] == CONFIG
    assert ("mesas" in options) == (kind != "retail")


def row(topic: str, terminal: int, server: int, *, equal: bool | None = None) -> TopicComparison:
    same = terminal == server if equal is None else equal
    return TopicComparison(
        topic=topic, terminal=terminal, server=server, equal=same, hint="", direction="up"
    )


def test_a_count_line_marks_a_difference_between_the_live_till_and_the_server() -> None:
    counts = Counts(local={"ventas": 5, "pagos": 2, "cierres-z": 7}, pending=3)
    assert counts.server("ventas") == "…"  # the server has not answered yet
    assert not counts.differs("ventas")
    counts.comparison = Comparison(
        terminal="T1",
        period="all dates",
        topics=[row("ventas", 5, 5), row("pagos", 2, 1), row("cierres-z", 5, 7, equal=True)],
    )
    assert not counts.differs("ventas")
    assert counts.differs("pagos")
    assert not counts.differs("cierres-z")  # equal as compare explained it (a purge)...
    assert counts.line("pagos").plain.endswith("≠")
    counts.local = {**counts.local, "ventas": 6, "cierres-z": 8}
    assert counts.differs("ventas")  # ...until the till's count moves
    assert counts.differs("cierres-z")
    assert counts.server(PENDING) == "—"
    assert counts.terminal(PENDING) == 3
    counts.comparison, counts.compare_error = None, "the server did not answer"
    assert counts.server("ventas") == "?"


def test_progress_gives_an_eta_only_when_the_total_is_known() -> None:
    progress = Progress("registros", total=1000, started=100.0)
    assert progress.eta(110.0) is None  # nothing arrived yet
    progress.done = 250
    assert progress.eta(110.0) == pytest.approx(30.0)
    progress.bytes, progress.images, progress.image_bytes = 2_000_000, 3, 30_000
    assert "250 de 1.000 registros" in progress.describe()
    assert "3 imágenes" in progress.describe()
    assert Progress("registros").describe().endswith("ETA —")


def test_the_status_bar_says_broker_relay_pending_last_pull_and_replica() -> None:
    now = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
    health = Health(
        broker_error=None,
        consumers=1,
        last_activity=now - dt.timedelta(seconds=4),
        pending=3,
        oldest_pending=now - dt.timedelta(minutes=5),
        last_pull_at=now - dt.timedelta(hours=1),
        last_pull_status="done",
        at=now,
    )
    line = render(health, 0, None, dt.UTC, now=now).plain
    assert "Broker: conectado" in line
    assert "Relay: activo (última actividad hace 4s)" in line
    assert "Pendientes: 3 (la más antigua hace 5m 00s)" in line
    assert "Última bajada: 30/11 11:00" in line
    assert "Relay: detenido" in render(health, 1, None, dt.UTC, now=now).plain  # our own pull
    away = Health(**{**health.__dict__, "broker_error": "unreachable", "consumers": None})
    line = render(away, 0, None, dt.UTC, now=now).plain
    assert "Broker: sin conexión" in line
    assert "Relay: desconocido" in line


def test_the_other_commands_never_load_the_window_toolkit() -> None:
    """`cajasync` and its commands start without Textual: only `window` imports it."""
    code = (
        "import sys; from click.testing import CliRunner; from cli.main import cli; "
        "result = CliRunner().invoke(cli, ['--help']); "
        "assert result.exit_code == 0, result.output; "
        "assert 'window' in result.output; "
        "print('textual' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"
