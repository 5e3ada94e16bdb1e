"""Every error a caller of cajasync sees. Library exceptions stop at the adapters."""

from __future__ import annotations


class CajasyncError(Exception):
    """Raised when cajasync cannot do what was asked; the base of all cajasync errors."""


class ConfigError(CajasyncError):
    """Raised when a setting is missing or malformed."""


class BrokerUnavailable(CajasyncError):
    """Raised when the RabbitMQ broker cannot be reached or dropped the connection."""


class StoreError(CajasyncError):
    """Raised when a terminal or server database cannot be opened or is not initialised."""


class StoreUnavailable(StoreError):
    """Raised when a database is away or briefly refuses work (connection refused or lost,
    restarting, overloaded, a serialization failure): the same work is retried later."""


class StoreDataError(StoreError):
    """Raised when a database refuses a value or a row (out of a column's range, a broken
    constraint): the data is bad, not the database. `reason` is the database's own words."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class NotInitialised(StoreError):
    """Raised when a terminal database has not been set up with `cajasync terminal init`."""


class InvalidMessage(CajasyncError):
    """Raised when a message cannot be decoded or fails validation."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnknownOperation(CajasyncError):
    """Raised when an op id given by a caller is not in the terminal outbox."""


class CatalogError(CajasyncError):
    """Raised when a catalog write breaks a topic, scope or key rule, or a record is invalid."""


class PullTimedOut(CajasyncError):
    """Raised when a pull is not answered in full within its timeout."""


class PullCancelled(CajasyncError):
    """Raised when a pull is cancelled before it finished (what arrived stays applied):
    `records` and `images` say how much had been applied when it stopped."""

    def __init__(self, message: str, records: int = 0, images: int = 0) -> None:
        super().__init__(message)
        self.records, self.images = records, images


class NoAnswer(CajasyncError):
    """Raised when the server does not answer a terminal's request in time, or cannot be asked."""


class NotAuthorised(CajasyncError):
    """Raised when a user may not do what was asked: unknown or inactive, a wrong password,
    an unreadable password hash, or a role without the permission."""
