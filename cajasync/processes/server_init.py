"""`cajasync server init`: migrate the server store, declare the broker topology and apply
the broker policies (dead-letter exchange and delivery limit on the server's queues).

The topology includes the streams of the shared change scopes: the chain's and one per
location the registry knows (a till under the shared user declares its own location's).
`migrate_fanout` is the second step of moving a broker from the per-till copies of those
changes to the streams (docs/design-scale.md, "Fan-out"): once every till runs a version
that reads the streams, it unbinds the shared scopes' keys from every till's queue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cajasync.broker.management import Management, apply_policies
from cajasync.broker.rabbitmq import blocking_channel
from cajasync.core.db import make_engine, upgrade
from cajasync.core.settings import Settings
from cajasync.core.store_faults import translated
from cajasync.core.topology import (
    DOWN_EXCHANGE,
    TERMINAL_QUEUE_PREFIX,
    declare_server,
    declare_stream,
    scope_stream,
)
from inbox import registry


@dataclass
class Initialised:
    """What `init_server` did on the broker: the streams declared, and per till queue the
    shared-scope keys it unbound (with `migrate_fanout`)."""

    streams: list[str] = field(default_factory=list)
    unbound: dict[str, int] = field(default_factory=dict)


def init_server(
    db_target: str,
    settings: Settings,
    *,
    declare: bool = True,
    policies: bool = True,
    migrate_fanout: bool = False,
) -> Initialised:
    """Bring the server store to the latest migration and (unless not `declare`) the topology
    and (unless not `policies`) the policies, through the management API
    (`cajasync.broker.management`; BrokerUnavailable when it does not answer)."""
    engine = make_engine(db_target)
    where = engine.url.render_as_string(hide_password=True)
    done = Initialised()
    try:
        with translated(f"server store {where}", "migrating"):
            upgrade(engine, "server")
        if not declare:
            return done
        locations = sorted({r.location for r in registry.registrations(engine).values()})
    finally:
        engine.dispose()
    with blocking_channel(settings.broker_url, doing="declaring the server topology") as channel:
        declare_server(channel)
        done.streams = [scope_stream("all")]
        done.streams += [declare_stream(channel, f"loc.{location}") for location in locations]
        if migrate_fanout:
            done.unbound = _unbind_shared_scopes(channel, Management(settings))
    if policies:
        apply_policies(settings)
    return done


def _unbind_shared_scopes(channel: Any, management: Management) -> dict[str, int]:
    """Unbind the keys of the shared scopes (`all`, `loc.*`) from every till's queue: those
    changes come by stream now. Per queue, how many keys it lost."""
    unbound: dict[str, int] = {}
    for queue in management.queue_names(TERMINAL_QUEUE_PREFIX):
        keys = [k for k in management.bound_keys(queue, DOWN_EXCHANGE) if _shared(k)]
        for key in keys:
            channel.queue_unbind(queue, DOWN_EXCHANGE, routing_key=key)
        if keys:
            unbound[queue] = len(keys)
    return unbound


def _shared(key: str) -> bool:
    """`chg.<topic>.all` or `chg.<topic>.loc.<location>`."""
    parts = key.split(".", 2)
    if len(parts) < 3 or parts[0] != "chg":
        return False
    return parts[2] == "all" or parts[2].startswith("loc.")
