"""cajasync: point-of-sale terminals and a back-office server kept in sync over RabbitMQ.

The shared core lives here (settings, errors, the broker adapter, topology, database
helpers); messages are defined in :mod:`schemas`, written in :mod:`outbox`, consumed in
:mod:`inbox`, and driven from :mod:`cli`.
"""

__version__ = "0.1.0"
