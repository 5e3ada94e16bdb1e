"""Where messages are written and relayed.

On the terminal: the outbox (`record.py`, `orm.py`), the operations pending (`pending.py`)
and the up relay. On the server: the catalog and its change log (`catalog.py`) and the
feed relay that takes the change log down. A POS imports all it needs from `cajasync`.
"""
