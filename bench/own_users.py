"""Per-till broker users vs the shared user, end to end, in the same run.

`python -m bench.own_users [TERMINALS] [OPS]`: the same sales (TERMINALS tills x OPS) are
relayed by `run_terminal` and applied by `run_ingest` on a SQLite server store, once with
every till as `guest` (server allowing the shared user) and once with each till's own broker
user (registered, server strict: one registry read per ingest batch). Prints both rates.
Loops run in threads of one process, the same for both variants: compare the two figures,
not with `bench e2e`.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import sqlalchemy as sa

from bench import common
from cajasync.broker.management import Management
from cajasync.core.db import make_engine, upgrade
from cajasync.core.identity import TerminalIdentity
from cajasync.core.settings import Settings, load_settings
from cajasync.core.terminal_tables import ACKED, outbox
from cajasync.processes.fleet import add_terminal
from cajasync.processes.terminal import run_terminal
from cajasync.processes.terminal_init import init_terminal
from cajasync.samples.simulate import TicketMaker
from inbox.ingest import run_ingest
from outbox.record import record


def acked(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        query = sa.select(sa.func.count()).where(outbox.c.state == ACKED).select_from(outbox)
        return int(connection.execute(query).scalar_one())


def variant(tmp: Path, settings: Settings, own: bool, terminals: int, ops: int) -> float:
    """Ops per second from filled outboxes to every row acked."""
    server = make_engine(f"sqlite:///{tmp / f'server-{own}.db'}")
    upgrade(server, "server")
    server_settings = settings.with_overrides(allow_shared_user=not own)
    tills: list[tuple[sa.Engine, Settings]] = []
    run = time.strftime("%H%M%S")
    for n in range(terminals):
        identity = TerminalIdentity(
            common.made(f"B{'O' if own else 'S'}{run}{n}"), "L1", "PV1", "retail"
        )
        till = settings
        if own:
            url = add_terminal(server, settings, identity).broker_url
            assert url is not None
            till = settings.with_overrides(broker_url=url)
        engine = init_terminal(str(tmp / f"{identity.terminal}.db"), identity, till)
        with engine.begin() as connection:
            for sale in TicketMaker(seed=n).sales(ops):
                record(connection, sale)
        tills.append((engine, till))
    stop = threading.Event()
    threads = [
        threading.Thread(target=run_ingest, args=(server, server_settings), kwargs={"stop": stop})
    ]
    threads += [
        threading.Thread(target=run_terminal, args=(e, s), kwargs={"stop": stop}) for e, s in tills
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    while sum(acked(e) for e, _ in tills) < terminals * ops:
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    stop.set()
    for thread in threads:
        thread.join()
    for engine, _till in tills:
        engine.dispose()
    server.dispose()
    if own:
        management = Management(settings)
        for _engine, till in tills:
            management.delete_user(str(urlsplit(till.broker_url).username))
    return terminals * ops / elapsed


def main() -> None:
    terminals = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    ops = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    base = load_settings()
    vhost = f"cajasync-bench-own-users-{time.strftime('%H%M%S')}"  # nobody else's ops
    subprocess.run(["rabbitmqctl", "add_vhost", vhost], check=True, capture_output=True)
    user = urlsplit(base.broker_url).username or "guest"
    grant = ["rabbitmqctl", "set_permissions", "-p", vhost, user, ".*", ".*", ".*"]
    subprocess.run(grant, check=True, capture_output=True)
    url = urlunsplit(urlsplit(base.broker_url)._replace(path="/" + vhost))
    settings = base.with_overrides(broker_url=url)
    try:
        measure(settings, terminals, ops)
    finally:
        subprocess.run(["rabbitmqctl", "delete_vhost", vhost], check=True, capture_output=True)


def measure(settings: Settings, terminals: int, ops: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for own in (False, True, False, True):
            rate = variant(Path(tmp), settings, own, terminals, ops)
            name = "own users" if own else "shared guest"
            print(f"{name:>12}: {terminals} x {ops} ops, {rate:,.0f} ops/s", flush=True)


if __name__ == "__main__":
    main()
