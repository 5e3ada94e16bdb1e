"""`cajasync server init`: migrate the server store and declare the broker topology."""

from __future__ import annotations

import sqlalchemy as sa

from cajasync.broker.rabbitmq import blocking_channel
from cajasync.core.db import make_engine, upgrade
from cajasync.core.settings import Settings
from cajasync.core.topology import declare_server
from cajasync.errors import StoreError


def init_server(db_target: str, settings: Settings, *, declare: bool = True) -> None:
    """Bring the server store to the latest migration and (unless not `declare`) the topology."""
    engine = make_engine(db_target)
    try:
        upgrade(engine, "server")
    except sa.exc.SQLAlchemyError as exc:
        where = engine.url.render_as_string(hide_password=True)
        raise StoreError(f"cannot migrate the server store {where}: {exc}") from exc
    finally:
        engine.dispose()
    if not declare:
        return
    with blocking_channel(settings.broker_url, doing="declaring the server topology") as channel:
        declare_server(channel)
