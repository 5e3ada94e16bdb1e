"""Which streams a terminal may read: its scopes, and tables/rooms only where they exist.

A terminal gets, for every down topic, the stream of the topic's natural scope as it
applies to the terminal (schemas.topics.DOWN_TOPIC_SCOPES: `<topic>:all`, its location's
`<topic>:loc.<location>` or its point of sale's `<topic>:pos.<pos>`) and its own stream
(`<topic>:term.<terminal>`): exactly the change scopes its queue is bound to
(cajasync.core.topology.change_bindings), and the only scopes the catalog writes a topic in.
`mesas` is offered only to restaurant and hotel terminals: for a shop it is simply empty,
not an error. Naming another terminal's, location's or point of sale's stream is an error
(InvalidMessage), with one exception:

Another location's stock, asked for by name (`SnapshotRequest.from_location`, `cajasync
pull stock --location L2`): a till reads `<topic>:loc.<that location>` of the topics of
scope `loc` in a snapshot, instead of its own location's streams. Any location of the chain
may be asked: today every till is trusted for reads of its own chain (the broker cannot
tell chains apart yet; issue 9 will restrict this by the terminal registry). It is a read
on request only: the till's queue stays bound to its own location, so change events keep
coming for its own stock alone, and a catch-up of another location's stream is refused.

Pure functions: no broker, no store.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from cajasync.core.topology import SHARED_USERS
from cajasync.errors import InvalidMessage
from schemas.feed import CatchUpRequest, SnapshotRequest, Stream, split_stream
from schemas.topics import DOWN_TOPIC_SCOPES, TABLE_KINDS, TABLE_TOPICS


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asks: a terminal, its location, its point of sale and its kind."""

    terminal: str
    location: str
    pos: str
    kind: str

    @classmethod
    def of(cls, request: SnapshotRequest | CatchUpRequest) -> Requester:
        """The requester a snapshot or catch-up request describes."""
        return cls(request.terminal, request.location, request.pos, request.terminal_kind)

    def own_scopes(self) -> dict[str, str]:
        """Scope kind (`all`, `loc`, `pos`, `term`) -> this terminal's scope of that kind."""
        return {
            "all": "all",
            "loc": f"loc.{self.location}",
            "pos": f"pos.{self.pos}",
            "term": f"term.{self.terminal}",
        }


def check_topic(topic: str) -> None:
    """Raise InvalidMessage unless `topic` is a down topic."""
    if topic not in DOWN_TOPIC_SCOPES:
        known = ", ".join(DOWN_TOPIC_SCOPES)
        raise InvalidMessage(f"unknown down topic {topic!r}; expected one of: {known}")


def offered(requester: Requester, topic: str) -> bool:
    """True when `topic` exists for this kind of terminal (tables only in restaurants/hotels)."""
    return topic not in TABLE_TOPICS or requester.kind in TABLE_KINDS


def streams_for(requester: Requester, topic: str, location: str | None = None) -> list[str]:
    """The streams of a known `topic` the requester receives; empty when not offered to it.

    With `location` (another location named in a snapshot request), a topic of scope `loc`
    is that location's stream alone; other topics are unaffected.
    """
    if not offered(requester, topic):
        return []
    if asks_other_location(requester, topic, location):
        return [f"{topic}:loc.{location}"]
    scopes = requester.own_scopes()
    return [f"{topic}:{scopes[DOWN_TOPIC_SCOPES[topic]]}", f"{topic}:{scopes['term']}"]


def asks_other_location(requester: Requester, topic: str, location: str | None) -> bool:
    """True when `location` names a location other than the requester's for a `loc` topic."""
    return (
        location is not None
        and location != requester.location
        and DOWN_TOPIC_SCOPES.get(topic) == "loc"
    )


def check_stream(requester: Requester, stream: str, location: str | None = None) -> bool:
    """Whether the requester may read `stream`: True if so, False for a topic not offered to
    it (tables on a shop); InvalidMessage for an unknown topic or somebody else's stream
    (another location's `loc` stream is the requester's to read when `location` names it)."""
    try:
        msgspec.convert(stream, Stream)
    except msgspec.ValidationError as exc:
        raise InvalidMessage(f"{stream!r} is not a stream name (topic:scope)") from exc
    topic, _scope = split_stream(stream)
    check_topic(topic)
    if not offered(requester, topic):
        return False
    if stream not in streams_for(requester, topic, location):
        raise InvalidMessage(
            f"terminal {requester.terminal} (location {requester.location}, "
            f"pos {requester.pos}) is not entitled to stream {stream!r}"
        )
    return True


def check_sender(routing_key: str, user_id: str | None, terminal: str) -> None:
    """Raise InvalidMessage unless a request of `terminal` came by `req.<terminal>.<kind>`
    (the broker lets a terminal publish only its own keys) and from its own broker user."""
    parts = routing_key.split(".")
    if len(parts) != 3 or parts[0] != "req" or parts[1] != terminal:
        raise InvalidMessage(
            f"routing key {routing_key!r} does not match a request of terminal {terminal} "
            f"('req.{terminal}.<kind>')"
        )
    if user_id and user_id not in SHARED_USERS and user_id != terminal:
        raise InvalidMessage(f"broker user {user_id!r} sent a request of terminal {terminal}")
