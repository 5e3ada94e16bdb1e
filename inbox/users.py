"""The till's users, from its replica of the configuration: may this one do that?

    grant = authorise_user(engine, "admin", password)    # Grant(user, role, permission)

The rules are cajasync/core/access.py's. A refusal raises NotAuthorised (one line) and is
logged here (who, what, why), never written to the database.
"""

from __future__ import annotations

import logging

from sqlalchemy.engine import Engine

from cajasync.core.access import DELETE_SYNCED, Grant, authorise
from cajasync.errors import NotAuthorised
from inbox.replica_api import Replica
from inbox.replica_store import ReplicaStore
from schemas.records import Permission, User

log = logging.getLogger(__name__)


def authorise_user(
    engine: Engine | ReplicaStore, name: str, password: str, permission: str = DELETE_SYNCED
) -> Grant:
    """The grant of user `name` for `permission` on this till; NotAuthorised if refused."""
    replica = Replica(engine)
    try:
        return authorise(
            replica.get(User, name), name, password, replica.query(Permission), permission
        )
    except NotAuthorised as exc:
        # INFO: the caller shows the refusal as its one line; `-v` (or a service's log) keeps it
        log.info("refused %s to user %r: %s", permission, name, exc)
        raise
