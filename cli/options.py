"""Options shared by commands; each maps to a CAJASYNC_* variable like the library settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from cajasync.core.settings import DEFAULT_BROKER_URL, Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])


def broker_option(func: F) -> F:
    return click.option(
        "--broker-url",
        envvar="CAJASYNC_BROKER_URL",
        default=DEFAULT_BROKER_URL,
        show_default=True,
        help="RabbitMQ URL.",
    )(func)


def management_option(func: F) -> F:
    return click.option(
        "--management-url",
        envvar="CAJASYNC_MANAGEMENT_URL",
        default="http://localhost:15672",
        show_default=True,
        help="RabbitMQ management API (policies, rates). [env CAJASYNC_MANAGEMENT_URL]",
    )(func)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(func)


def terminal_db_option(func: F) -> F:
    return click.option(
        "--db",
        envvar="CAJASYNC_TERMINAL_DB",
        required=True,
        help="Terminal database: a SQLite file path (or URL). [env CAJASYNC_TERMINAL_DB]",
    )(func)


def server_db_option(func: F) -> F:
    return click.option(
        "--db",
        envvar="CAJASYNC_SERVER_DB",
        required=True,
        help="Server store: a SQLite path or postgresql:// URL. [env CAJASYNC_SERVER_DB]",
    )(func)


def until_idle_option(func: F) -> F:
    return click.option(
        "--until-idle",
        type=click.FloatRange(min=0.1),
        default=None,
        metavar="SECONDS",
        help="Exit once nothing happened for this long (default: run until Ctrl-C).",
    )(func)


def metrics_port_option(func: F) -> F:
    return click.option(
        "--metrics-port",
        envvar="CAJASYNC_METRICS_PORT",
        type=click.IntRange(1, 65535),
        default=None,
        metavar="PORT",
        help="Serve Prometheus metrics on this port (/metrics). [env CAJASYNC_METRICS_PORT]",
    )(func)


def settings_for(broker_url: str, **overrides: Any) -> Settings:
    return load_settings(broker_url=broker_url, **overrides)


def terminal_settings(db: str, broker_url: str, **overrides: Any) -> Settings:
    """Settings of a terminal command: the broker URL kept beside its database
    (`terminal init --credentials`) unless --broker-url or CAJASYNC_BROKER_URL says another."""
    from click.core import ParameterSource

    from cajasync.core.credentials import stored_broker_url

    source = click.get_current_context().get_parameter_source("broker_url")
    if source in (None, ParameterSource.DEFAULT):
        broker_url = stored_broker_url(db) or broker_url
    return settings_for(broker_url, **overrides)
