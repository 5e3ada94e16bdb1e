"""Z close reconciliation on the server: every Z received is checked against the sales held
for its terminal and period (the rules are inbox/zcheck.py's).

Server ingest calls `after_batch` once a batch is applied: a Z close in it starts being
tracked (server_z_closes, state waiting) and is checked at once; a sale of a terminal with
a waiting Z checks that terminal's waiting Zs again. Only the terminals the batch touched
are looked at. `sweep`, every second or so, checks the waiting Zs whose next check is due
(a replay to ask again, the `z_replay_wait_s` deadline).

Missing sale numbers are asked of the till with a `ReplaySales` (to `t.<terminal>`, as gap
replays): the till re-queues every outbox row of those sales, acked or not, and answers the
numbers it has no sale for with a `ReplayReport` up the request queue, which the request
handler records here (`record_replay_report`): such a Z is a discrepancy at once. A Z still
missing sales after `z_replay_wait_s` (asked up to 3 times meanwhile) is a discrepancy.
Reconciled and discrepancy are final, until a newer version of the Z arrives.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Sequence
from typing import Any, Final

from sqlalchemy.engine import Engine

from cajasync.broker.ports import Outbound
from cajasync.core.periods import Period
from cajasync.core.server_tables import Z_STATES, Z_WAITING
from cajasync.core.settings import Settings
from cajasync.core.store_faults import server_transaction
from cajasync.core.topology import terminal_routing_key
from cajasync.errors import ConfigError
from inbox import zcheck
from inbox.server_store import sql_zcloses
from inbox.server_store.base import Accepted, Incoming, Verdict
from schemas.codec import encode
from schemas.envelope import OpEnvelope, ReplayReport, ReplaySales
from schemas.ops import Sale, ZClose

log = logging.getLogger(__name__)

SWEEP_S: Final = 1.0
Key = tuple[str, int]  # (terminal, Z number)


class ZReconciler:
    """Tracks and checks Z closes on a server store; sends replay requests on `out`."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self._engine = engine
        self._settings = settings
        self.asked = 0  # ReplaySales sent

    def after_batch(
        self, out: Outbound, batch: Sequence[Incoming], verdicts: Sequence[Verdict]
    ) -> int:
        """Track the batch's Z closes and check them, and the waiting Zs of terminals whose
        sales arrived; returns how many replay requests were sent."""
        closes: list[OpEnvelope] = []
        sold: set[str] = set()
        for incoming, verdict in zip(batch, verdicts, strict=True):
            if not isinstance(incoming, Accepted) or verdict.status != "acked":
                continue
            if isinstance(incoming.envelope.op, ZClose):
                closes.append(incoming.envelope)
            elif isinstance(incoming.envelope.op, Sale):
                sold.add(incoming.envelope.terminal)
        if not closes and not sold:
            return 0
        now = _now()
        with self._transaction("tracking Z closes") as connection:
            keys: set[Key] = set()
            for envelope in closes:
                if sql_zcloses.register(connection, envelope, now):
                    assert isinstance(envelope.op, ZClose)
                    keys.add((envelope.terminal, envelope.op.number))
            keys.update(sql_zcloses.waiting_of(connection, sorted(sold)))
        return self._check_all(out, sorted(keys), now)

    def sweep(self, out: Outbound) -> int:
        """Check the waiting Zs whose next check is due; returns replay requests sent."""
        now = _now()
        with self._transaction("looking for Z closes due") as connection:
            keys = sql_zcloses.due(connection, now)
        return self._check_all(out, keys, now)

    def _check_all(self, out: Outbound, keys: Sequence[Key], now: dt.datetime) -> int:
        asked = 0
        for terminal, z_number in keys:
            request = self.check(terminal, z_number, now)
            if request is not None:
                log.info(
                    "asking %s to replay sales %s of Z %d",
                    terminal,
                    zcheck.numbers(request.numbers),
                    z_number,
                )
                out.send_down(terminal_routing_key(terminal), encode(request))
                asked += 1
        self.asked += asked
        return asked

    def check(self, terminal: str, z_number: int, now: dt.datetime) -> ReplaySales | None:
        """Check one tracked Z, save its state; the replay request to send, if any."""
        with self._transaction(f"checking Z {z_number} of terminal {terminal}") as connection:
            loaded = sql_zcloses.load(connection, terminal, z_number)
            if loaded is None:
                return None
            row, z = loaded
            if row.state != Z_WAITING:
                return None
            sales = sql_zcloses.sales_since(connection, terminal, z.period_start)
            result = zcheck.check(z, sales)
            decision = zcheck.decide(
                f"Z {z_number} of {terminal}",
                result,
                now=now,
                received_at=row.received_at,
                asked=row.replay_asked,
                asked_at=row.replay_asked_at,
                absent=row.absent,
                caught_up=sql_zcloses.contiguous_seq(connection, terminal) >= row.seq,
                wait_s=self._settings.z_replay_wait_s,
                recheck_s=max(1.0, self._settings.gap_grace_s),
            )
            values: dict[str, Any] = {
                "found_count": result.found.count,
                "found_total": result.found.total,
                "figures": json.dumps(
                    {
                        "expected": zcheck.expected(z).to_builtins(),
                        "found": result.found.to_builtins(),
                    }
                ),
                "state": decision.state,
                "missing": json.dumps(result.missing),
                "difference": decision.difference,
                "next_check_at": decision.next_check_at,
                "updated_at": now,
            }
            if decision.ask:
                values |= {"replay_asked": row.replay_asked + 1, "replay_asked_at": now}
            sql_zcloses.save(connection, terminal, z_number, values)
        if decision.state != Z_WAITING:
            log.log(
                logging.WARNING if decision.difference else logging.INFO,
                "Z %d of %s: %s",
                z_number,
                terminal,
                decision.difference or decision.state,
            )
        if not decision.ask:
            return None
        return ReplaySales(
            terminal=terminal, z_number=z_number, numbers=result.missing, since=z.period_start
        )

    def _transaction(self, doing: str) -> Any:
        return server_transaction(self._engine, "server store", doing)


def record_replay_report(engine: Engine, settings: Settings, report: ReplayReport) -> bool:
    """A till's answer to ReplaySales: note the numbers it has no sale for and check the Z
    again (a discrepancy at once if one of them is still missing); False for an unknown Z."""
    with server_transaction(engine, "server store", "recording a replay report") as connection:
        known = sql_zcloses.add_absent(connection, report.terminal, report.z_number, report.missing)
    if known and report.missing:
        ZReconciler(engine, settings).check(report.terminal, report.z_number, _now())
    return known


def z_report(
    engine: Engine,
    *,
    terminal: str | None = None,
    period: Period | None = None,
    state: str | None = None,
) -> list[dict[str, Any]]:
    """Z closes with their state and figures, by terminal and number, filtered by terminal,
    period end (`period`) and state; as `server z-report --json` prints."""
    if state is not None and state not in Z_STATES:
        raise ConfigError(f"unknown Z state {state!r}; expected one of: {', '.join(Z_STATES)}")
    since, until = (None, None) if period is None else period.utc()
    with server_transaction(engine, "server store", "reading Z closes") as connection:
        rows = sql_zcloses.listed(
            connection, terminal=terminal, since=since, until=until, state=state
        )
    return [_reported(row) for row in rows]


def _reported(row: Any) -> dict[str, Any]:
    figures = json.loads(row.figures)
    return {
        "terminal": row.terminal,
        "z_number": row.z_number,
        "state": row.state,
        "period_start": _iso(row.period_start),
        "period_end": _iso(row.period_end),
        "first_receipt": row.first_receipt,
        "last_receipt": row.last_receipt,
        "sale_count": row.expected_count,
        "total": str(row.expected_total),
        "found_count": row.found_count,
        "found_total": str(row.found_total),
        "missing": json.loads(row.missing),
        "absent": json.loads(row.absent),
        "difference": row.difference,
        "replay_asked": row.replay_asked,
        "last_asked": None if row.replay_asked_at is None else _iso(row.replay_asked_at),
        "expected": figures.get("expected"),
        "found": figures.get("found"),
        "op_id": row.op_id,
        "updated_at": _iso(row.updated_at),
    }


def _iso(moment: dt.datetime) -> str:
    return zcheck.utc(moment).isoformat(timespec="seconds")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
