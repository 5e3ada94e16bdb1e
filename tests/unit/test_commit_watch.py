"""The relay's quiet spell: a look that found nothing is not repeated until another
connection commits to the till's file, or the recheck time passed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlalchemy as sa

from cajasync.core.commit_watch import CommitWatch, QuietSpell


def _till(tmp_path: Path) -> tuple[sa.Engine, Path]:
    path = tmp_path / "caja.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    return engine, path


def test_a_commit_by_another_connection_moves_the_version(tmp_path: Path) -> None:
    engine, _ = _till(tmp_path)
    watch = CommitWatch.of(engine)
    assert watch is not None
    before = watch.version()
    assert watch.version() == before  # looking changes nothing
    with engine.begin() as connection:
        connection.exec_driver_sql("INSERT INTO t VALUES (1)")
    assert watch.version() != before


def test_quiet_after_an_empty_look_until_a_commit(tmp_path: Path) -> None:
    engine, path = _till(tmp_path)
    spell = QuietSpell(CommitWatch.of(engine), recheck_s=10)
    assert not spell.quiet(0.0)  # never looked
    spell.after_look(spell.before_look(), 0.0, found=False)
    assert spell.quiet(1.0)
    other = sqlite3.connect(path)  # the POS, in another process
    other.execute("INSERT INTO t VALUES (2)")
    other.commit()
    assert not spell.quiet(1.0)
    other.close()


def test_the_spell_ends_by_time_by_a_find_and_by_hand(tmp_path: Path) -> None:
    engine, _ = _till(tmp_path)
    spell = QuietSpell(CommitWatch.of(engine), recheck_s=0.5)
    spell.after_look(spell.before_look(), 0.0, found=False)
    assert spell.quiet(0.4)
    assert not spell.quiet(0.5)  # recheck time
    spell.after_look(spell.before_look(), 1.0, found=True)
    assert not spell.quiet(1.1)  # the last look found rows: look again
    spell.after_look(spell.before_look(), 2.0, found=False)
    spell.end()  # a rewind: rows moved below the cursor
    assert not spell.quiet(2.1)


def test_a_commit_racing_the_look_is_not_missed(tmp_path: Path) -> None:
    engine, _ = _till(tmp_path)
    spell = QuietSpell(CommitWatch.of(engine), recheck_s=10)
    version = spell.before_look()
    with engine.begin() as connection:  # committed after the version was read
        connection.exec_driver_sql("INSERT INTO t VALUES (3)")
    spell.after_look(version, 0.0, found=False)
    assert not spell.quiet(0.1)


def test_no_watch_where_there_is_no_file(tmp_path: Path) -> None:
    assert CommitWatch.of(sa.create_engine("sqlite://")) is None
    assert CommitWatch.of(sa.create_engine(f"sqlite:///{tmp_path / 'none.db'}")) is None
    spell = QuietSpell(None, recheck_s=10)
    spell.after_look(spell.before_look(), 0.0, found=False)
    assert not spell.quiet(0.1)  # without a watch every poll looks
