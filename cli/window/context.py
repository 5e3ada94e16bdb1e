"""What every part of the window shares: the till's database, settings and time zone."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine

from cajasync.core.identity import TerminalIdentity
from cajasync.core.periods import Period
from cajasync.core.settings import Settings

CONFIG = "configuracion"
PENDING = "pendientes"  # the "Operaciones Pendientes" option (not a topic)


@dataclass
class WindowContext:
    """One till's window: its database (path and engine), the settings its commands use
    (broker URL from `terminal init --credentials` unless overridden), its identity, the
    zone dates are shown and typed in, and the period filter the user set (open by default)."""

    db: str
    engine: Engine
    settings: Settings
    identity: TerminalIdentity
    tz: dt.tzinfo
    period: Period = field(default_factory=Period)
