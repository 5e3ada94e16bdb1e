"""Prometheus metrics of one process (prometheus_client), updated where things happen.

The counters and histograms live here, below both wings, so server ingest and the relay
engine update them at their natural points with plain values (`ingested`,
`relay_confirmed`); they cost a few dictionary lookups and are kept whether or not they
are exposed. `expose(port, collectors)` (cajasync/processes/metrics.py) serves them with
the gauges read at scrape time. Labels stay few: `topic` (the four up topics, anything
else is `other`), `outcome`, `relay`; a `terminal` label only on the per-till gauges.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from prometheus_client import Counter, Histogram
from prometheus_client.registry import Collector, CollectorRegistry

from schemas.topics import UP_TOPICS

OUTCOMES: Final = ("applied", "duplicate", "stale", "rejected", "conflict", "copy")

INGESTED = Counter(
    "cajasync_ingest_operations",
    "Operations server ingest received, by up topic and outcome "
    "(applied, duplicate, stale, rejected, conflict, copy).",
    ["topic", "outcome"],
    registry=None,
)
DEAD_LETTERED = Counter(
    "cajasync_ingest_dead_lettered",
    "Operations server ingest sent to the dead-letter queue, by up topic.",
    ["topic"],
    registry=None,
)
INGEST_BATCH = Histogram(
    "cajasync_ingest_batch_seconds",
    "Time to apply one ingest batch, receipts and dead letters included.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=None,
)
RECEIPTS = Counter(
    "cajasync_receipts",
    "Receipt messages: sent by server ingest (side=server), applied by a till (side=terminal).",
    ["side"],
    registry=None,
)
REPLAY_REQUESTS = Counter(
    "cajasync_replay_requests",
    "Replay requests: sent by server ingest for gaps (side=server), received by a till "
    "(side=terminal).",
    ["side"],
    registry=None,
)
CONFIRM_LATENCY = Histogram(
    "cajasync_relay_confirm_seconds",
    "From a relay's publish to the broker's confirm (relay=terminal: operations up; "
    "relay=feed: change events down).",
    ["relay"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=None,
)

SHARED: Final[tuple[Collector, ...]] = (
    INGESTED,
    DEAD_LETTERED,
    INGEST_BATCH,
    RECEIPTS,
    REPLAY_REQUESTS,
    CONFIRM_LATENCY,
)


def topic_label(topic: str | None) -> str:
    """An up topic, or `other` (a label never takes a value a till made up)."""
    return topic if topic in UP_TOPICS else "other"


def ingested(
    topics: Sequence[str | None],
    outcomes: Sequence[str],
    dead_topics: Iterable[str | None],
    seconds: float,
) -> None:
    """One ingest batch: each message's topic and outcome, the topics of those
    dead-lettered, how long it took."""
    for topic, outcome in zip(topics, outcomes, strict=True):
        INGESTED.labels(topic_label(topic), outcome).inc()
    for topic in dead_topics:
        DEAD_LETTERED.labels(topic_label(topic)).inc()
    INGEST_BATCH.observe(seconds)


def relay_confirmed(relay: str, seconds: Iterable[float]) -> None:
    """Publish-to-confirm times of one confirm of `relay` (terminal, feed)."""
    histogram = CONFIRM_LATENCY.labels(relay)
    for value in seconds:
        histogram.observe(value)


def registry(collectors: Iterable[Collector] = ()) -> CollectorRegistry:
    """A registry holding the shared metrics and the process's own `collectors`."""
    found = CollectorRegistry(auto_describe=True)
    for collector in (*SHARED, *collectors):
        found.register(collector)
    return found
