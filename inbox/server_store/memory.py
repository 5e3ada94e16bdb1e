"""The server store in plain Python: the rules without I/O, for unit tests and experiments."""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from inbox.server_store import incarnations, lost, rules, weekly
from inbox.server_store.base import (
    Gap,
    GapState,
    Incoming,
    LostRange,
    TerminalStats,
    Verdict,
    WeeklyFile,
)
from schemas.envelope import OpEnvelope
from schemas.feed import HighWaterMark, HighWaterRequest
from schemas.ops import WeeklyFileChunk, topic_of


@dataclass(slots=True)
class _Received:
    terminal: str
    seq: int
    status: str
    reason: str
    digest: str


@dataclass(slots=True)
class _Progress:
    contiguous_seq: int = 0
    max_seq: int = 0


class MemoryServerStore:
    """A ServerStore holding everything in dicts; `apply` is atomic under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received: dict[rules.Key, _Received] = {}
        self._held: dict[str, set[int]] = {}
        self._operations: dict[str, OpEnvelope] = {}
        self._progress: dict[str, _Progress] = {}
        self._chunks: dict[weekly.FileKey, dict[str, tuple[weekly.ChunkMeta, bytes]]] = {}
        self._files: dict[weekly.FileKey, WeeklyFile] = {}
        self._book = MemoryBook()
        self._lost: dict[str, list[LostRange]] = {}
        self._gap_states: list[GapState] = []

    def apply(self, batch: Sequence[Incoming]) -> list[Verdict]:
        """Record and apply a batch; one verdict per message, in order."""
        with self._lock:
            screened = incarnations.screen(batch, self._book, dt.datetime.now(dt.UTC))
            planned = rules.plan(screened.batch)
            learned = self._record(planned)
            self._reclaim([planned.rows[key] for key in learned.new])
            self._advance({planned.rows[key].terminal for key in learned.new})
        return screened.mark(rules.verdicts(planned, learned))

    def register(self, request: HighWaterRequest) -> HighWaterMark:
        """Register a terminal's new incarnation; where it continues and what is held."""
        with self._lock:
            return self._book.register(request, self._holdings(request), dt.datetime.now(dt.UTC))

    def lineages(self) -> dict[str, list[incarnations.Incarnation]]:
        """Every terminal's incarnations."""
        with self._lock:
            return self._book.lineages(sorted(self._book.rows))

    def stats(self) -> list[TerminalStats]:
        """Progress and current operations per topic, by terminal."""
        with self._lock:
            topics: dict[str, Counter[str]] = {}
            for envelope in self._operations.values():
                topics.setdefault(envelope.terminal, Counter())[topic_of(envelope.op)] += 1
            return [
                TerminalStats(
                    t,
                    p.contiguous_seq,
                    p.max_seq,
                    dict(sorted(topics.get(t, {}).items())),
                    sum(held.count for held in self._lost.get(t, [])),
                )
                for t, p in sorted(self._progress.items())
            ]

    def gaps(self) -> list[Gap]:
        """The first missing range of every terminal with a hole below its max seq."""
        with self._lock:
            result = []
            for terminal, progress in sorted(self._progress.items()):
                if progress.max_seq > progress.contiguous_seq:
                    after = progress.contiguous_seq + 1
                    held = min(s for s in self._held[terminal] if s > after)
                    result.append(Gap(terminal, after, held - 1))
            return result

    def mark_lost(self, registered_before: dt.datetime) -> list[LostRange]:
        """Record as lost the seqs missing at or below a restart point registered before
        `registered_before` (inbox/server_store/lost.py); the ranges recorded."""
        now = dt.datetime.now(dt.UTC)
        recorded: list[LostRange] = []
        with self._lock:
            for terminal, progress in sorted(self._progress.items()):
                lineage = self._book.rows.get(terminal, {}).values()
                points = lost.restart_points(lineage, registered_before)
                held = self._held[terminal]
                while gone := lost.next_lost(
                    terminal,
                    progress.contiguous_seq,
                    min((s for s in held if s > progress.contiguous_seq), default=None),
                    points,
                    now,
                ):
                    recorded.append(gone)
                    self._lost.setdefault(terminal, []).append(gone)
                    above = sorted(s for s in held if s > gone.to_seq)
                    progress.contiguous_seq = rules.advance(gone.to_seq, above)
        return recorded

    def lost(self) -> list[LostRange]:
        """Every lost range, by terminal and seq."""
        with self._lock:
            return sorted(
                (held for ranges in self._lost.values() for held in ranges),
                key=lambda held: (held.terminal, held.from_seq),
            )

    def gap_states(self) -> list[GapState]:
        """The gap states ingest saved last, by terminal."""
        with self._lock:
            return list(self._gap_states)

    def save_gap_states(self, states: Sequence[GapState]) -> None:
        """Replace the saved gap states with `states`."""
        with self._lock:
            self._gap_states = sorted(states, key=lambda state: state.terminal)

    def weekly_files(self) -> list[WeeklyFile]:
        """Every weekly file seen, by terminal, week and name."""
        with self._lock:
            return [self._files[key] for key in sorted(self._files)]

    def current(self, op_id: str) -> OpEnvelope | None:
        """The current version of an operation (memory only: for tests of the rules)."""
        with self._lock:
            return self._operations.get(op_id)

    def _record(self, planned: rules.Plan) -> rules.Learned:
        new: set[rules.Key] = set()
        stored: dict[rules.Key, rules.Held] = {}
        claimed: set[tuple[str, int]] = set()
        for row in planned.sorted_rows():
            held = self._received.get(row.key)
            if held is not None:
                stored[row.key] = rules.Held(held.status, held.reason, held.digest)
            elif row.seq not in self._held.get(row.terminal, ()) and (
                (row.terminal, row.seq) not in claimed
            ):
                claimed.add((row.terminal, row.seq))
                new.add(row.key)
        applied = self._apply_current([planned.rows[key] for key in sorted(new)])
        for key in sorted(new):
            row = planned.rows[key]
            status = rules.status_of(row, applied)
            self._received[key] = _Received(row.terminal, row.seq, status, row.reason, row.digest)
            self._held.setdefault(row.terminal, set()).add(row.seq)
        return rules.Learned(new=new, applied=applied, stored=stored)

    def _apply_current(self, rows: list[rules.Row]) -> set[rules.Key]:
        applied = set()
        for row in rules.current_candidates(rows):
            assert row.envelope is not None
            held = self._operations.get(row.op_id)
            if held is None or held.version < row.version:
                self._forget_chunk(held)
                self._operations[row.op_id] = row.envelope
                applied.add(row.key)
        self._add_chunks([self._operations[key[0]] for key in sorted(applied)])
        return applied

    def _forget_chunk(self, replaced: OpEnvelope | None) -> None:
        if replaced is not None and isinstance(replaced.op, WeeklyFileChunk):
            key = weekly.key_of(replaced.terminal, replaced.op)
            self._chunks.get(key, {}).pop(str(replaced.op_id), None)

    def _add_chunks(self, envelopes: list[OpEnvelope]) -> None:
        touched = set()
        for env in envelopes:
            if isinstance(env.op, WeeklyFileChunk):
                key = weekly.key_of(env.terminal, env.op)
                meta = weekly.meta_of(str(env.op_id), env.seq, env.op)
                self._chunks.setdefault(key, {})[meta.op_id] = (meta, env.op.data)
                touched.add(key)
        for key in sorted(touched):
            self._files[key] = self._assess(key)

    def _assess(self, key: weekly.FileKey) -> WeeklyFile:
        held = self._chunks[key]
        parts = [meta for meta, _ in held.values()]
        return weekly.assess(key, parts, lambda picked: [held[m.op_id][1] for m in picked])

    def _holdings(self, request: HighWaterRequest) -> incarnations.Holdings:
        progress = self._progress.get(request.terminal, _Progress())
        mine = [
            (held.seq, op_id, version)
            for (op_id, version), held in self._received.items()
            if held.terminal == request.terminal
        ]
        return incarnations.Holdings(
            max_seq=progress.max_seq,
            contiguous_seq=progress.contiguous_seq,
            held=len(mine),
            rows=incarnations.held_rows(request, mine),
        )

    def _reclaim(self, new_rows: list[rules.Row]) -> None:
        """Lost seqs that real operations took back leave their ranges (see lost.py)."""
        for row in new_rows:
            ranges = self._lost.get(row.terminal, [])
            for index, held in enumerate(ranges):
                if held.from_seq <= row.seq <= held.to_seq:
                    ranges[index : index + 1] = lost.reclaimed(held, [row.seq])
                    break

    def _advance(self, terminals: set[str]) -> None:
        for terminal in sorted(terminals):
            progress = self._progress.setdefault(terminal, _Progress())
            held = self._held[terminal]
            progress.max_seq = max(held)
            above = sorted(s for s in held if s > progress.contiguous_seq)
            progress.contiguous_seq = rules.advance(progress.contiguous_seq, above)


def _sorted(counts: Counter[str]) -> dict[str, int]:
    return dict(sorted(counts.items()))


class MemoryBook:
    """`incarnations.Book` in a dict: terminal -> incarnation -> row."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, incarnations.Incarnation]] = {}

    def lineages(self, terminals: Sequence[str]) -> dict[str, list[incarnations.Incarnation]]:
        """Each terminal's rows, by incarnation."""
        return {t: [r[k] for k in sorted(r)] for t in terminals if (r := self.rows.get(t))}

    def count_copies(self, counts: Mapping[incarnations.CopyKey, int], now: dt.datetime) -> None:
        """Add to each incarnation's refused operations; a copy never seen gets its row."""
        for (terminal, incarnation), count in counts.items():
            rows = self.rows.setdefault(terminal, {})
            row = rows.get(incarnation) or incarnations.Incarnation(
                terminal, incarnation, incarnations.UNREGISTERED
            )
            rows[incarnation] = replace(row, rejected=row.rejected + count)

    def register(
        self, request: HighWaterRequest, holdings: incarnations.Holdings, now: dt.datetime
    ) -> HighWaterMark:
        """Register the request's incarnation (see incarnations.registration)."""
        lineage = self.lineages([request.terminal]).get(request.terminal, [])
        start = incarnations.start_seq(lineage, request, holdings)
        for row in incarnations.registration(lineage, request, start, now):
            self.rows.setdefault(row.terminal, {})[row.incarnation] = row
        lineage = self.lineages([request.terminal])[request.terminal]
        return incarnations.answer(request, lineage, holdings)
