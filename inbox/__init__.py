"""Inbox consumers: server ingest (dedup, apply, receipts, gap detection) and terminal apply."""
