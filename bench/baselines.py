"""The baselines the relay is measured against, written as plainly as pika allows."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import pika
from pika.adapters.select_connection import SelectConnection

from cajasync.core import topology


def _properties(terminal: str, seq: int, topic: str) -> pika.BasicProperties:
    return pika.BasicProperties(
        delivery_mode=2,
        content_type="application/msgpack",
        message_id=f"bench-{terminal}-{seq}",
        headers={"terminal": terminal, "seq": seq, "topic": topic},
    )


def raw_pipelined(
    url: str, terminal: str, items: Sequence[tuple[str, bytes]], window: int
) -> float:
    """Seconds to publish `items` with pipelined confirms (a window in flight), no database."""
    outstanding: set[int] = set()
    state = {"next": 0, "confirmed": 0, "tag": 0, "start": 0.0, "end": 0.0}

    def pump(channel: pika.channel.Channel) -> None:
        while len(outstanding) < window and state["next"] < len(items):
            index = int(state["next"])
            topic, body = items[index]
            channel.basic_publish(
                topology.UP_EXCHANGE,
                topology.op_routing_key(terminal, topic),
                body,
                _properties(terminal, index + 1, topic),
                mandatory=True,
            )
            state["tag"] += 1
            outstanding.add(int(state["tag"]))
            state["next"] += 1

    def on_confirm(frame: pika.frame.Method) -> None:  # type: ignore[type-arg]
        tag, multiple = frame.method.delivery_tag, frame.method.multiple
        done = [t for t in outstanding if t <= tag] if multiple else [tag]
        outstanding.difference_update(done)
        state["confirmed"] += len(done)
        if state["confirmed"] >= len(items):
            state["end"] = time.perf_counter()
            connection.close()
        else:
            pump(channel_ref[0])

    channel_ref: list[pika.channel.Channel] = []

    def on_channel(channel: pika.channel.Channel) -> None:
        channel_ref.append(channel)
        channel.confirm_delivery(on_confirm)
        state["start"] = time.perf_counter()
        pump(channel)

    connection = SelectConnection(
        pika.URLParameters(url),
        on_open_callback=lambda conn: _open_channel(conn, on_channel),
        on_close_callback=lambda conn, reason: conn.ioloop.stop(),
    )
    connection.ioloop.start()
    if state["confirmed"] < len(items):
        raise RuntimeError(f"raw publisher stopped after {state['confirmed']} confirms")
    return float(state["end"] - state["start"])


def _open_channel(connection: Any, on_channel: Callable[[pika.channel.Channel], None]) -> None:
    connection.channel(on_open_callback=on_channel)


def naive_confirm_each(url: str, terminal: str, items: Sequence[tuple[str, bytes]]) -> float:
    """Seconds to publish `items` with BlockingChannel.confirm_delivery(): a round trip each."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.confirm_delivery()
    start = time.perf_counter()
    for index, (topic, body) in enumerate(items):
        channel.basic_publish(
            topology.UP_EXCHANGE,
            topology.op_routing_key(terminal, topic),
            body,
            _properties(terminal, index + 1, topic),
            mandatory=True,
        )
    elapsed = time.perf_counter() - start
    connection.close()
    return elapsed
