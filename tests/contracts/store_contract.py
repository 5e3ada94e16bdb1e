"""The server store contract (inbox/server_store/base.py), written once: tests/unit runs it on
memory, tests/integration on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import msgspec

from inbox.server_store import (
    Accepted,
    Gap,
    Incoming,
    Invalid,
    Rejection,
    ServerStore,
    Unreadable,
)
from inbox.server_store.base import GapState
from schemas import (
    CashPayment,
    OpEnvelope,
    Operation,
    Sale,
    SaleLine,
    SalePayment,
    SaleTotals,
    WeeklyFileChunk,
    encode,
)

NOW = dt.datetime(2026, 3, 2, 12, 30, tzinfo=dt.UTC)


def sale(total: str = "12.10", *, number: int = 1, voided: bool = False) -> Sale:
    """A valid sale of one line whose total is `total` (21% VAT included)."""
    net = (Decimal(total) / Decimal("1.21")).quantize(Decimal("0.01"))
    lines = [SaleLine(product="P1", quantity=Decimal(1), unit_price=net, tax_rate=Decimal(21))]
    totals = SaleTotals.of(lines)
    payments = [SalePayment(method="cash", amount=totals.total)]
    return Sale(
        book="A",
        number=number,
        date=NOW,
        seller="S1",
        lines=lines,
        payments=payments,
        totals=totals,
        voided=voided,
    )


def payment(amount: str = "50.00") -> CashPayment:
    return CashPayment(
        kind="advance",
        payee_kind="supplier",
        payee="SUP1",
        amount=Decimal(amount),
        method="cash",
        date=NOW,
    )


def chunks(content: bytes, size: int, *, sha256: str | None = None) -> list[WeeklyFileChunk]:
    """A weekly file cut in chunks of `size` bytes."""
    digest = sha256 or hashlib.sha256(content).hexdigest()
    count = max(1, -(-len(content) // size))
    return [
        WeeklyFileChunk(
            week="2026-W10",
            file_name="fiscal.txt",
            size=len(content),
            sha256=digest,
            chunk_index=i,
            chunk_count=count,
            data=content[i * size : (i + 1) * size],
        )
        for i in range(count)
    ]


def op(
    terminal: str,
    seq: int,
    operation: Operation,
    *,
    op_id: uuid.UUID | None = None,
    version: int = 1,
) -> Accepted:
    envelope = OpEnvelope(
        terminal=terminal,
        seq=seq,
        op_id=op_id or uuid.uuid4(),
        version=version,
        recorded_at=NOW,
        op=operation,
    )
    return Accepted(envelope)


def invalid(terminal: str, seq: int, reason: str = "totals do not add up") -> Invalid:
    """An operation of its own terminal that failed validation."""
    return Invalid(op(terminal, seq, sale()).envelope, reason)


def stray(terminal: str | None, seq: int | None, reason: str = "undecodable") -> Rejection:
    """A message from nowhere: it did not decode, or its sender is not its terminal."""
    return Rejection(
        terminal=terminal, seq=seq, op_id=None, version=None, topic="ventas", reason=reason
    )


def unreadable(terminal: str, seq: int, *, version: int = 1, body: bytes = b"\xc1") -> Unreadable:
    """A row its terminal's own broker user sent that did not decode, named by its message."""
    return Unreadable(
        terminal=terminal,
        seq=seq,
        op_id=str(uuid.uuid4()),
        version=version,
        topic="ventas",
        reason="undecodable operation: MessagePack data is malformed",
        digest=hashlib.sha256(body).hexdigest(),
    )


def sha256(incoming: Accepted | Invalid) -> str:
    return hashlib.sha256(encode(incoming.envelope)).hexdigest()


class StoreContract:
    """Every ServerStore keeps these rules; subclasses provide the `store` fixture."""

    def test_new_sale_is_applied_and_acked(self, store: ServerStore) -> None:
        [verdict] = store.apply([op("T1", 1, sale())])
        assert (verdict.status, verdict.outcome, verdict.seq) == ("acked", "applied", 1)
        assert _stats(store) == {"T1": (1, 1, {"ventas": 1})}

    def test_duplicate_sale_is_applied_once(self, store: ServerStore) -> None:
        first = op("T1", 1, sale())
        verdicts = store.apply([first, first, first])
        assert [v.outcome for v in verdicts] == ["applied", "duplicate", "duplicate"]
        assert {v.status for v in verdicts} == {"acked"}
        assert _stats(store) == {"T1": (1, 1, {"ventas": 1})}

    def test_duplicate_in_a_later_batch_is_acked_again(self, store: ServerStore) -> None:
        first = op("T1", 1, sale())
        store.apply([first])
        [again] = store.apply([first])
        assert (again.status, again.outcome, again.op_id) == (
            "acked",
            "duplicate",
            str(first.envelope.op_id),
        )
        assert _stats(store) == {"T1": (1, 1, {"ventas": 1})}

    def test_newer_version_replaces_the_older(self, store: ServerStore) -> None:
        op_id = uuid.uuid4()
        store.apply([op("T1", 1, sale(), op_id=op_id)])
        [verdict] = store.apply([op("T1", 2, sale(voided=True), op_id=op_id, version=2)])
        assert verdict.outcome == "applied"
        assert _stats(store) == {"T1": (2, 2, {"ventas": 1})}

    def test_older_version_arriving_after_a_newer_one_is_stale(self, store: ServerStore) -> None:
        op_id = uuid.uuid4()
        store.apply([op("T1", 2, sale("24.20"), op_id=op_id, version=2)])
        [verdict] = store.apply([op("T1", 1, sale(), op_id=op_id, version=1)])
        assert (verdict.status, verdict.outcome) == ("acked", "stale")
        [again] = store.apply([op("T1", 1, sale(), op_id=op_id, version=1)])
        assert (again.status, again.outcome) == ("acked", "duplicate")
        assert _stats(store) == {"T1": (2, 2, {"ventas": 1})}

    def test_two_versions_in_one_batch_leave_the_newest(self, store: ServerStore) -> None:
        op_id = uuid.uuid4()
        v2 = op("T1", 2, sale("24.20"), op_id=op_id, version=2)
        v1 = op("T1", 1, sale(), op_id=op_id, version=1)
        verdicts = store.apply([v2, v1, v2])
        assert [v.outcome for v in verdicts] == ["applied", "stale", "duplicate"]
        assert _stats(store) == {"T1": (2, 2, {"ventas": 1})}

    def test_invalid_operation_is_recorded_as_rejected_and_its_seq_counts_as_held(
        self, store: ServerStore
    ) -> None:
        verdicts = store.apply(
            [op("T1", 1, sale()), invalid("T1", 2, "totals wrong"), op("T1", 3, sale())]
        )
        assert [(v.status, v.reason, v.dead_letter) for v in verdicts] == [
            ("acked", "", ""),
            ("rejected", "totals wrong", "totals wrong"),
            ("acked", "", ""),
        ]
        assert _stats(store) == {"T1": (3, 3, {"ventas": 2})}
        assert store.gaps() == []

    def test_repeated_invalid_operation_is_rejected_again_with_the_stored_reason(
        self, store: ServerStore
    ) -> None:
        first = invalid("T1", 1, "totals wrong")
        store.apply([first])
        [again] = store.apply([Invalid(first.envelope, "something else")])
        assert (again.status, again.outcome, again.reason, again.op_id, again.version) == (
            "rejected",
            "duplicate",
            "totals wrong",
            str(first.envelope.op_id),
            1,
        )

    def test_rejection_is_answered_but_never_recorded_nor_holds_a_seq(
        self, store: ServerStore
    ) -> None:
        strays = [stray(None, None), stray("T1", None), stray("T1", 3), stray("not a terminal!", 1)]
        verdicts = store.apply(strays)
        assert [(v.status, v.outcome, v.dead_letter) for v in verdicts] == [
            ("rejected", "rejected", "undecodable")
        ] * 4
        assert store.stats() == []
        real = op("T1", 3, sale())
        [verdict] = store.apply([stray("T1", 3), real, stray("T1", 3)])[1:2]
        assert (verdict.status, verdict.outcome, verdict.seq) == ("acked", "applied", 3)
        assert _stats(store) == {"T1": (0, 3, {"ventas": 1})}

    def test_unreadable_row_is_recorded_as_rejected_under_its_own_key_holding_its_seq(
        self, store: ServerStore
    ) -> None:
        bad = unreadable("T1", 2, version=3)
        verdicts = store.apply([op("T1", 1, sale()), bad, op("T1", 3, sale())])
        assert [(v.status, v.outcome, v.dead_letter) for v in verdicts] == [
            ("acked", "applied", ""),
            ("rejected", "rejected", bad.reason),
            ("acked", "applied", ""),
        ]
        assert (verdicts[1].terminal, verdicts[1].seq, verdicts[1].op_id) == ("T1", 2, bad.op_id)
        assert (verdicts[1].version, verdicts[1].reason) == (3, bad.reason)
        assert _stats(store) == {"T1": (3, 3, {"ventas": 2})}
        assert store.gaps() == []

    def test_unreadable_row_sent_again_is_rejected_again_and_holds_its_seq_against_others(
        self, store: ServerStore
    ) -> None:
        bad = unreadable("T1", 1)
        store.apply([bad])
        [again] = store.apply([bad])
        assert (again.status, again.outcome, again.reason) == ("rejected", "duplicate", bad.reason)
        [claim] = store.apply([op("T1", 1, sale())])
        assert (claim.status, claim.outcome) == ("rejected", "conflict")
        assert _stats(store) == {"T1": (1, 1, {})}

    def test_unreadable_row_beyond_the_columns_is_rejected_unrecorded(
        self, store: ServerStore
    ) -> None:
        [verdict] = store.apply([unreadable("T1", 2**31)])
        assert (verdict.status, verdict.terminal, verdict.seq) == ("rejected", "T1", None)
        assert store.stats() == []

    def test_gap_states_are_read_back_as_saved_and_replaced_whole(self, store: ServerStore) -> None:
        assert store.gap_states() == []
        first = [
            GapState("T1", 3, 4, opened_at=1_000_000.0, asked=2, asked_at=1_000_015.0),
            GapState("T2", 1, 9, opened_at=1_000_001.5),
        ]
        store.save_gap_states(first)
        assert store.gap_states() == first
        later = [GapState("T2", 1, 5, opened_at=1_000_001.5, asked=1, asked_at=1_000_010.0)]
        store.save_gap_states(later)
        assert store.gap_states() == later
        store.save_gap_states([])
        assert store.gap_states() == []

    def test_conflicting_claim_on_a_held_seq_is_dead_lettered_and_displaces_nothing(
        self, store: ServerStore
    ) -> None:
        held = op("T1", 1, sale())
        store.apply([held])
        claim = op("T1", 1, payment())
        [verdict] = store.apply([claim])
        assert (verdict.status, verdict.outcome, verdict.op_id) == (
            "rejected",
            "conflict",
            str(claim.envelope.op_id),
        )
        assert "seq 1 of terminal T1 is held by another operation" in verdict.reason
        assert verdict.dead_letter == verdict.reason
        assert _stats(store) == {"T1": (1, 1, {"ventas": 1})}
        [again] = store.apply([held])
        assert (again.status, again.outcome) == ("acked", "duplicate")

    def test_same_key_with_other_content_is_answered_as_the_first_and_dead_lettered(
        self, store: ServerStore
    ) -> None:
        first = op("T1", 1, sale())
        other = Accepted(msgspec.structs.replace(first.envelope, op=sale(number=2)))
        in_batch, later = store.apply([first, other])[1], store.apply([other])[0]
        for verdict in (in_batch, later):
            assert (verdict.status, verdict.outcome, verdict.reason) == ("acked", "conflict", "")
            assert sha256(first) in verdict.dead_letter
            assert sha256(other) in verdict.dead_letter
        assert _stats(store) == {"T1": (1, 1, {"ventas": 1})}
        [same] = store.apply([first])
        assert (same.outcome, same.dead_letter) == ("duplicate", "")

    def test_other_content_of_an_invalid_operation_is_rejected_as_the_first(
        self, store: ServerStore
    ) -> None:
        first = invalid("T1", 1, "totals wrong")
        other = Invalid(msgspec.structs.replace(first.envelope, seq=2), "seller unknown")
        store.apply([first])
        [verdict] = store.apply([other])
        assert (verdict.status, verdict.outcome, verdict.reason) == (
            "rejected",
            "conflict",
            "totals wrong",
        )
        assert sha256(other) in verdict.dead_letter
        assert _stats(store) == {"T1": (1, 1, {})}

    def test_digest_given_with_the_message_is_the_one_compared(self, store: ServerStore) -> None:
        first = op("T1", 1, sale())
        store.apply([Accepted(first.envelope, digest="a" * 64)])
        [same] = store.apply([Accepted(first.envelope, digest="a" * 64)])
        [other] = store.apply([Accepted(first.envelope, digest="b" * 64)])
        assert (same.outcome, other.outcome) == ("duplicate", "conflict")
        assert f"sha256 {'b' * 64}, held {'a' * 64}" in other.dead_letter

    def test_envelope_that_does_not_fit_the_store_is_rejected(self, store: ServerStore) -> None:
        [verdict] = store.apply([op("T1", 2**40, sale())])
        assert (verdict.status, verdict.terminal, verdict.seq) == ("rejected", "T1", 2**40)
        assert "exceed" in verdict.dead_letter
        assert store.stats() == []

    def test_contiguity_stops_at_the_first_missing_seq(self, store: ServerStore) -> None:
        store.apply([op("T1", s, sale()) for s in (1, 2, 5, 6, 9)])
        assert _stats(store) == {"T1": (2, 9, {"ventas": 5})}
        assert store.gaps() == [Gap("T1", 3, 4)]

    def test_filling_a_gap_advances_contiguity_to_the_next_one(self, store: ServerStore) -> None:
        store.apply([op("T1", s, sale()) for s in (1, 2, 5, 6, 9)])
        store.apply([op("T1", 4, sale()), op("T1", 3, sale())])
        assert store.gaps() == [Gap("T1", 7, 8)]
        store.apply([op("T1", 7, sale()), invalid("T1", 8)])
        assert store.gaps() == []
        assert _stats(store)["T1"][:2] == (9, 9)

    def test_gaps_are_reported_per_terminal(self, store: ServerStore) -> None:
        store.apply([op("T2", 2, sale()), op("T1", 1, sale()), op("T1", 3, sale())])
        assert store.gaps() == [Gap("T1", 2, 2), Gap("T2", 1, 1)]

    def test_stats_count_current_operations_per_topic(self, store: ServerStore) -> None:
        op_id = uuid.uuid4()
        store.apply(
            [
                op("T1", 1, sale(), op_id=op_id),
                op("T1", 2, sale(voided=True), op_id=op_id, version=2),
                op("T1", 3, payment()),
                invalid("T1", 4),
                op("T2", 1, payment()),
            ]
        )
        assert _stats(store) == {
            "T1": (4, 4, {"pagos": 1, "ventas": 1}),
            "T2": (1, 1, {"pagos": 1}),
        }

    def test_weekly_file_is_reassembled_once_all_chunks_are_held(self, store: ServerStore) -> None:
        content = bytes(range(256)) * 5
        parts = chunks(content, 300)
        store.apply([op("T1", 1, parts[3]), op("T1", 2, parts[0])])
        [partial] = store.weekly_files()
        assert (partial.status, partial.chunks_held, partial.content) == ("partial", 2, None)
        store.apply([op("T1", 3, parts[4]), op("T1", 4, parts[2]), op("T1", 5, parts[1])])
        [done] = store.weekly_files()
        assert (done.status, done.reason, done.content) == ("complete", "", content)
        assert (done.terminal, done.week, done.file_name, done.chunk_count) == (
            "T1",
            "2026-W10",
            "fiscal.txt",
            5,
        )

    def test_weekly_file_with_a_wrong_sha256_is_corrupt(self, store: ServerStore) -> None:
        content = b"Z close totals of the week\n" * 10
        parts = chunks(content, 100, sha256="0" * 64)
        store.apply([op("T1", i + 1, part) for i, part in enumerate(parts)])
        [file] = store.weekly_files()
        assert file.status == "corrupt"
        assert "sha256" in file.reason
        assert file.content == content

    def test_weekly_file_whose_chunks_disagree_on_size_is_corrupt(self, store: ServerStore) -> None:
        content = b"0123456789" * 3
        first, second = chunks(content, 20)
        liar = msgspec.structs.replace(second, size=31)
        store.apply([op("T1", 1, first), op("T1", 2, liar)])
        [file] = store.weekly_files()
        assert (file.status, file.chunks_held) == ("corrupt", 2)
        assert "size" in file.reason

    def test_corrected_chunk_version_completes_a_corrupt_file(self, store: ServerStore) -> None:
        content = b"abcdefghij" * 4
        first, second = chunks(content, 20)
        broken = msgspec.structs.replace(second, data=b"x" * 20)
        op_id = uuid.uuid4()
        store.apply([op("T1", 1, first), op("T1", 2, broken, op_id=op_id)])
        assert store.weekly_files()[0].status == "corrupt"
        store.apply([op("T1", 3, second, op_id=op_id, version=2)])
        [file] = store.weekly_files()
        assert (file.status, file.content) == ("complete", content)

    def test_chunk_whose_operation_became_something_else_leaves_its_file(
        self, store: ServerStore
    ) -> None:
        first, second = chunks(b"0123456789" * 4, 20)
        op_id = uuid.uuid4()
        store.apply([op("T1", 1, first, op_id=op_id)])
        store.apply([op("T1", 2, sale(), op_id=op_id, version=2), op("T1", 3, second)])
        [file] = store.weekly_files()
        assert (file.status, file.chunks_held) == ("partial", 1)

    def test_competing_writers_agree_on_progress_and_files(self, store: ServerStore) -> None:
        content = bytes(range(256)) * 4
        work: list[Incoming] = [op(f"T{n % 3}", n // 3 + 1, sale()) for n in range(600)]
        work += [op("TW", i + 1, part) for i, part in enumerate(chunks(content, 64))]
        slices = [work[i::4] for i in range(4)]

        def write(items: list[Incoming]) -> None:
            for start in range(0, len(items), 25):
                store.apply(items[start : start + 25])

        with ThreadPoolExecutor(4) as pool:
            for done in [pool.submit(write, part) for part in slices]:
                done.result()
        assert _stats(store) == {
            "T0": (200, 200, {"ventas": 200}),
            "T1": (200, 200, {"ventas": 200}),
            "T2": (200, 200, {"ventas": 200}),
            "TW": (16, 16, {"archivos-semanales": 16}),
        }
        [file] = store.weekly_files()
        assert (file.status, file.content) == ("complete", content)

    def test_empty_batch_has_no_verdicts(self, store: ServerStore) -> None:
        assert store.apply([]) == []
        assert store.stats() == []
        assert store.weekly_files() == []


def _stats(store: ServerStore) -> dict[str, tuple[int, int, dict[str, int]]]:
    return {s.terminal: (s.contiguous_seq, s.max_seq, s.topics) for s in store.stats()}
