"""What each tree's env.py runs: migrations on the connection cajasync hands over."""

from __future__ import annotations

from alembic import context


def run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "run migrations with cajasync.core.db.upgrade(), which passes a connection"
        )
    context.configure(
        connection=connection,
        version_table=context.config.get_main_option("version_table") or "alembic_version",
        render_as_batch=connection.dialect.name == "sqlite",
    )
    context.run_migrations()
