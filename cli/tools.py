"""`cajasync tools …`: Herramientas, clean-up tools for technicians."""

from __future__ import annotations

import click

from cli.prune import prune


@click.group()
def tools() -> None:
    """Clean-up tools (Herramientas)."""


tools.add_command(prune)
