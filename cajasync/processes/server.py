"""The server's three loops as one service: ingest (ops up), requests (snapshots, catch-up,
images) and the feed relay (change log down). Each has its own broker connection and
database connections; they share one stop event, and the store's lease
(cajasync/core/lease.py): of several processes on one store, only its holder publishes the
change log and asks tills for gaps. Beside them, every CAJASYNC_COMPACT_INTERVAL_S, the
change log is compacted (outbox/compaction.py)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

from cajasync.broker.management import Management, vhost_of
from cajasync.broker.rabbitmq import claim_exchange, reconnect_policy
from cajasync.core.lease import StoreLease
from cajasync.core.settings import Settings
from cajasync.core.topology import STORE_EXCHANGE
from cajasync.errors import CajasyncError, ConfigError
from cajasync.processes.metrics import ServerGauges, exposed, server_counters

log = logging.getLogger(__name__)


@dataclass
class ServerStats:
    """The counters of each loop, by name."""

    loops: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return "; ".join(f"{name}: {stats}" for name, stats in self.loops.items())


def serve(
    engine: Engine,
    settings: Settings,
    *,
    stop: threading.Event | None = None,
    until_idle: float | None = None,
    on_progress: Callable[[ServerStats], None] | None = None,
    metrics_port: int | None = None,
    claim: bool = False,
) -> ServerStats:
    """Run ingest, the request handler and the feed relay until stopped (or all idle).

    If one loop fails, the others are stopped and its error is raised. A database that is
    away does not fail them: each waits for it, up to `settings.store_give_up_s`. With
    `metrics_port`, Prometheus metrics are served there meanwhile (processes/metrics.py).
    With `claim` (`cajasync server run`), the vhost is claimed for this store first
    (`claim_vhost`): a vhost another store serves stops it at once.
    """
    stop = stop or threading.Event()
    if claim:
        claim_vhost(engine, settings, stop=stop)
    with exposed(metrics_port, [ServerGauges(engine)]):
        return _serve(engine, settings, stop=stop, until_idle=until_idle, on_progress=on_progress)


def _serve(
    engine: Engine,
    settings: Settings,
    *,
    stop: threading.Event,
    until_idle: float | None,
    on_progress: Callable[[ServerStats], None] | None,
) -> ServerStats:
    from inbox.ingest import run_ingest
    from inbox.requests import run_requests
    from outbox.compaction import run_compaction
    from outbox.feed_relay import run_feed_relay

    stats = ServerStats()
    errors: list[BaseException] = []
    lease = StoreLease(engine)  # one process of the store publishes the feed, asks for gaps
    count_ingest = server_counters()

    def report(name: str) -> Callable[[Any], None]:
        def update(loop_stats: Any) -> None:
            stats.loops[name] = loop_stats
            if name == "ingest":
                count_ingest(loop_stats)
            if on_progress is not None:
                on_progress(stats)

        return update

    def loop(name: str, body: Callable[[], Any]) -> None:
        try:
            stats.loops[name] = body()
        except BaseException as exc:
            log.error("server %s loop stopped, stopping the others: %s", name, exc)
            errors.append(exc)
            stop.set()

    loops = {
        "ingest": lambda: run_ingest(
            engine,
            settings,
            until_idle=until_idle,
            stop=stop,
            on_progress=report("ingest"),
            lease=lease,
        ),
        "requests": lambda: run_requests(engine, settings, until_idle=until_idle, stop=stop),
        "feed": lambda: run_feed_relay(
            engine, settings, until_idle=until_idle, stop=stop, lease=lease
        ),
    }
    threads = [
        threading.Thread(target=loop, args=(name, body), name=f"cajasync-{name}", daemon=True)
        for name, body in loops.items()
    ]
    finished = threading.Event()  # the three loops ended: so does compaction
    if settings.compact_interval_s > 0:

        def compaction() -> int:
            return run_compaction(engine, settings, stop=stop, finished=finished)

        name = "cajasync-compaction"
        threads.append(
            threading.Thread(target=loop, args=("compaction", compaction), name=name, daemon=True)
        )
    for thread in threads:
        thread.start()
    try:
        for thread in threads[:3]:
            while thread.is_alive():
                thread.join(timeout=0.5)
        finished.set()
        for thread in threads[3:]:
            thread.join()
    finally:
        lease.release()
    if errors:
        raise errors[0]
    return stats


def claim_vhost(engine: Engine, settings: Settings, *, stop: threading.Event | None = None) -> str:
    """Announce this store on the broker vhost (`cajasync.store`, naming the store id) and
    return its id; ConfigError in one line when another store already serves the vhost.
    Any number of processes of one store claim it alike. A broker that is away is waited for.
    """
    from inbox.registry import store_id

    mine = store_id(engine)
    vhost = vhost_of(settings.broker_url)
    holder = f"{STORE_EXCHANGE}.{mine}"
    doing = f"claiming vhost {vhost} for store {mine}"
    policy = reconnect_policy(settings, what="claiming the vhost", stop=stop)
    other = policy(claim_exchange, settings.broker_url, STORE_EXCHANGE, holder, doing=doing)
    if other is not None:
        served = (other or _holder(settings) or "?").removeprefix(f"{STORE_EXCHANGE}.")
        raise ConfigError(
            f"vhost {vhost!r} is already served by store {served}, not this store ({mine}): "
            f"point CAJASYNC_BROKER_URL at another vhost, or delete exchange {STORE_EXCHANGE} "
            "once that store is retired"
        )
    return mine


def _holder(settings: Settings) -> str | None:
    """Which store the vhost's claim names, asked of the management API (None: unknown)."""
    try:
        found = Management(settings).exchange_arguments(STORE_EXCHANGE).get("alternate-exchange")
    except CajasyncError:
        return None
    return None if found is None else str(found)
