"""A broker URL list: every connection takes the first node that answers, in order."""

from __future__ import annotations

from cajasync.broker.links import FeedLink
from cajasync.broker.rabbitmq import connect
from cajasync.core.settings import Settings

DEAD_NODE = "amqp://guest:guest@127.0.0.1:1/%2F"  # nothing listens on port 1


def test_a_blocking_connection_skips_a_node_that_is_down(broker_url: str) -> None:
    connection = connect(f"{DEAD_NODE},{broker_url}")
    try:
        assert connection.is_open
    finally:
        connection.close()


class _OpenOnce:
    """A session handler that closes its session as soon as it is ready."""

    def __init__(self) -> None:
        self.link: FeedLink | None = None
        self.ready = False

    def wants_stop(self) -> bool:
        return False

    def on_ready(self) -> None:
        self.ready = True
        assert self.link is not None
        self.link.close()

    def on_confirm(self, tag: int, *, multiple: bool, ok: bool) -> None:
        pass

    def on_return(self, seq: int, reason: str) -> None:
        pass

    def on_message(self, tag: int, routing_key: str, body: bytes) -> None:
        pass


def test_a_publishing_session_opens_on_the_next_node_when_the_first_is_down(
    settings: Settings, broker_url: str
) -> None:
    handler = _OpenOnce()
    listed = settings.with_overrides(broker_url=f"{DEAD_NODE} {broker_url}")
    handler.link = FeedLink(listed, handler)
    handler.link.run()
    assert handler.ready
