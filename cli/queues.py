"""`cajasync queues`: what operators watch."""

from __future__ import annotations

import click

from cajasync.broker.queues import queue_overview
from cli.options import broker_option, json_option, settings_for
from cli.output import emit_json, table


@click.command()
@broker_option
@click.option(
    "--management-url",
    envvar="CAJASYNC_MANAGEMENT_URL",
    default="http://localhost:15672",
    show_default=True,
    help="RabbitMQ management API, for rates.",
)
@click.option(
    "--terminal",
    "terminals",
    multiple=True,
    help="Also show this terminal's queue (AMQP fallback).",
)
@json_option
def queues(broker_url: str, management_url: str, terminals: tuple[str, ...], as_json: bool) -> None:
    """Each cajasync queue: ready, unacked, consumers, and rates where the API answers."""
    rows = queue_overview(settings_for(broker_url, management_url=management_url), terminals)
    if as_json:
        emit_json(rows)
        return
    source = rows[0].source if rows else "broker"
    table(
        f"cajasync queues (from {source})",
        ["queue", "ready", "unacked", "consumers", "publish/s", "deliver/s", "ack/s"],
        [
            [q.name, q.ready, q.unacked, q.consumers, q.publish_rate, q.deliver_rate, q.ack_rate]
            for q in rows
        ],
    )
