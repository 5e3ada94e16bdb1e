"""`cajasync`: the command line, a thin layer over the library."""

from __future__ import annotations

import logging
import sys

import click

from cajasync import __version__
from cajasync.broker.rabbitmq import quiet_driver_logs
from cajasync.errors import CajasyncError
from cli.catalog import catalog
from cli.compare import compare
from cli.dead import dead
from cli.demo import demo
from cli.diff import diff
from cli.pending import pending
from cli.pull import pull
from cli.queues import queues
from cli.replica import replica
from cli.sales import server_ventas, ventas
from cli.server import server
from cli.terminal import terminal
from cli.tools import tools
from cli.window.command import window


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cajasync")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
def cli(verbose: int) -> None:
    """Synchronize point-of-sale terminals (cajas) with the back-office server."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbose < 2:
        quiet_driver_logs()


cli.add_command(server)
cli.add_command(terminal)
cli.add_command(pending)
cli.add_command(queues)
cli.add_command(demo)
cli.add_command(pull)
cli.add_command(replica)
cli.add_command(catalog)
cli.add_command(compare)
cli.add_command(diff)
cli.add_command(tools)
cli.add_command(ventas)
server.add_command(server_ventas)
cli.add_command(dead)
cli.add_command(window)


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
