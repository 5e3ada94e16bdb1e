"""A technician's questions to the server, asked from a till ("Comparar").

    comparison = compare(engine, settings, None, Period())      # every topic, side by side
    held = ask_held(settings, identity, "ventas", op_ids, timeout=5)
    answer = ask_record(settings, identity, "productos", "7790001", timeout=5)  # one record

Questions go through the request queue and come back to the asker's direct reply-to
address (cajasync/broker/asking.py), so they work while `cajasync terminal run` consumes the
till's own queue. The till's side is read here: its operations from the outbox and the
purge log (outbox/recorded.py), its replica (inbox/replica_store), within the till's own
identity; the server answers over the same entries (inbox/questions.py).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

import msgspec
from sqlalchemy.engine import Engine

from cajasync.core.db import reading
from cajasync.core.identity import TerminalIdentity, load_identity
from cajasync.core.periods import Period
from cajasync.core.settings import Settings
from cajasync.core.terminal_tables import PENDING, REJECTED, SENT
from cajasync.errors import CajasyncError
from inbox.replica_api import Replica
from inbox.replica_store.sql import SqlReplicaStore
from outbox.recorded import PURGED, Purge, op_counts, state_counts, topic_purges
from outbox.views import ServerHeld, ServerLookup
from schemas.questions import (
    MAX_HELD,
    Answer,
    CountsAnswer,
    CountsQuestion,
    HeldAnswer,
    HeldOp,
    HeldQuestion,
    Question,
    RecordAnswer,
    RecordQuestion,
    Refused,
    TopicCount,
    decode_answer,
)
from schemas.topics import (
    DOWN_TOPIC_SCOPES,
    TABLE_KINDS,
    TABLE_TOPICS,
    UP_TOPICS,
    WEEKLY_FILES,
    down_topic,
    up_topic,
)

if TYPE_CHECKING:
    from cajasync.broker.ports import Askers, Asking

DEFAULT_TIMEOUT_S = 10.0
STOCK = "stock"


class TopicComparison(msgspec.Struct, frozen=True, kw_only=True):
    """One topic on both sides: `terminal` and `server` counts, `equal`, and the likely
    cause of a difference in words (`hint`). `states`: the till's operations per state."""

    topic: str
    terminal: int
    server: int
    equal: bool
    hint: str
    direction: str  # up (operations) or down (records)
    states: dict[str, int] = {}
    rejected_on_server: int = 0


class Comparison(msgspec.Struct, frozen=True, kw_only=True):
    """A compare of a till against the server."""

    terminal: str
    period: str
    topics: list[TopicComparison]
    notes: list[str] = []
    seconds: float = 0.0

    @property
    def equal(self) -> bool:
        return all(topic.equal for topic in self.topics)


def pika_asking(settings: Settings, identity: TerminalIdentity) -> AbstractContextManager[Asking]:
    """The questions' channel to the server (cajasync/broker/asking.py), imported at the
    first question: `local_counts` asks none, and the window shows them before pika loads."""
    from cajasync.broker.asking import pika_asking as asking

    return asking(settings, identity)


def compare(
    engine: Engine,
    settings: Settings,
    topics: Sequence[str] | None,
    period: Period,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    askers: Askers = pika_asking,
    db: str = "caja.db",
) -> Comparison:
    """Count every topic (or `topics`, slugs or aliases) on the till and on the server for
    the same filter. `db` is how the hints name the till's database."""
    started = time.monotonic()
    with reading(engine) as connection:
        identity = load_identity(connection)
    slugs = compare_topics(identity, topics)
    question = CountsQuestion(
        **identity_fields(identity),
        request_id=str(uuid.uuid4()),
        topics=slugs,
        since=period.since,
        until=period.until,
    )
    with askers(settings, identity) as asking:
        answers = ask(asking, question, timeout=timeout)
    server = {
        count.topic: count
        for answer in answers
        if isinstance(answer, CountsAnswer)
        for count in answer.counts
    }
    rows = [
        _compare_topic(engine, identity, topic, period, server.get(topic), db) for topic in slugs
    ]
    notes = []
    if not period.open and any(topic in DOWN_TOPIC_SCOPES for topic in slugs):
        notes.append("the period filters operations only: download topics are compared whole")
    return Comparison(
        terminal=identity.terminal,
        period=period.describe(),
        topics=rows,
        notes=notes,
        seconds=time.monotonic() - started,
    )


def local_counts(engine: Engine, period: Period) -> dict[str, int]:
    """The till's side of `compare` for every topic it compares, without asking the
    server: operations per up topic recorded in `period`, live records per download topic
    (stock: its own location's). Plain COUNTs, for a screen that shows them live."""
    with reading(engine) as connection:
        identity = load_identity(connection)
        slugs = compare_topics(identity, None)
        counts = op_counts(connection, [t for t in slugs if t in UP_TOPICS], period)
    held = Replica(engine, location=identity.location).count()
    counts.update({topic: held.get(topic, 0) for topic in slugs if topic in DOWN_TOPIC_SCOPES})
    return {topic: counts[topic] for topic in slugs}


def compare_topics(identity: TerminalIdentity, topics: Sequence[str] | None) -> list[str]:
    """Slugs to compare: up topics first, then download topics the till receives."""
    offered = list(UP_TOPICS) + [
        topic
        for topic in DOWN_TOPIC_SCOPES
        if topic not in TABLE_TOPICS or identity.kind in TABLE_KINDS
    ]
    if topics is None:
        return offered
    return list(dict.fromkeys(topic_slug(name) for name in topics))


def topic_slug(name: str) -> str:
    """An up or download topic's slug from its slug or English alias (ConfigError if
    neither)."""
    try:
        return up_topic(name)
    except CajasyncError:
        return down_topic(name)


def ask_held(
    settings: Settings,
    identity: TerminalIdentity,
    topic: str,
    op_ids: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    askers: Askers = pika_asking,
) -> dict[str, HeldOp]:
    """What the server holds of these operations of the till (version, when received,
    applied or rejected), by op id; those it does not hold are absent."""
    held: dict[str, HeldOp] = {}
    wanted = list(dict.fromkeys(op_ids))
    with askers(settings, identity) as asking:
        for start in range(0, max(len(wanted), 1), MAX_HELD):
            question = HeldQuestion(
                **identity_fields(identity),
                request_id=str(uuid.uuid4()),
                topic=up_topic(topic),
                op_ids=wanted[start : start + MAX_HELD],
            )
            for answer in ask(asking, question, timeout=timeout):
                if isinstance(answer, HeldAnswer):
                    held.update((op.op_id, op) for op in answer.held)
    return held


def ask_record(
    settings: Settings,
    identity: TerminalIdentity,
    topic: str,
    key: str,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    askers: Askers = pika_asking,
) -> RecordAnswer:
    """One record as the server holds it for the till: a download topic's record by key,
    or one of the till's operations by op id (status `absent` when it holds none)."""
    question = RecordQuestion(
        **identity_fields(identity),
        request_id=str(uuid.uuid4()),
        topic=topic_slug(topic),
        key=key,
    )
    with askers(settings, identity) as asking:
        answers = ask(asking, question, timeout=timeout)
    for answer in answers:
        if isinstance(answer, RecordAnswer):
            return answer
    raise CajasyncError(f"the server did not answer about {question.topic} {key}")


def ask(
    asking: Asking, question: Question, *, timeout: float, sizes: list[int] | None = None
) -> list[Answer]:
    """Every answer message to `question` (their sizes appended to `sizes`);
    CajasyncError when the server refused it."""
    answers: list[Answer] = []

    def until(body: bytes) -> bool:
        if sizes is not None:
            sizes.append(len(body))
        answer = decode_answer(body)
        answers.append(answer)
        return not answer.more

    asking.ask(question, timeout=timeout, until=until)
    for answer in answers:
        if isinstance(answer, Refused):
            raise CajasyncError(f"the server refused the question: {answer.reason}")
    return answers


def identity_fields(identity: TerminalIdentity) -> dict[str, str]:
    """The till's identity as every question carries it."""
    return {
        "terminal": identity.terminal,
        "location": identity.location,
        "pos": identity.pos,
        "terminal_kind": identity.kind,
    }


# -- one topic -----------------------------------------------------------------------------


def _compare_topic(
    engine: Engine,
    identity: TerminalIdentity,
    topic: str,
    period: Period,
    server: TopicCount | None,
    db: str,
) -> TopicComparison:
    held = 0 if server is None else server.count
    if topic in DOWN_TOPIC_SCOPES:
        count = len(replica_versions(engine, identity, topic))
        return TopicComparison(
            topic=topic,
            terminal=count,
            server=held,
            equal=count == held,
            hint=_down_hint(topic, count, held, db),
            direction="down",
        )
    with reading(engine) as connection:
        states = state_counts(connection, topic, period)
        purges = topic_purges(connection, topic)
    counted = {state: n for state, n in states.items() if topic != WEEKLY_FILES or state != PURGED}
    count = sum(counted.values())
    rejected_on_server = 0 if server is None else server.rejected
    equal, hint = _up_hint(topic, count, held, states, purges, db)
    return TopicComparison(
        topic=topic,
        terminal=count,
        server=held,
        equal=equal,
        hint=hint,
        direction="up",
        states=states,
        rejected_on_server=rejected_on_server,
    )


def replica_versions(
    engine: Engine, identity: TerminalIdentity, topic: str
) -> list[tuple[str, int]]:
    """(key, version) of the till's live replica records of `topic` (stock: its own
    location's, whose keys start with `<location>/`)."""
    prefix = f"{identity.location}/" if topic == STOCK else ""
    return SqlReplicaStore(engine).versions(topic, prefix)


def _up_hint(
    topic: str,
    terminal: int,
    server: int,
    states: dict[str, int],
    purges: list[Purge],
    db: str,
) -> tuple[bool, str]:
    """(equal, the likely causes of a difference) for an up topic."""
    hints = []
    unsent = states.get(PENDING, 0) + states.get(SENT, 0)
    if unsent:
        hints.append(
            f"{unsent} not transmitted yet: run `cajasync terminal run --db {db}` "
            f"(or `cajasync pending replay --db {db} --all`)"
        )
    if states.get(REJECTED, 0):
        hints.append(
            f"{states[REJECTED]} refused by the server: "
            f"`cajasync pending list --db {db} --state rejected`"
        )
    equal = terminal == server
    if server > terminal:
        surplus = server - terminal
        explained = _purge_explains(topic, surplus, states, purges)
        if explained is not None:
            equal = True
            hints.append(
                f"{surplus} purged on this till on {explained.purged_at:%Y-%m-%d %H:%M} by "
                f"{explained.user}: not a difference"
            )
        else:
            hints.append(
                f"{surplus} more on the server than on this till: loaded on the server by hand "
                f"(`cajasync diff --db {db} {topic}` lists them)"
            )
    elif terminal > server + unsent + states.get(REJECTED, 0):
        missing = terminal - server - unsent - states.get(REJECTED, 0)
        hints.append(
            f"{missing} acknowledged here but not on the server: "
            f"`cajasync diff --db {db} {topic}` lists them, `cajasync pending replay` resends"
        )
    return equal, "; ".join(hints)


def _purge_explains(
    topic: str, surplus: int, states: dict[str, int], purges: list[Purge]
) -> Purge | None:
    """The latest purge of `topic` when purges account for `surplus` operations the till
    no longer counts (weekly files: purged chunks; others: purged rows without a slim
    row left), else None."""
    if not purges:
        return None
    uncounted = states.get(PURGED, 0)
    if topic != WEEKLY_FILES:
        uncounted = sum(purge.rows for purge in purges) - uncounted
    return purges[-1] if 0 < surplus <= uncounted else None


def _down_hint(topic: str, terminal: int, server: int, db: str) -> str:
    if terminal < server:
        return f"{server - terminal} missing on the terminal: `cajasync pull --db {db} {topic}`"
    if terminal > server:
        return (
            f"{terminal - server} on the terminal that the server no longer has: "
            f"`cajasync tools prune {topic} --db {db}`"
        )
    return ""


def held_lookup(
    engine: Engine, settings: Settings, topic: str, *, timeout: float = DEFAULT_TIMEOUT_S
) -> ServerLookup:
    """The sales view's server column (outbox/views.py): what the server holds of the
    till's operations, asked over the broker for each page listed."""
    with reading(engine) as connection:
        identity = load_identity(connection)

    def lookup(op_ids: list[str]) -> dict[str, ServerHeld]:
        held = ask_held(settings, identity, topic, op_ids, timeout=timeout)
        return {
            op_id: ServerHeld(version=op.version, received_at=op.received_at, status=op.status)
            for op_id, op in held.items()
        }

    return lookup
