"""Periods for filters: `--since` / `--until` with one meaning on every command.

A bound is a date (`2026-11-30`) or a full ISO timestamp (`2026-11-30T14:00`,
`2026-11-30T14:00:00+01:00`). A date or a timestamp without an offset is read in the
terminal's time zone (`zone()`); `--until` with a date means the end of that day, so
`--since 2026-11-30 --until 2026-11-30` is the whole of that day. Every bound is kept as
an aware datetime; `since` is inclusive, `until` exclusive.

An operation is filtered by `recorded_at`, the moment its till recorded it: the same
value on the till and on the server (it travels in the envelope), so a count on one side
and a count on the other side cover the same operations.

    period = Period.parse("2026-11-01", "2026-11-30", zone("Europe/Madrid"))
    period.contains(sale.date)
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cajasync.errors import ConfigError

DATE: Final = re.compile(r"^\d{4}-\d{2}-\d{2}\Z")
TIMEZONE_SETTING: Final = "timezone"  # key of the configuracion Setting naming the zone


def zone(name: str | None = None) -> dt.tzinfo:
    """The zone called `name` (IANA, e.g. `Europe/Madrid`), or this machine's local zone."""
    if not name:
        local = dt.datetime.now().astimezone().tzinfo
        assert local is not None
        return local
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"unknown time zone {name!r}: give an IANA name such as Europe/Madrid "
            "(CAJASYNC_TIMEZONE or the `timezone` setting of the configuration)"
        ) from None


def moment(
    text: str, tz: dt.tzinfo, *, end_of_day: bool = False, name: str = "date"
) -> dt.datetime:
    """One bound: a date (its start, or the next day's start with `end_of_day`) or an ISO
    timestamp; read in `tz` when it carries no offset. ConfigError names what was wrong."""
    value = text.strip()
    try:
        if DATE.match(value):
            day = dt.date.fromisoformat(value)
            if end_of_day:
                day += dt.timedelta(days=1)
            return dt.datetime.combine(day, dt.time(), tzinfo=tz)
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"{name} {text!r} is not a date: use YYYY-MM-DD or an ISO timestamp "
            "such as 2026-11-30T14:00"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=tz)


@dataclass(frozen=True, slots=True)
class Period:
    """A time filter: from `since` (inclusive) to `until` (exclusive); None is open."""

    since: dt.datetime | None = None
    until: dt.datetime | None = None

    @classmethod
    def parse(cls, since: str | None, until: str | None, tz: dt.tzinfo) -> Period:
        """Both bounds as typed by a user; an empty period (until before since) is refused."""
        start = moment(since, tz, name="--since") if since else None
        end = moment(until, tz, end_of_day=True, name="--until") if until else None
        if start is not None and end is not None and end <= start:
            raise ConfigError(f"--until {until} is not after --since {since}: the period is empty")
        return cls(start, end)

    @classmethod
    def before(cls, until: str | None, tz: dt.tzinfo) -> Period:
        """`--before D`: everything strictly before the start of D (or before the timestamp)."""
        return cls(None, moment(until, tz, name="--before") if until else None)

    @property
    def open(self) -> bool:
        return self.since is None and self.until is None

    def contains(self, when: dt.datetime) -> bool:
        """True when `when` lies in the period (a naive `when` is taken as UTC)."""
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        if self.since is not None and when < self.since:
            return False
        return self.until is None or when < self.until

    def utc(self) -> tuple[dt.datetime | None, dt.datetime | None]:
        """The bounds in UTC, for SQL (the stores keep timestamps in UTC)."""
        return _utc(self.since), _utc(self.until)

    def describe(self) -> str:
        if self.open:
            return "all dates"
        since = self.since.isoformat(timespec="minutes") if self.since else "the start"
        until = self.until.isoformat(timespec="minutes") if self.until else "now"
        return f"from {since} to {until}"


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else value.astimezone(dt.UTC)
