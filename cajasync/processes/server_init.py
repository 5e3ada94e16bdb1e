"""`cajasync server init`: migrate the server store and declare the broker topology."""

from __future__ import annotations

from cajasync.broker.rabbitmq import blocking_channel
from cajasync.core.db import make_engine, upgrade
from cajasync.core.settings import Settings
from cajasync.core.store_faults import translated
from cajasync.core.topology import declare_server


def init_server(db_target: str, settings: Settings, *, declare: bool = True) -> None:
    """Bring the server store to the latest migration and (unless not `declare`) the topology."""
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
