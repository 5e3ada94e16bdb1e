"""Apply a batch even when the database refuses one of its messages.

A batch is applied in one transaction. When the database refuses it for its data
(StoreDataError: a value out of a column's range, a constraint the rules did not
foresee), the batch is halved and each half applied in its own transaction; a half that
is refused again is halved again, and a single message that is still refused is rejected
with the database's reason: it becomes `Invalid`, recorded as rejected under its own
`(op_id, version)` like any operation that fails validation, so its seq counts as held, and
its verdict carries the dead-letter reason. Everything else is applied as usual: one bad
message among n costs about 2·log2(n) more transactions, and none of the others is lost.

A store that is away (StoreUnavailable) is not the batch's fault: `apply` is expected to
wait for it, and whatever it raises in the end is raised here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cajasync.errors import StoreDataError
from inbox.server_store.base import Accepted, Incoming, Invalid, Rejection, Unreadable, Verdict

Apply = Callable[[Sequence[Incoming]], list[Verdict]]
"""`ServerStore.apply`, possibly wrapped in a retry policy."""


@dataclass(slots=True)
class Applied:
    """The verdicts of a batch, in order, and the messages the database refused."""

    verdicts: list[Verdict]
    refused: dict[int, str] = field(default_factory=dict)  # index in the batch -> reason


def apply_isolating(apply: Apply, batch: Sequence[Incoming]) -> Applied:
    """Apply `batch`, isolating and rejecting the messages the database refuses."""
    verdicts: list[Verdict | None] = [None] * len(batch)
    refused: dict[int, str] = {}
    _apply_part(apply, batch, 0, len(batch), verdicts, refused)
    return Applied([verdict for verdict in verdicts if verdict is not None], refused)


def _apply_part(
    apply: Apply,
    batch: Sequence[Incoming],
    start: int,
    end: int,
    verdicts: list[Verdict | None],
    refused: dict[int, str],
) -> None:
    """Apply `batch[start:end]` in one transaction, or its halves after a refusal."""
    try:
        verdicts[start:end] = apply(batch[start:end])
        return
    except StoreDataError as exc:
        if end - start == 1:
            verdicts[start] = _refuse(apply, batch[start], exc, refused, start)
            return
    middle = (start + end) // 2
    _apply_part(apply, batch, start, middle, verdicts, refused)
    _apply_part(apply, batch, middle, end, verdicts, refused)


def _refuse(
    apply: Apply,
    incoming: Incoming,
    exc: StoreDataError,
    refused: dict[int, str],
    index: int,
) -> Verdict:
    """Reject a message the database refused; record the rejection when it can be."""
    if isinstance(incoming, Rejection):  # recorded nowhere: cannot be what was refused
        return _unrecorded(
            incoming.terminal, incoming.seq, incoming.op_id, incoming.version, incoming.reason
        )
    if isinstance(incoming, Unreadable):  # already a rejection: the store cannot record it
        reason = f"{incoming.reason}; the server store refused to record it ({exc.reason})"
        refused[index] = reason
        return _unrecorded(
            incoming.terminal, incoming.seq, incoming.op_id, incoming.version, reason
        )
    invalid = refusal(incoming, exc.reason)
    refused[index] = invalid.reason
    try:
        return apply([invalid])[0]
    except StoreDataError:
        env = invalid.envelope
        return _unrecorded(env.terminal, env.seq, str(env.op_id), env.version, invalid.reason)


def _unrecorded(
    terminal: str | None, seq: int | None, op_id: str | None, version: int | None, reason: str
) -> Verdict:
    """A rejection the store could not even record: answered and dead-lettered all the same."""
    return Verdict(terminal, seq, op_id, version, "rejected", reason, "rejected", reason)


def refusal(incoming: Accepted | Invalid, says: str) -> Invalid:
    """A valid operation the database refused: its own terminal's, rejected with the reason."""
    env = incoming.envelope
    where = f"terminal {env.terminal} seq {env.seq} op {env.op_id}"
    reason = f"{where}: the server store refused it ({says})"
    return Invalid(env, reason, incoming.digest)
