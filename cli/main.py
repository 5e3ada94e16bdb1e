"""`cajasync`: the command line, a thin layer over the library."""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Final

import click

from cajasync import __version__
from cajasync.broker.rabbitmq import quiet_driver_logs
from cajasync.errors import CajasyncError

# Each command's module, imported when the command runs (or `--help` lists it): a command
# loads its own libraries only, and `cajasync window` starts without every other command's.
COMMANDS: Final = {
    "catalog": "cli.catalog:catalog",
    "compare": "cli.compare:compare",
    "dead": "cli.dead:dead",
    "demo": "cli.demo:demo",
    "diff": "cli.diff:diff",
    "pending": "cli.pending:pending",
    "pull": "cli.pull:pull",
    "queues": "cli.queues:queues",
    "replica": "cli.replica:replica",
    "server": "cli.server:server",
    "terminal": "cli.terminal:terminal",
    "tools": "cli.tools:tools",
    "ventas": "cli.sales:ventas",
    "window": "cli.window.command:window",
}


class LazyGroup(click.Group):
    """The `cajasync` group: its commands (COMMANDS) are imported when first asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = COMMANDS.get(cmd_name)
        if where is None:
            return None
        module, name = where.split(":")
        command = getattr(importlib.import_module(module), name)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cajasync")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
def cli(verbose: int) -> None:
    """Synchronize point-of-sale terminals (cajas) with the back-office server."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbose < 2:
        quiet_driver_logs()


def main() -> None:
    """Entry point: cajasync errors become one line on stderr and exit status 1."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except CajasyncError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
