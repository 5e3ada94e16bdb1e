"""Every message and record cajasync sends, as msgspec Structs."""

from schemas.codec import decode_down, decode_op, encode, to_builtins, to_json
from schemas.envelope import OpEnvelope, Receipt, ReceiptItem, ReplayRequest
from schemas.ops import (
    CardData,
    CashPayment,
    MethodTotal,
    Operation,
    Sale,
    SaleLine,
    SalePayment,
    SaleTotals,
    TaxTotal,
    WeeklyFileChunk,
    ZClose,
    topic_of,
)
from schemas.topics import UP_TOPICS, up_topic
from schemas.unions import DownMessage, Request

__all__ = [
    "UP_TOPICS",
    "CardData",
    "CashPayment",
    "DownMessage",
    "MethodTotal",
    "OpEnvelope",
    "Operation",
    "Receipt",
    "ReceiptItem",
    "ReplayRequest",
    "Request",
    "Sale",
    "SaleLine",
    "SalePayment",
    "SaleTotals",
    "TaxTotal",
    "WeeklyFileChunk",
    "ZClose",
    "decode_down",
    "decode_op",
    "encode",
    "to_builtins",
    "to_json",
    "topic_of",
    "up_topic",
]
