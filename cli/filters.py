"""Filter options with one meaning on every command: `--since`, `--until`, `--topic`,
`--state`, `--terminal` (dates as in cajasync/core/periods.py), and durations
(`--silent-for 10m`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, TypeVar

import click
from sqlalchemy.engine import Engine

from cajasync.core.periods import Period, zone
from cajasync.errors import ConfigError
from inbox.replica_api import terminal_zone

F = TypeVar("F", bound=Callable[..., Any])

DATE_HELP = "YYYY-MM-DD or an ISO timestamp, in the terminal's time zone"


def period_options(func: F) -> F:
    """`--since D` (inclusive) and `--until D` (a date: through the end of that day)."""
    func = click.option("--until", metavar="DATE", help=f"Up to this date ({DATE_HELP}).")(func)
    return click.option("--since", metavar="DATE", help=f"From this date ({DATE_HELP}).")(func)


def timezone_option(func: F) -> F:
    return click.option(
        "--timezone",
        envvar="CAJASYNC_TIMEZONE",
        default=None,
        metavar="ZONE",
        help="IANA time zone dates are read in (default: the configuration's, else local).",
    )(func)


def terminal_period(
    engine: Engine, since: str | None, until: str | None, timezone: str | None
) -> Period:
    """The period typed on the command line, read in the till's time zone (`--timezone`,
    else its configuration's, else the machine's)."""
    from inbox.replica_api import terminal_zone

    try:
        return Period.parse(since, until, terminal_zone(engine, timezone))
    except Exception as exc:  # ConfigError: shown as a usage error naming the option
        raise click.UsageError(str(exc)) from None


def period_of(since: str | None, until: str | None, timezone: str | None) -> Period:
    """The period typed on the command line; a bad date is one usage line."""
    try:
        return Period.parse(since, until, zone(timezone))
    except Exception as exc:  # ConfigError: shown as a usage error naming the option
        raise click.UsageError(str(exc)) from None


def till_period(
    engine: Engine, since: str | None, until: str | None, timezone: str | None
) -> tuple[Period, dt.tzinfo]:
    """The period typed on a till's command, read in the till's time zone (`timezone`,
    else its configuration's, else the machine's), and that zone for showing dates."""
    try:
        tz = terminal_zone(engine, timezone)
        return Period.parse(since, until, tz), tz
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


def customer_number_options(func: F) -> F:
    """`--customer C` and `--number N` (a ticket's or a Z close's number) on sales views."""
    func = click.option(
        "--number", type=click.IntRange(min=0), help="Ticket number (Z number for cierres-z)."
    )(func)
    return click.option("--customer", metavar="CODE", help="Customer code (ventas only).")(func)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Duration(click.ParamType[dt.timedelta]):
    """A length of time: `90`, `90s`, `10m`, `2h`, `1d` (seconds without a unit)."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> dt.timedelta:
        if isinstance(value, dt.timedelta):
            return value
        text = str(value).strip().lower()
        unit = text[-1:] if text[-1:] in _UNITS else "s"
        number = text[:-1] if text[-1:] in _UNITS else text
        try:
            seconds = float(number) * _UNITS[unit]
        except ValueError:
            self.fail(f"{value!r} is not a duration (e.g. 30s, 10m, 2h, 1d)", param, ctx)
        if not seconds >= 0 or seconds == float("inf"):
            self.fail(f"{value!r} is not a duration (e.g. 30s, 10m, 2h, 1d)", param, ctx)
        return dt.timedelta(seconds=seconds)


def age(seconds: float | None) -> str | None:
    """`42s`, `5m 03s`, `2h 10m`, `3d 4h` (None stays None: shown as a dash)."""
    if seconds is None:
        return None
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600}h"
