"""What a POS sees of cajasync: one import root, and migrations nobody else can replace.

Each check runs in a fresh interpreter, as a POS process would start: the modules it has
already imported, and what sits first on its sys.path, are the POS's, not the test suite's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[2]


def python(code: str, *, cwd: Path, path: list[Path]) -> subprocess.CompletedProcess[str]:
    """Run `code` in a new interpreter whose sys.path starts with `path` (the POS's first)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in path)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
    )


def test_a_pos_imports_everything_it_needs_from_cajasync(tmp_path: Path) -> None:
    done = python(
        """
        import sys
        from cajasync import Product, Replica, Sale, catalog, record, track
        from cajasync import NotInitialised, configure_pos_engine, pos_engine, reading
        print(record.__module__, track.__module__, Replica.__module__, catalog.__name__)
        print(Sale.__name__, Product.__name__, NotInitialised.__mro__[2].__name__)
        """,
        cwd=tmp_path,
        path=[REPO],
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "outbox.record",
        "outbox.orm",
        "inbox.replica_api",
        "outbox.catalog",
        "Sale",
        "Product",
        "CajasyncError",
    ]


def test_the_face_is_lazy_so_the_messages_stay_at_the_bottom(tmp_path: Path) -> None:
    """`schemas` imports `cajasync.errors`; that must not load the wings or SQLAlchemy."""
    done = python(
        """
        import sys
        import schemas
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in
                        ("outbox", "inbox", "sqlalchemy", "pika", "cli"))
        print(loaded)
        """,
        cwd=tmp_path,
        path=[REPO],
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_an_unknown_name_says_so(tmp_path: Path) -> None:
    done = python("from cajasync import recrod", cwd=tmp_path, path=[REPO])
    assert done.returncode != 0
    assert "cannot import name 'recrod' from 'cajasync'" in done.stderr


def test_a_pos_with_its_own_migrations_package_does_not_change_ours(tmp_path: Path) -> None:
    """A POS (Django, Alembic…) often has a `migrations` package of its own, first on its
    path. cajasync finds its trees by file path inside its package, so it runs its own."""
    pos = tmp_path / "pos"
    for tree in ("terminal", "server"):
        versions = pos / "migrations" / tree / "versions"
        versions.mkdir(parents=True)
        (pos / "migrations" / tree / "__init__.py").write_text("")
        (pos / "migrations" / tree / "env.py").write_text(
            "raise SystemExit('the POS migrations ran instead of cajasync')\n"
        )
    (pos / "migrations" / "__init__.py").write_text("")
    (pos / "migrations" / "run.py").write_text("raise SystemExit('the POS run.py was used')\n")
    terminal_db, server_db = tmp_path / "caja.db", tmp_path / "server.db"

    done = python(
        f"""
        import migrations
        assert migrations.__file__.startswith({str(pos)!r}), migrations.__file__
        from cajasync.core.db import head_revision, make_engine, upgrade, current_revision
        for tree, target in (("terminal", {str(terminal_db)!r}), ("server", {str(server_db)!r})):
            engine = make_engine(target)
            upgrade(engine, tree)
            assert current_revision(engine, tree) == head_revision(tree)
            engine.dispose()
        print("ok")
        """,
        cwd=pos,
        path=[pos, REPO],
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    tables = set(sa.inspect(sa.create_engine(f"sqlite:///{terminal_db}")).get_table_names())
    assert {"cajasync_outbox", "cajasync_replica", "cajasync_terminal"} <= tables
    tables = set(sa.inspect(sa.create_engine(f"sqlite:///{server_db}")).get_table_names())
    assert {"server_operations", "catalog_records", "catalog_changes"} <= tables
