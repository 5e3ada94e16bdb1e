"""The store rules both adapters share: collapsing a batch, verdicts, contiguity.

An adapter plans a batch (`plan`), inserts the planned tracking rows, learns which were new
and which new versions became current, then asks `verdicts` for the answer to each message.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from inbox.store.base import (
    MAX_INT,
    MAX_TOPIC,
    TERMINAL_ID,
    Accepted,
    Incoming,
    Outcome,
    Rejection,
    Status,
    Verdict,
    storage_problem,
)
from inbox.store.tables import APPLIED, REJECTED, STALE
from schemas.envelope import OpEnvelope
from schemas.ops import topic_of

Key = tuple[str, int]
"""(op_id, version): the identity of a tracking row."""


@dataclass(frozen=True, slots=True)
class Row:
    """A tracking row to insert: an accepted envelope or a recordable rejection."""

    key: Key
    terminal: str
    seq: int
    topic: str
    reason: str = ""
    envelope: OpEnvelope | None = None

    @property
    def op_id(self) -> str:
        return self.key[0]

    @property
    def accepted(self) -> bool:
        return self.envelope is not None

    @property
    def version(self) -> int:
        return self.key[1]


@dataclass(slots=True)
class Plan:
    """A batch reduced to one row per key, remembering which key each message maps to."""

    incoming: list[Incoming]
    keys: list[Key | None]
    rows: dict[Key, Row] = field(default_factory=dict)

    def sorted_rows(self) -> list[Row]:
        """Rows in key order, so competing transactions lock them in the same order."""
        return [self.rows[key] for key in sorted(self.rows)]


@dataclass(frozen=True, slots=True)
class Learned:
    """What an adapter learned while inserting a plan's rows."""

    new: set[Key]
    applied: set[Key]
    stored: dict[Key, tuple[str, str]]  # key -> (status, reason) of rows already held


def rejection_key(terminal: str, seq: int) -> Key:
    """The synthetic tracking key of a rejected message."""
    return (f"bad:{terminal}:{seq}", 0)


def admit(incoming: Incoming) -> Incoming:
    """Turn an accepted envelope that does not fit the store into a rejection."""
    if isinstance(incoming, Rejection):
        return incoming
    envelope = incoming.envelope
    problem = storage_problem(envelope)
    if problem is None:
        return incoming
    return Rejection(
        terminal=envelope.terminal,
        seq=envelope.seq if envelope.seq <= MAX_INT else None,
        op_id=str(envelope.op_id),
        version=envelope.version,
        topic=topic_of(envelope.op),
        reason=f"terminal {envelope.terminal} seq {envelope.seq} op {envelope.op_id}: {problem}",
    )


def row_of(incoming: Incoming) -> Row | None:
    """The tracking row of a message, or None for a rejection of unknown terminal or seq."""
    if isinstance(incoming, Accepted):
        env = incoming.envelope
        key = (str(env.op_id), env.version)
        return Row(key, env.terminal, env.seq, topic_of(env.op), envelope=env)
    terminal, seq = incoming.terminal, incoming.seq
    if terminal is None or not TERMINAL_ID.match(terminal):
        return None
    if seq is None or not 1 <= seq <= MAX_INT:
        return None
    topic = _printable(incoming.topic)[:MAX_TOPIC]
    reason = _printable(incoming.reason)
    return Row(rejection_key(terminal, seq), terminal, seq, topic, reason=reason)


def _printable(text: str) -> str:
    """Text a database accepts (PostgreSQL refuses NUL characters)."""
    return text.replace("\x00", "\\x00")


def plan(batch: Sequence[Incoming]) -> Plan:
    """One row per key (the first arrival wins) and the key of every message."""
    admitted = [admit(incoming) for incoming in batch]
    result = Plan(incoming=admitted, keys=[])
    for incoming in admitted:
        row = row_of(incoming)
        result.keys.append(None if row is None else row.key)
        if row is not None:
            result.rows.setdefault(row.key, row)
    return result


def current_candidates(rows: Iterable[Row]) -> list[Row]:
    """Per op id, the highest new version among accepted rows, in op id order."""
    best: dict[str, Row] = {}
    for row in rows:
        if row.envelope is None:
            continue
        held = best.get(row.op_id)
        if held is None or held.version < row.version:
            best[row.op_id] = row
    return [best[op_id] for op_id in sorted(best)]


def status_of(row: Row, applied: set[Key]) -> str:
    """The tracking status of a new row."""
    if not row.accepted:
        return REJECTED
    return APPLIED if row.key in applied else STALE


def verdicts(planned: Plan, learned: Learned) -> list[Verdict]:
    """One verdict per message of the batch, in order."""
    answered: set[Key] = set()
    result = []
    for incoming, key in zip(planned.incoming, planned.keys, strict=True):
        if key is None:
            result.append(_verdict(incoming, "rejected", _reason(incoming), "rejected"))
        elif key in learned.new and key not in answered:
            answered.add(key)
            result.append(_first_verdict(incoming, planned.rows[key], learned.applied))
        elif key in learned.new:
            row = planned.rows[key]
            status = APPLIED if row.accepted else REJECTED
            result.append(_repeat_verdict(incoming, status, row.reason))
        elif key in learned.stored:
            result.append(_repeat_verdict(incoming, *learned.stored[key]))
        else:
            row = planned.rows[key]
            reason = f"seq {row.seq} of terminal {row.terminal} is held by another operation"
            result.append(_verdict(incoming, "rejected", reason, "rejected"))
    return result


def _first_verdict(incoming: Incoming, row: Row, applied: set[Key]) -> Verdict:
    status = status_of(row, applied)
    if status == REJECTED:
        return _verdict(incoming, "rejected", row.reason, "rejected")
    return _verdict(incoming, "acked", "", "applied" if status == APPLIED else "stale")


def _repeat_verdict(incoming: Incoming, stored_status: str, reason: str) -> Verdict:
    if stored_status == REJECTED:
        return _verdict(incoming, "rejected", reason, "duplicate")
    return _verdict(incoming, "acked", "", "duplicate")


def _reason(incoming: Incoming) -> str:
    return incoming.reason if isinstance(incoming, Rejection) else ""


def _verdict(incoming: Incoming, status: Status, reason: str, outcome: Outcome) -> Verdict:
    if isinstance(incoming, Accepted):
        env = incoming.envelope
        return Verdict(env.terminal, env.seq, str(env.op_id), env.version, status, reason, outcome)
    return Verdict(
        incoming.terminal,
        incoming.seq,
        incoming.op_id,
        incoming.version,
        status,
        reason,
        outcome,
    )


def advance(contiguous: int, held_above: Iterable[int]) -> int:
    """Walk held seqs above `contiguous`, in ascending order, while they follow on."""
    for seq in held_above:
        if seq != contiguous + 1:
            break
        contiguous = seq
    return contiguous
