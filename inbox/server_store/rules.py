"""The store rules both adapters share: collapsing a batch, verdicts, contiguity.

An adapter plans a batch (`plan`), inserts the planned tracking rows, learns which were new
and which new versions became current, then asks `verdicts` for the answer to each message.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cajasync.core.server_tables import APPLIED, REJECTED, STALE
from inbox.server_store.base import (
    MAX_INT,
    Accepted,
    Incoming,
    Invalid,
    Outcome,
    Rejection,
    Status,
    Unreadable,
    Verdict,
    digest_of,
    storage_problem,
)
from schemas.codec import encode
from schemas.envelope import OpEnvelope
from schemas.ops import topic_of

Key = tuple[str, int]
"""(op_id, version): the identity of a tracking row."""


@dataclass(frozen=True, slots=True)
class Row:
    """A tracking row to insert: an accepted envelope, or an invalid one recorded as rejected."""

    key: Key
    terminal: str
    seq: int
    topic: str
    digest: str
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


@dataclass(frozen=True, slots=True)
class Held:
    """What a tracking row already held says: its status, reason and content digest."""

    status: str
    reason: str
    digest: str  # "" for rows recorded before digests were kept


@dataclass(slots=True)
class Plan:
    """A batch reduced to one row per key, remembering each message's own row."""

    incoming: list[Incoming]
    own: list[Row | None]
    rows: dict[Key, Row] = field(default_factory=dict)

    def sorted_rows(self) -> list[Row]:
        """Rows in key order, so competing transactions lock them in the same order."""
        return [self.rows[key] for key in sorted(self.rows)]


@dataclass(frozen=True, slots=True)
class Learned:
    """What an adapter learned while inserting a plan's rows."""

    new: set[Key]
    applied: set[Key]
    stored: dict[Key, Held]  # rows already held, by key


def admit(incoming: Incoming) -> Incoming:
    """Turn an operation that does not fit the store into an invalid one, or a rejection.

    An operation whose seq or version does not fit the tracking row cannot hold a seq: it is
    rejected without being recorded (answered to its terminal, which sent it).
    """
    if isinstance(incoming, Rejection):
        return incoming
    if isinstance(incoming, Unreadable):
        return _admit_unreadable(incoming)
    envelope = incoming.envelope
    if isinstance(incoming, Accepted):
        problem = storage_problem(envelope)
        if problem is None:
            return incoming
        reason = f"terminal {envelope.terminal} seq {envelope.seq} op {envelope.op_id}: {problem}"
        incoming = Invalid(envelope, reason, incoming.digest)
    if envelope.seq <= MAX_INT and envelope.version <= MAX_INT:
        return incoming
    return Rejection(
        terminal=envelope.terminal,
        seq=envelope.seq,
        op_id=str(envelope.op_id),
        version=envelope.version,
        topic=topic_of(envelope.op),
        reason=incoming.reason,
    )


def _admit_unreadable(incoming: Unreadable) -> Incoming:
    if 1 <= incoming.seq <= MAX_INT and 1 <= incoming.version <= MAX_INT:
        return incoming
    return Rejection(
        terminal=incoming.terminal,
        seq=None,
        op_id=incoming.op_id,
        version=incoming.version,
        topic=incoming.topic,
        reason=incoming.reason,
    )


def row_of(incoming: Incoming) -> Row | None:
    """The tracking row of a message, or None for a rejection: it is recorded nowhere."""
    if isinstance(incoming, Rejection):
        return None
    if isinstance(incoming, Unreadable):
        key = (incoming.op_id, incoming.version)
        reason = _printable(incoming.reason)
        return Row(key, incoming.terminal, incoming.seq, incoming.topic, incoming.digest, reason)
    env = incoming.envelope
    key = (str(env.op_id), env.version)
    topic = topic_of(env.op)
    digest = incoming.digest or digest_of(encode(env))
    if isinstance(incoming, Accepted):
        return Row(key, env.terminal, env.seq, topic, digest, envelope=env)
    reason = _printable(incoming.reason)
    return Row(key, env.terminal, env.seq, topic, digest, reason=reason)


def _printable(text: str) -> str:
    """Text a database accepts (PostgreSQL refuses NUL characters)."""
    return text.replace("\x00", "\\x00")


def plan(batch: Sequence[Incoming]) -> Plan:
    """One row per key (the first arrival wins) and every message's own row."""
    admitted = [admit(incoming) for incoming in batch]
    result = Plan(incoming=admitted, own=[row_of(incoming) for incoming in admitted])
    for row in result.own:
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
    for incoming, own in zip(planned.incoming, planned.own, strict=True):
        if own is None:
            result.append(_verdict(incoming, "rejected", _reason(incoming), "rejected"))
        elif own.key in learned.new and own.key not in answered:
            answered.add(own.key)
            result.append(_first_verdict(incoming, own, learned.applied))
        elif own.key in learned.new:
            first = planned.rows[own.key]
            status = APPLIED if first.accepted else REJECTED
            result.append(_repeat_verdict(incoming, own, Held(status, first.reason, first.digest)))
        elif own.key in learned.stored:
            result.append(_repeat_verdict(incoming, own, learned.stored[own.key]))
        else:
            result.append(_verdict(incoming, "rejected", _seq_taken(own), "conflict"))
    return result


def _first_verdict(incoming: Incoming, row: Row, applied: set[Key]) -> Verdict:
    status = status_of(row, applied)
    if status == REJECTED:
        return _verdict(incoming, "rejected", row.reason, "rejected")
    return _verdict(incoming, "acked", "", "applied" if status == APPLIED else "stale")


def _repeat_verdict(incoming: Incoming, own: Row, held: Held) -> Verdict:
    """A duplicate is answered as its first copy was; a copy with other content too, but flagged."""
    status: Status = "rejected" if held.status == REJECTED else "acked"
    reason = held.reason if status == "rejected" else ""
    if held.digest and own.digest != held.digest:
        return _verdict(incoming, status, reason, "conflict", dead_letter=_other_content(own, held))
    return _verdict(incoming, status, reason, "duplicate")


def _other_content(own: Row, held: Held) -> str:
    return (
        f"op {own.op_id} version {own.version} (terminal {own.terminal} seq {own.seq}) arrived "
        f"again with other content: sha256 {own.digest}, held {held.digest}; the first is kept"
    )


def _seq_taken(own: Row) -> str:
    return (
        f"seq {own.seq} of terminal {own.terminal} is held by another operation; op "
        f"{own.op_id} version {own.version} claims it and is not taken"
    )


def _reason(incoming: Incoming) -> str:
    return "" if isinstance(incoming, Accepted) else incoming.reason


def _verdict(
    incoming: Incoming,
    status: Status,
    reason: str,
    outcome: Outcome,
    *,
    dead_letter: str | None = None,
) -> Verdict:
    """The verdict on one message; every rejection is dead-lettered with its reason."""
    dead = (reason if status == "rejected" else "") if dead_letter is None else dead_letter
    if isinstance(incoming, Rejection | Unreadable):
        return Verdict(
            incoming.terminal,
            incoming.seq,
            incoming.op_id,
            incoming.version,
            status,
            reason,
            outcome,
            dead,
        )
    env = incoming.envelope
    op_id = str(env.op_id)
    return Verdict(env.terminal, env.seq, op_id, env.version, status, reason, outcome, dead)


def advance(contiguous: int, held_above: Iterable[int]) -> int:
    """Walk held seqs above `contiguous`, in ascending order, while they follow on."""
    for seq in held_above:
        if seq != contiguous + 1:
            break
        contiguous = seq
    return contiguous
