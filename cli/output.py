"""Rendering for humans (rich tables) and scripts (--json)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from schemas.codec import to_json

console = Console()
if not console.is_terminal:  # piped or captured: do not squeeze tables into 80 columns
    console = Console(width=200)
err_console = Console(stderr=True)


def emit_json(data: Any) -> None:
    """Print `data` (builtins or Structs) as one JSON document on stdout."""
    click.echo(to_json(data).decode())


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a table; numbers right-aligned, None as an em dash."""
    out = Table(title=title, title_justify="left", header_style="bold", min_width=len(title))
    numeric = [
        bool(rows) and all(isinstance(r[i], int | float) for r in rows) for i in range(len(columns))
    ]
    for name, right in zip(columns, numeric, strict=True):
        out.add_column(name, justify="right" if right else "left")
    for row in rows:
        out.add_row(*("—" if v is None else str(v) for v in row))
    console.print(out)
