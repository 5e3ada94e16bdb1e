"""msgpack on the wire, JSON for display; one decoder per union, built once at import."""

from __future__ import annotations

from typing import Any

import msgspec

from cajasync.errors import InvalidMessage
from schemas.envelope import OpEnvelope
from schemas.floats import float_problem
from schemas.limits import MAX_OP_BYTES
from schemas.unions import DownMessage, Request, TerminalInbox

_encoder = msgspec.msgpack.Encoder()
_json_encoder = msgspec.json.Encoder()
_up_decoder = msgspec.msgpack.Decoder(OpEnvelope)
_down_decoder: msgspec.msgpack.Decoder[DownMessage] = msgspec.msgpack.Decoder(DownMessage)
_request_decoder: msgspec.msgpack.Decoder[Request] = msgspec.msgpack.Decoder(Request)
_terminal_decoder: msgspec.msgpack.Decoder[TerminalInbox] = msgspec.msgpack.Decoder(TerminalInbox)


def encode(message: Any) -> bytes:
    """Encode any schema Struct as msgpack.

    Text that is not valid Unicode (a lone surrogate: typically a file name read from bytes
    that were not UTF-8, which Python keeps as surrogates) cannot go on the wire: that is
    an InvalidMessage naming the character, not a UnicodeEncodeError from the encoder.
    """
    try:
        return _encoder.encode(message)
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start : exc.end]
        raise InvalidMessage(
            f"text {bad!r} at position {exc.start} is not valid Unicode ({exc.reason}); "
            "decode it with the right encoding, or replace it, before recording"
        ) from exc


def decode_op(body: bytes) -> OpEnvelope:
    """Decode an up operation; a bad body raises InvalidMessage with the decoder's reason.

    A body over MAX_OP_BYTES is refused before decoding: its size is the reason. A float
    where the schema has a Decimal is refused naming its field (`schemas/floats.py`).
    """
    if len(body) > MAX_OP_BYTES:
        raise InvalidMessage(
            f"operation of {len(body):,} bytes is over the limit of {MAX_OP_BYTES:,} bytes"
        )
    try:
        envelope = _up_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidMessage(f"undecodable operation: {exc}") from exc
    problem = float_problem(body, envelope)
    if problem is not None:
        raise InvalidMessage(
            f"terminal {envelope.terminal} seq {envelope.seq} op {envelope.op_id}: {problem}"
        )
    return envelope


def decode_down(body: bytes) -> DownMessage:
    """Decode a receipt or request from the server."""
    try:
        return _down_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidMessage(f"undecodable server message: {exc}") from exc


def decode_terminal_inbox(body: bytes) -> TerminalInbox:
    """Decode what a terminal's queue holds, snapshot pages with their records still encoded
    (the replica checks those one by one). A float where the schema has a Decimal (a record
    of a change event) refuses the message, naming the field."""
    try:
        message = _terminal_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidMessage(f"undecodable server message: {exc}") from exc
    problem = float_problem(body, message)
    if problem is not None:
        raise InvalidMessage(f"server message refused: {problem}")
    return message


def decode_request(body: bytes) -> Request:
    """Decode a terminal's request (snapshot, catch-up, images)."""
    try:
        return _request_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidMessage(f"undecodable request: {exc}") from exc


def to_json(message: Any) -> bytes:
    """Encode a Struct (or builtins holding Structs) as JSON for display."""
    return _json_encoder.encode(message)


def to_builtins(message: Any) -> Any:
    """Plain dicts/lists/strings for rich tables and `--json` output."""
    return msgspec.to_builtins(message)
