"""`server terminals` shows the registry: a registered till that never connected says so,
a revoked one says revoked (both server stores; no broker needed)."""

from __future__ import annotations

import sqlalchemy as sa

from cajasync.core.server_tables import REVOKED
from inbox import registry
from inbox.status import NEVER, fleet


def test_a_registered_till_that_never_connected_shows_as_such(engine: sa.Engine) -> None:
    registry.insert(engine, "T-NEW", "L1", "PV1", "retail", broker_user="T-NEW")
    [view] = fleet(engine)
    assert (view.terminal, view.state, view.last_contact) == ("T-NEW", NEVER, None)


def test_a_revoked_till_shows_as_revoked(engine: sa.Engine) -> None:
    registry.insert(engine, "T-OLD", "L1", "PV1", "retail", broker_user="T-OLD")
    registry.insert(engine, "T-OK", "L1", "PV2", "retail", broker_user="T-OK")
    registry.update(engine, "T-OLD", status=REVOKED)
    states = {view.terminal: view.state for view in fleet(engine)}
    assert states == {"T-OLD": "revoked", "T-OK": NEVER}
