""" "Obtener datos" / "Actualizar Datos": ask the server for a snapshot and apply it.

    result = pull(engine, settings, ["productos"], images=True)   # bootstrap or refresh
    result = pull(engine, settings, None)                         # every topic, refresh
    result = pull(engine, settings, ["clientes"], keys=["C1"])    # some records only
    result = pull(engine, settings, ["stock"], location="L2")     # another location's stock

A pull records a row in `cajasync_pulls`, publishes a `SnapshotRequest` (the terminal's
position in each stream it already follows, so the server sends only what changed since;
none, or `full`, for a whole snapshot) and runs the terminal's own relay session
(`run_terminal`) until the replies have been applied and the row says done. The relay
applies every reply through inbox/replica.py, so a `terminal run` process consuming the
same queue at the same time is no problem: whichever gets a reply applies it to the
same database, and the row shows the progress of both.

A pull naming keys asks for those records whatever the positions; it moves no position
and does not count as a refresh of its topics (inbox/replica.py). A pull of another
location's stock brings that location's stream into the replica beside the till's own;
only the till's own location is followed live.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import NamedTuple

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cajasync.broker.links import send_request
from cajasync.core.identity import TerminalIdentity, load_identity
from cajasync.core.settings import Settings
from cajasync.core.terminal_tables import pulls
from cajasync.errors import CajasyncError, ConfigError, PullCancelled, PullTimedOut
from cajasync.processes.terminal import run_terminal
from inbox.entitlement import Requester, streams_for
from inbox.replica import ABANDONED, DONE, positions, start_pull
from schemas.envelope import TerminalId
from schemas.feed import SnapshotRequest, split_stream
from schemas.topics import DOWN_TOPIC_SCOPES, TABLE_KINDS, TABLE_TOPICS, down_topic

POLL_S = 0.05
STOP_WAIT_S = 30.0

# (records, bytes, images, image bytes) received so far
Progress = Callable[[int, int, int, int], None]


class PullResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a pull brought: records and images applied, bytes received, time taken."""

    request_id: str
    topics: list[str]
    full: bool
    status: str
    records: int
    bytes: int
    images: int
    image_bytes: int
    seconds: float
    location: str | None = None  # another location's stock was pulled
    keys: list[str] = []  # only these records were asked for
    missing_keys: list[str] = []  # asked for, but not on the server
    removed: int = 0  # records a whole snapshot did not list, removed from the replica


def pull(
    engine: Engine,
    settings: Settings,
    topics: Sequence[str] | None,
    *,
    images: bool = False,
    full: bool = False,
    combo_products: bool = False,
    keys: Sequence[str] = (),
    location: str | None = None,
    timeout: float = 300,
    on_progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> PullResult:
    """Bootstrap or refresh `topics` (slugs or English aliases; None: every topic this
    terminal receives) and return once everything asked for has been applied.

    `images` also fetches the images the replica refers to and lacks; `full` ignores the
    terminal's positions and takes a whole snapshot; `combo_products` also brings the
    products the combos refer to. `keys` asks for those records only (the result lists
    the ones the server lacks); `location` another location's stock instead of the till's
    own (only `loc` topics may be pulled with it). Raises ConfigError for a bad
    combination, CajasyncError when the pull has not finished
    within `timeout` seconds (what arrived stays applied), BrokerUnavailable when the
    request cannot be sent. Setting `cancel` (from another thread: the window's Cancelar,
    the command's Ctrl-C) stops it within a poll: PullCancelled, what arrived stays applied.
    """
    started = time.monotonic()
    with engine.connect() as connection:
        identity = load_identity(connection)
    slugs = pull_topics(identity, topics)
    keys = list(dict.fromkeys(keys))
    other = other_location(identity, slugs, location)
    if keys and full:
        raise ConfigError("a pull of some keys is never a full snapshot: drop --full or the keys")
    request_id = str(uuid.uuid4())
    with engine.begin() as connection:
        since = {} if full or keys else stream_positions(connection, slugs, identity, other)
        start_pull(
            connection, request_id, slugs, full=full, images=images, keys=keys, location=other
        )
    request = SnapshotRequest(
        terminal=identity.terminal,
        location=identity.location,
        pos=identity.pos,
        terminal_kind=identity.kind,
        request_id=request_id,
        topics=slugs,
        since=since,
        images=images,
        combo_products=combo_products,
        keys=keys,
        from_location=other,
    )
    try:
        send_request(settings, identity, request)
        _run_until_done(engine, settings, request_id, started + timeout, on_progress, cancel)
    except BaseException:
        _abandon(engine, request_id)
        raise
    return _result(engine, request_id, time.monotonic() - started)


def pull_topics(identity: TerminalIdentity, topics: Sequence[str] | None) -> list[str]:
    """Slugs of the topics to pull, in glossary order; tables only on restaurants/hotels."""
    offered = [
        topic
        for topic in DOWN_TOPIC_SCOPES
        if topic not in TABLE_TOPICS or identity.kind in TABLE_KINDS
    ]
    if topics is None:
        return offered
    wanted = {down_topic(name) for name in topics}
    refused = sorted(wanted - set(offered))
    if refused:
        raise ConfigError(
            f"terminal {identity.terminal} is a {identity.kind} terminal: it does not receive "
            f"{', '.join(refused)} (tables and rooms are for restaurant and hotel terminals)"
        )
    if not wanted:
        raise ConfigError("name at least one topic to pull (or pull them all)")
    return [topic for topic in offered if topic in wanted]


def other_location(
    identity: TerminalIdentity, topics: Sequence[str], location: str | None
) -> str | None:
    """`location` when it names another location than the till's (None: its own); a
    ConfigError unless it is a location id and every topic is one of scope `loc` (stock)."""
    if location is None or location == identity.location:
        return None
    try:
        msgspec.convert(location, TerminalId)
    except msgspec.ValidationError:
        raise ConfigError(
            f"location {location!r} must be 1-32 letters, digits, '-' or '_'"
        ) from None
    others = [topic for topic in topics if DOWN_TOPIC_SCOPES[topic] != "loc"]
    if others:
        raise ConfigError(
            f"another location ({location}) has only its stock to pull, not {', '.join(others)}"
        )
    return location


def stream_positions(
    connection: sa.Connection,
    topics: Sequence[str],
    identity: TerminalIdentity | None = None,
    location: str | None = None,
) -> dict[str, int]:
    """The terminal's position in every stream of `topics` it has one for (a refresh); with
    `identity`, only in the streams the request covers (its own, or `location`'s stock)."""
    covered: set[str] | None = None
    if identity is not None:
        requester = Requester(identity.terminal, identity.location, identity.pos, identity.kind)
        covered = {s for topic in topics for s in streams_for(requester, topic, location)}
    return {
        stream: position
        for stream, position in positions(connection).items()
        if split_stream(stream)[0] in topics
        and position > 0
        and (covered is None or stream in covered)
    }


class _Session:
    """The terminal's relay in a thread, stopped on request."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(engine, settings), name="cajasync-pull", daemon=True
        )
        self._thread.start()

    def _run(self, engine: Engine, settings: Settings) -> None:
        try:
            run_terminal(engine, settings, stop=self.stop)
        except BaseException as exc:
            self.error = exc

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        """Stop the relay; it applies and acks what it holds before it returns."""
        self.stop.set()
        self._thread.join(STOP_WAIT_S)


def _run_until_done(
    engine: Engine,
    settings: Settings,
    request_id: str,
    deadline: float,
    on_progress: Progress | None,
    cancel: threading.Event | None = None,
) -> None:
    """Relay until the pull's row is done; raise the relay's error, on the deadline or
    when `cancel` is set."""
    session = _Session(engine, settings)
    reported: tuple[int, int, int, int] | None = None
    try:
        while True:
            row = _row(engine, request_id)
            counts = (row.records, row.bytes, row.image_count, row.image_bytes)
            if on_progress is not None and counts != reported:
                on_progress(*counts)
                reported = counts
            if row.status == DONE:
                return
            if session.error is not None or not session.alive:
                raise CajasyncError(
                    f"pull {request_id}: the terminal session ended: {session.error}"
                ) from session.error
            if time.monotonic() >= deadline:
                raise PullTimedOut(
                    f"pull {request_id} not finished in time (status {row.status}, "
                    f"{row.records} records so far); is `cajasync server run` answering "
                    "requests? What arrived is applied; pull again to complete it"
                )
            if cancel is not None and cancel.is_set():
                break
            session.stop.wait(POLL_S)
    finally:
        session.close()
    row = _row(engine, request_id)  # with what the relay applied as it stopped
    if row.status == DONE:
        return  # everything had arrived: nothing was cut short
    raise PullCancelled(
        f"pull {request_id} cancelled after {row.records} records and {row.image_count} "
        "images: what arrived is applied; pull again to complete it",
        records=row.records,
        images=row.image_count,
    )


class _State(NamedTuple):
    status: str
    records: int
    bytes: int
    image_count: int
    image_bytes: int


def _row(engine: Engine, request_id: str) -> _State:
    """The progress of a pull as its row says."""
    with engine.connect() as connection:
        row = connection.execute(
            sa.select(
                pulls.c.status,
                pulls.c.records,
                pulls.c.bytes,
                pulls.c.image_count,
                pulls.c.image_bytes,
            ).where(pulls.c.request_id == request_id)
        ).one()
    return _State(*row)


def _abandon(engine: Engine, request_id: str) -> None:
    """Mark an unfinished pull abandoned (replies arriving later still apply)."""
    with engine.begin() as connection:
        connection.execute(
            pulls.update()
            .where(pulls.c.request_id == request_id, pulls.c.status != DONE)
            .values(status=ABANDONED)
        )


def _result(engine: Engine, request_id: str, seconds: float) -> PullResult:
    with engine.connect() as connection:
        row = connection.execute(sa.select(pulls).where(pulls.c.request_id == request_id)).one()
    return PullResult(
        request_id=request_id,
        topics=msgspec.json.decode(row.topics, type=list[str]),
        full=row.full,
        status=row.status,
        records=row.records,
        bytes=row.bytes,
        images=row.image_count,
        image_bytes=row.image_bytes,
        seconds=round(seconds, 3),
        location=row.location,
        keys=msgspec.json.decode(row._mapping["keys"] or "[]", type=list[str]),
        missing_keys=msgspec.json.decode(row.missing_keys or "[]", type=list[str]),
        removed=row.removed or 0,
    )
