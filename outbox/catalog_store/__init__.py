"""The server catalog: one port (`base`), a SQLAlchemy adapter (`sql`) and an in-memory one."""

from outbox.catalog_store.base import CatalogStore
from outbox.catalog_store.memory import MemoryCatalogStore
from outbox.catalog_store.sql import SqlCatalogStore

__all__ = ["CatalogStore", "MemoryCatalogStore", "SqlCatalogStore"]
