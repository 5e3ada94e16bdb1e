"""`HEADS` names the newest migration of each tree, so an up-to-date database opens
without Alembic: it must move with every new migration."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cajasync.core.db import HEADS, head_revision


@pytest.mark.parametrize("tree", ["terminal", "server"])
def test_heads_names_the_newest_migration(tree: str) -> None:
    assert HEADS[tree] == head_revision(tree)  # type: ignore[index]


def test_the_library_loads_without_alembic() -> None:
    code = "import sys, cajasync.core.db; print('alembic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
