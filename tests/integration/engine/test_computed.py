"""Computed fields and the Python hook, compared with the same values computed by SQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from harness import run_until_caught_up, write_config
from rig import MariaDB, Osmem

from cdc.config import ConnectorConfig, load_config
from cdc.errors import CdcError
from cdc.sink.elastic import ElasticSink
from cdc.state.backends import open_stores

COMPUTED = {
    "full_name": {"concat": {"columns": ["first", "last"], "separator": " "}},
    "width": {"json_path": {"column": "attrs", "path": "$.dims.width"}},
    "first_tag": {"json_path": {"column": "attrs", "path": "$.tags[0]"}},
    "month": {"date_format": {"column": "born", "format": "%Y-%m"}},
    "source": {"constant": "crm"},
}


def _expected(mariadb: MariaDB, db: str) -> dict[str, Any]:
    rows = mariadb.query(
        "SELECT id, first, CONCAT_WS(' ', first, last), JSON_VALUE(attrs, '$.dims.width'),"
        " JSON_VALUE(attrs, '$.tags[0]'), DATE_FORMAT(born, '%Y-%m') FROM people",
        db=db,
    )
    return {
        str(i): {
            "id": i,
            "first": first.upper() if first else first,
            "full_name": full or None,
            "width": int(width) if width is not None else None,
            "first_tag": tag,
            "month": month,
            "source": "crm",
            "name_length": len(first) if first else 0,
        }
        for i, first, full, width, tag, month in rows
    }


def test_computed_fields_and_the_hook_equal_what_sql_computes(
    mariadb: MariaDB, osmem: Osmem, fresh_db: str, es_index: str, tmp_path: Path
) -> None:
    mariadb.sql(
        "CREATE TABLE people (id INT PRIMARY KEY, first VARCHAR(20), last VARCHAR(20),"
        " attrs JSON, born DATE)",
        db=fresh_db,
    )
    mariadb.sql(
        "INSERT INTO people VALUES"
        ' (1, \'ann\', \'lee\', \'{"dims": {"width": 3}, "tags": ["a", "b"]}\', \'1990-04-02\'),'
        " (2, 'bob', NULL, '{\"tags\": []}', NULL),"
        " (3, NULL, NULL, NULL, '2001-12-31')",
        db=fresh_db,
    )
    config = write_config(
        tmp_path / "c.yaml",
        port=mariadb.port,
        es_url=osmem.url,
        tables=[
            {
                "table": f"{fresh_db}.people",
                "index": es_index,
                "include": ["id", "first"],
                "computed": COMPUTED,
                "transform": "hooks:shout",
            }
        ],
        snapshot={"mode": "initial"},
    )
    run_until_caught_up(config)
    mariadb.sql(
        "UPDATE people SET last = 'ray', attrs = '{\"dims\": {\"width\": 9}}' WHERE id = 2",
        db=fresh_db,
    )
    mariadb.sql("INSERT INTO people VALUES (4, 'cy', 'dee', NULL, '2024-02-29')", db=fresh_db)
    run_until_caught_up(config)

    assert osmem.all_docs(es_index) == _expected(mariadb, fresh_db)
    _, mapping = osmem.request("GET", f"/{es_index}/_mapping")
    (only,) = mapping.values()
    assert only["mappings"]["properties"]["month"] == {"type": "keyword"}


def test_a_hook_that_cannot_be_imported_or_fails_stops_with_its_name(
    mariadb: MariaDB, osmem: Osmem, fresh_db: str, es_index: str, tmp_path: Path
) -> None:
    mariadb.sql("CREATE TABLE people (id INT PRIMARY KEY, first VARCHAR(20))", db=fresh_db)
    mariadb.sql("INSERT INTO people VALUES (1, 'ann')", db=fresh_db)

    def config(hook: str, name: str) -> ConnectorConfig:
        return load_config(
            write_config(
                tmp_path / f"{name}.yaml",
                port=mariadb.port,
                es_url=osmem.url,
                tables=[{"table": f"{fresh_db}.people", "index": es_index, "transform": hook}],
                name=name,
                snapshot={"mode": "initial"},
            )
        )

    with pytest.raises(CdcError, match="transform 'nowhere:fn': cannot import 'nowhere'"):
        run_until_caught_up(config("nowhere:fn", "missing"))
    broken = config("hooks:broken", "broken")
    with pytest.raises(CdcError, match="transform 'hooks:broken' failed: ValueError"):
        run_until_caught_up(broken)
    sink = ElasticSink(broken.sink)
    try:
        assert sink.mget(es_index, ["1"]) == {}  # nothing was written
    finally:
        sink.close()
    with open_stores(broken) as stores:
        assert stores.letters.size() == 0
