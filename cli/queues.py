"""`cajasync queues`: what operators watch."""

from __future__ import annotations

import time

import click

from cajasync.broker.queues import QueueInfo, queue_overview
from cli.filters import age
from cli.options import broker_option, json_option, settings_for
from cli.output import console, emit_json, table


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
@click.option(
    "--watch",
    type=click.FloatRange(min=0.5),
    is_flag=False,
    flag_value=2.0,
    default=None,
    metavar="[SECONDS]",
    help="Refresh every SECONDS (2 when not given) until Ctrl-C.",
)
@json_option
def queues(
    broker_url: str,
    management_url: str,
    terminals: tuple[str, ...],
    watch: float | None,
    as_json: bool,
) -> None:
    """Each cajasync queue: ready, unacked, consumers, the age of its oldest message, and
    rates where the API answers."""
    settings = settings_for(broker_url, management_url=management_url)
    while True:
        rows = queue_overview(settings, terminals)
        if as_json:
            emit_json(rows)  # with --watch: one JSON document per line, per refresh
        else:
            if watch is not None:
                console.clear()
            _show(rows)
        if watch is None:
            return
        try:
            time.sleep(watch)
        except KeyboardInterrupt:
            return


def _show(rows: list[QueueInfo]) -> None:
    source = rows[0].source if rows else "broker"
    table(
        f"cajasync queues (from {source})",
        ["queue", "ready", "unacked", "consumers", "oldest", "publish/s", "deliver/s", "ack/s"],
        [
            [
                q.name,
                q.ready,
                q.unacked,
                q.consumers,
                age(q.age_s),
                q.publish_rate,
                q.deliver_rate,
                q.ack_rate,
            ]
            for q in rows
        ],
    )
