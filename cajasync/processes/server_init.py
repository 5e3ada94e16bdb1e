"""`cajasync server init`: migrate the server store, declare the broker topology and apply
the broker policies (dead-letter exchange and delivery limit on the server's queues)."""

from __future__ import annotations

from cajasync.broker.management import apply_policies
from cajasync.broker.rabbitmq import blocking_channel
from cajasync.core.db import make_engine, upgrade
from cajasync.core.settings import Settings
from cajasync.core.store_faults import translated
from cajasync.core.topology import declare_server


def init_server(
    db_target: str, settings: Settings, *, declare: bool = True, policies: bool = True
) -> None:
    """Bring the server store to the latest migration and (unless not `declare`) the topology
    and (unless not `policies`) the policies, through the management API
    (`cajasync.broker.management`; BrokerUnavailable when it does not answer)."""
    engine = make_engine(db_target)
    where = engine.url.render_as_string(hide_password=True)
    try:
        with translated(f"server store {where}", "migrating"):
            upgrade(engine, "server")
    finally:
        engine.dispose()
    if not declare:
        return
    with blocking_channel(settings.broker_url, doing="declaring the server topology") as channel:
        declare_server(channel)
    if policies:
        apply_policies(settings)
