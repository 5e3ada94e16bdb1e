"""`cajasync catalog …` as a back-office script uses it (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli
from schemas.topics import DOWN_TOPIC_SCOPES

YERBA = {"key": "000001", "name": "Yerba 1kg", "price": "3150.00", "tax_rate": "21"}


def cajasync(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The real command line, as a subprocess (errors are printed by `main`)."""
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def show(runner: CliRunner, db: str, topic: str, key: str, *scope: str) -> dict[str, object]:
    result = runner.invoke(cli, ["catalog", "show", "--db", db, topic, key, *scope])
    assert result.exit_code == 0, result.output
    shown: dict[str, object] = json.loads(result.output)
    return shown


def test_upserted_records_get_server_versions_and_show_in_the_replica_shape(
    runner: CliRunner, server_db_url: str, tmp_path: Path
) -> None:
    source = tmp_path / "products.json"
    source.write_text(json.dumps([YERBA, {**YERBA, "key": "000002", "version": 40}]))

    result = runner.invoke(
        cli, ["catalog", "upsert", "--db", server_db_url, "productos", "--json", str(source)]
    )

    assert result.exit_code == 0, result.output
    assert "productos:all at seq 2" in result.output
    shown = show(runner, server_db_url, "productos", "000002")
    assert shown["type"] == "productos"
    assert (shown["key"], shown["version"], shown["price"]) == ("000002", 1, "3150.00")


def test_records_shown_can_be_edited_and_upserted_again_from_stdin(
    runner: CliRunner, server_db_url: str
) -> None:
    runner.invoke(
        cli,
        ["catalog", "upsert", "--db", server_db_url, "products", "--json", "-"],
        input=json.dumps(YERBA),
    )
    edited = {**show(runner, server_db_url, "products", "000001"), "price": "3300.00"}

    result = runner.invoke(
        cli,
        ["catalog", "upsert", "--db", server_db_url, "products", "--json", "-"],
        input=json.dumps(edited),
    )

    assert result.exit_code == 0, result.output
    shown = show(runner, server_db_url, "productos", "000001")
    assert (shown["version"], shown["price"]) == (2, "3300.00")


def test_scoped_topics_take_their_scope_option(runner: CliRunner, server_db_url: str) -> None:
    level = {"key": "L1/000001", "product": "000001", "quantity": 12}

    result = runner.invoke(
        cli,
        ["catalog", "upsert", "--db", server_db_url, "stock", "--json", "-", "--scope", "loc.L1"],
        input=json.dumps(level),
    )

    assert result.exit_code == 0, result.output
    assert (
        show(runner, server_db_url, "stock", "L1/000001", "--scope", "loc.L1")["quantity"] == "12"
    )


def test_a_scoped_topic_without_its_scope_is_one_line_saying_what_to_pass(
    server_db_url: str,
) -> None:
    level = {"key": "L1/000001", "product": "000001", "quantity": 12}

    result = cajasync(
        "catalog", "upsert", "--db", server_db_url, "stock", "--json", "-", stdin=json.dumps(level)
    )

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "stock records need a scope loc.<location>" in result.stderr


def test_a_malformed_record_is_one_line_naming_its_index_and_field(server_db_url: str) -> None:
    records = [YERBA, {**YERBA, "key": "000002", "price": "cheap"}]

    result = cajasync(
        "catalog", "upsert", "--db", server_db_url, "productos", "--json", "-",
        stdin=json.dumps(records),
    )  # fmt: skip

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "record 1" in result.stderr
    assert "$.price" in result.stderr


def test_one_bad_record_among_good_ones_is_one_line_and_nothing_is_written(
    runner: CliRunner, server_db_url: str, tmp_path: Path
) -> None:
    source = tmp_path / "products.json"
    records = [{**YERBA, "key": f"00000{n}"} for n in range(1, 5)]
    records[2]["price"] = "NaN"
    source.write_text(json.dumps(records))

    result = cajasync(
        "catalog", "upsert", "--db", server_db_url, "productos", "--json", str(source)
    )

    assert result.returncode == 1
    assert result.stderr == (
        "error: record 2 ('000003'): price: NaN is not a finite number; nothing was written\n"
    )
    for key in ("000001", "000002", "000004"):
        shown = runner.invoke(cli, ["catalog", "show", "--db", server_db_url, "productos", key])
        assert shown.exit_code == 1, shown.output
        assert "no current" in shown.output


def test_every_bad_record_of_a_file_gets_its_own_line_naming_index_key_and_field(
    server_db_url: str,
) -> None:
    records = [
        {**YERBA, "price": "-5"},
        {**YERBA, "key": "000002"},
        {**YERBA, "key": "000003", "tax_rate": "250"},
        {**YERBA, "key": "000004", "name": " ", "price": "cheap"},
    ]

    result = cajasync(
        "catalog", "upsert", "--db", server_db_url, "productos", "--json", "-",
        stdin=json.dumps(records),
    )  # fmt: skip

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: 3 of 4 records are invalid; nothing was written:",
        "  record 0 ('000001'): price: -5 is negative",
        "  record 2 ('000003'): tax_rate: 250 is not within 0..100",
        "  record 3 ('000004'): Invalid decimal string - at `$.price`",
    ]


def test_configuration_records_name_their_kind(runner: CliRunner, server_db_url: str) -> None:
    setting = {"type": "configuracion/setting", "key": "currency", "value": "ARS"}

    result = runner.invoke(
        cli,
        ["catalog", "upsert", "--db", server_db_url, "config", "--json", "-"],
        input=json.dumps(setting),
    )

    assert result.exit_code == 0, result.output
    assert show(runner, server_db_url, "configuracion", "currency")["value"] == "ARS"


def test_a_deleted_record_is_gone_and_deleting_it_again_is_harmless(
    runner: CliRunner, server_db_url: str
) -> None:
    runner.invoke(
        cli,
        ["catalog", "upsert", "--db", server_db_url, "productos", "--json", "-"],
        input=json.dumps(YERBA),
    )

    deleted = runner.invoke(
        cli, ["catalog", "delete", "--db", server_db_url, "productos", "000001", "--json"]
    )
    again = runner.invoke(cli, ["catalog", "delete", "--db", server_db_url, "productos", "000001"])
    missing = runner.invoke(cli, ["catalog", "show", "--db", server_db_url, "productos", "000001"])

    assert deleted.exit_code == 0, deleted.output
    tombstone = json.loads(deleted.output)
    assert (tombstone["version"], tombstone["seq"], tombstone["record"]) == (2, 2, None)
    assert again.exit_code == 0
    assert "nothing to delete" in again.output
    assert missing.exit_code == 1
    assert "no current '000001'" in missing.output


def test_seed_fills_every_topic_and_reports_the_counts(
    runner: CliRunner, server_db_url: str
) -> None:
    result = runner.invoke(
        cli,
        [
            "catalog", "seed", "--db", server_db_url,
            "--products", "30", "--customers", "4", "--images", "--json",
        ],
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    counts = json.loads(result.output)
    assert all(counts[topic] > 0 for topic in DOWN_TOPIC_SCOPES)
    assert (counts["productos"], counts["clientes"], counts["images"]) == (30, 5, 35)
    table = runner.invoke(cli, ["catalog", "seed", "--db", server_db_url, "--products", "30"])
    assert table.exit_code == 0, table.output
    assert "productos" in table.output


def test_publish_until_idle_sends_the_change_log(
    runner: CliRunner, server_db_url: str, broker_url: str
) -> None:
    runner.invoke(
        cli,
        [
            "catalog",
            "upsert",
            "--db",
            server_db_url,
            "productos",
            "--json",
            "-",
            "--scope",
            "term.TX",
        ],
        input=json.dumps(YERBA),
    )

    result = cajasync(
        "catalog", "publish", "--db", server_db_url, "--broker-url", broker_url,
        "--until-idle", "0.3",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert "confirmed 1" in result.stdout


def test_an_unknown_topic_lists_the_topics(server_db_url: str) -> None:
    result = cajasync("catalog", "delete", "--db", server_db_url, "prods", "1")

    assert result.returncode == 1
    assert "productos (products)" in result.stderr
