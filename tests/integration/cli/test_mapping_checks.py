"""Mappings are held against the live schema before anything streams: a misspelt table, an
unknown column or an option that does not fit is reported by `cdc check` and refused by
`cdc run` up front, at the spot in the config, instead of at the first row (or never)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from harness import CdcProcess, run_until_caught_up, stored_checkpoint, wait_for, write_config
from rig import MariaDB, Osmem
from typer.testing import CliRunner

from cdc.cli.app import app

FIX_COLUMN = "correct the column name in the mapping (names are case-sensitive)"


def _config(
    tmp_path: Path, mariadb: MariaDB, osmem: Osmem, db: str, tables: list[dict[str, Any]]
) -> Path:
    mariadb.sql("CREATE TABLE pairs (id INT PRIMARY KEY, a INT, b INT)", db=db)
    mariadb.sql("CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(20), qty INT)", db=db)
    mariadb.sql("INSERT INTO items VALUES (1, 'one', 1)", db=db)
    return write_config(
        tmp_path / "c.yaml", port=mariadb.port, es_url=osmem.url, tables=tables, name=db
    )


def _line_of(config: Path, text: str) -> int:
    """The line number of the first line of the config file holding `text`."""
    lines = config.read_text().splitlines()
    return next(n for n, line in enumerate(lines, 1) if text in line)


def _run(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cdc", "run", "--config", str(config), "--until-caught-up"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_typo_in_each_mapping_is_reported_at_its_spot_and_refused_before_streaming(
    mariadb: MariaDB, osmem: Osmem, fresh_db: str, tmp_path: Path
) -> None:
    db = fresh_db
    config = _config(
        tmp_path,
        mariadb,
        osmem,
        db,
        [
            {"table": f"{db}.pairz", "index": f"{db}_pairs"},
            {
                "table": f"{db}.items",
                "index": f"{db}_items",
                "include": ["id", "nosuchcol"],
                "rename": {"namee": "title"},
            },
        ],
    )
    columns = "the table's columns are: id, name, qty"
    unknown_table = (
        f"{config}:{_line_of(config, 'pairz')}: tables[0].table: `{db}.pairz` matches no table "
        f"on the server; did you mean `{db}.pairs`?"
    )
    include = (
        f"{config}:{_line_of(config, '- nosuchcol')}: tables[1].include[1]: mapping "
        f"'{db}.items' (table {db}.items): include names unknown column 'nosuchcol'; {columns}"
    )
    rename = (
        f"{config}:{_line_of(config, 'namee:')}: tables[1].rename.namee: mapping '{db}.items' "
        f"(table {db}.items): rename names unknown column 'namee'; {columns}; did you mean "
        "`name`?"
    )

    check = CliRunner().invoke(app, ["check", "--config", str(config)])

    assert check.exit_code == 1, check.output
    mapping_lines = [line for line in check.stdout.splitlines() if "mappings:" in line[:12]]
    assert mapping_lines == [
        f"✗ mappings: {include} — {FIX_COLUMN}",
        f"✗ mappings: {rename} — {FIX_COLUMN}",
        f"✗ mappings: {unknown_table} — correct the table name, or create the table first",
    ]

    run = _run(config)

    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert f"WARNING cdc.engine.pipeline: {unknown_table}; its changes stream once such a " in (
        run.stderr
    )
    assert "the table mappings do not fit the tables on the server:\n" in run.stderr
    assert f"\n{include} — {FIX_COLUMN}\n{rename} — {FIX_COLUMN}" in run.stderr
    # Nothing was written: no index, no checkpoint.
    assert osmem.request("HEAD", f"/{db}_items", ok=(404,))[0] == 404
    assert stored_checkpoint(config) is None


def test_a_corrected_config_passes_both(
    mariadb: MariaDB, osmem: Osmem, fresh_db: str, tmp_path: Path
) -> None:
    db = fresh_db
    config = _config(
        tmp_path,
        mariadb,
        osmem,
        db,
        [
            {"table": f"{db}.pairs", "index": f"{db}_pairs"},
            {
                "table": f"{db}.items",
                "index": f"{db}_items",
                "include": ["id", "name"],
                "rename": {"name": "title"},
                "soft_delete": {"column": "qty", "values": [0]},
            },
        ],
    )

    check = CliRunner().invoke(app, ["check", "--config", str(config)])
    run = _run(config)

    assert check.exit_code == 0, check.output
    assert (
        "✓ mappings: 2 table mappings cover 2 tables; every column and option they name fits"
        in check.stdout
    )
    assert run.returncode == 0, run.stderr
    assert "WARNING" not in run.stderr


def test_a_mapping_of_no_table_only_warns_in_run_and_its_table_streams_once_it_exists(
    mariadb: MariaDB, osmem: Osmem, fresh_db: str, tmp_path: Path
) -> None:
    db = fresh_db
    config = _config(
        tmp_path,
        mariadb,
        osmem,
        db,
        [
            {"table": f"{db}.later", "index": f"{db}_later"},
            {"table": f"{db}.items", "index": f"{db}_items"},
        ],
    )

    first = _run(config)
    mariadb.sql("CREATE TABLE later (id INT PRIMARY KEY, v INT)", db=db)
    mariadb.sql("INSERT INTO later VALUES (7, 70)", db=db)
    run_until_caught_up(config)

    assert first.returncode == 0, first.stderr
    assert first.stderr.count("matches no table on the server") == 1
    osmem.refresh(f"{db}_later")
    assert osmem.all_docs(f"{db}_later") == {"7": {"id": 7, "v": 70}}


def test_options_that_do_not_fit_their_columns_are_refused(
    mariadb: MariaDB, osmem: Osmem, fresh_db: str, tmp_path: Path
) -> None:
    db = fresh_db
    config = _config(
        tmp_path,
        mariadb,
        osmem,
        db,
        [
            {
                "table": f"{db}.items",
                "index": f"{db}_items",
                "json_columns": ["qty"],
                "soft_delete": {"column": "qty", "values": ["0"]},
            },
        ],
    )

    check = CliRunner().invoke(app, ["check", "--config", str(config)])
    run = _run(config)

    assert check.exit_code == 1
    assert (
        f"tables[0].json_columns[0]: mapping '{db}.items' (table {db}.items): json_columns "
        "names column 'qty', which is an integer: only text columns can hold JSON text"
    ) in check.stdout
    assert (
        f"tables[0].soft_delete.values[0]: mapping '{db}.items' (table {db}.items): "
        "soft_delete value '0' can never equal a value of column 'qty', which is an integer — "
        "write the value as a number, without quotes"
    ) in check.stdout
    assert run.returncode == 2
    assert stored_checkpoint(config) is None


def test_a_column_dropped_while_streaming_stops_the_run_at_its_next_row_as_before(
    mariadb: MariaDB, osmem: Osmem, fresh_db: str, tmp_path: Path
) -> None:
    db = fresh_db
    config = _config(
        tmp_path,
        mariadb,
        osmem,
        db,
        [{"table": f"{db}.items", "index": f"{db}_items", "include": ["id", "name"]}],
    )
    message = (
        f"mapping '{db}.items' (table {db}.items): include names unknown column 'name'; the "
        "table's columns are: id, qty"
    )

    with CdcProcess(config) as proc:
        wait_for(lambda: "starting at the server's current position" in proc.log())
        mariadb.sql("ALTER TABLE items DROP COLUMN name", db=db)
        mariadb.sql("INSERT INTO items VALUES (2, 2)", db=db)
        code = proc.wait(timeout=60)
        log = proc.log()
    check = CliRunner().invoke(app, ["check", "--config", str(config)])

    assert code == 1, log
    assert f"ERROR cdc: {message}\nFix: {FIX_COLUMN}" in log
    assert f"tables[0].include[1]: {message} — {FIX_COLUMN}" in check.stdout
    assert check.exit_code == 1
