"""Apply a batch even when the database refuses one of its messages.

A batch is applied in one transaction. When the database refuses it for its data
(StoreDataError: a value out of a column's range, a constraint the rules did not
foresee), the batch is halved and each half applied in its own transaction; a half that
is refused again is halved again, and a single message that is still refused is rejected
with the database's reason (its rejection recorded like any other, so its seq counts as
held). Everything else is applied as usual: one bad message among n costs about
2·log2(n) more transactions, and none of the others is lost.

A store that is away (StoreUnavailable) is not the batch's fault: `apply` is expected to
wait for it, and whatever it raises in the end is raised here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cajasync.errors import StoreDataError
from inbox.store.base import Accepted, Incoming, Rejection, Verdict
from schemas.ops import topic_of

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
    if isinstance(incoming, Rejection):  # already dead-lettered with its own reason
        return _unrecorded(incoming)
    rejection = refusal(incoming, exc.reason)
    refused[index] = rejection.reason
    try:
        return apply([rejection])[0]
    except StoreDataError:
        return _unrecorded(rejection)


def _unrecorded(rejection: Rejection) -> Verdict:
    return Verdict(
        rejection.terminal,
        rejection.seq,
        rejection.op_id,
        rejection.version,
        "rejected",
        rejection.reason,
        "rejected",
    )


def refusal(accepted: Accepted, says: str) -> Rejection:
    """The rejection of a valid operation the database refused, with its reason."""
    env = accepted.envelope
    return Rejection(
        terminal=env.terminal,
        seq=env.seq,
        op_id=str(env.op_id),
        version=env.version,
        topic=topic_of(env.op),
        reason=(
            f"terminal {env.terminal} seq {env.seq} op {env.op_id}: "
            f"the server store refused it ({says})"
        ),
    )
