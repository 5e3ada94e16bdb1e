"""Alembic migration trees: `terminal` (POS database) and `server` (server store)."""
