"""Indices the connector creates are mapped from the column types: JSON of any shape indexes
without dead letters, DECIMAL numbers answer range queries, text has a keyword sub-field, and
`cdc check` names an existing field whose type contradicts its column."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness import run_until_caught_up, stored_checkpoint, write_config
from rig import MariaDB, Osmem
from typer.testing import CliRunner

from cdc.cli.app import app
from cdc.config import load_config
from cdc.state.backends import open_stores

DDL = """CREATE TABLE typed (
  id INT PRIMARY KEY, big BIGINT UNSIGNED, small TINYINT, price DECIMAL(10,2),
  wide DECIMAL(30,10), ratio FLOAT, score DOUBLE, born DATE, seen DATETIME(6), stamp TIMESTAMP(3)
  NULL, dur TIME, yr YEAR, name VARCHAR(50), code VARCHAR(20), body TEXT,
  state ENUM('new','done'), flags SET('a','b'), attrs JSON, blob_col BLOB, bits BIT(4)
)"""

ROWS = [
    "(1, 18446744073709551615, -5, 12.50, 1.5, 0.5, 2.25, '2024-01-02',"
    " '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05.250', '-12:00:01', 2024,"
    " 'ann', 'A-1', 'long text', 'new', 'a,b',"
    " '{\"n\": [1, 2.5]}', 'xyz', b'1010')",
    "(2, 1, 5, 99.99, 0.0000000001, 1.5, -1, '1999-12-31', '1999-12-31 23:59:59', NULL,"
    " '838:59:59', 1999, 'bob', 'B-2', 'text', 'done', '', '{\"n\": \"text\"}', NULL, b'0001')",
    "(3, 7, 0, 15.00, 0, 0, 0, NULL, '2000-01-01 00:00:00', NULL, NULL, NULL, NULL, NULL, NULL,"
    ' NULL, NULL, \'{"n": {"deep": [true, null, "x"]}}\', NULL, NULL)',
]


def _setup(
    mariadb: MariaDB, osmem: Osmem, db: str, index: str, tmp_path: Path, **options: Any
) -> Path:
    mariadb.sql(DDL, db=db)
    mariadb.sql("INSERT INTO typed VALUES " + ", ".join(ROWS), db=db)
    return write_config(
        tmp_path / "c.yaml",
        port=mariadb.port,
        es_url=osmem.url,
        tables=[{"table": f"{db}.typed", "index": index, **options}],
        snapshot={"mode": "initial"},
    )


def _properties(osmem: Osmem, index: str) -> dict[str, Any]:
    _, body = osmem.request("GET", f"/{index}/_mapping")
    (only,) = body.values()
    properties: dict[str, Any] = only["mappings"]["properties"]
    return properties


def _search(osmem: Osmem, index: str, query: dict[str, Any]) -> list[str]:
    osmem.refresh(index)
    _, body = osmem.request("POST", f"/{index}/_search", {"query": query, "size": 100})
    return sorted(hit["_id"] for hit in body["hits"]["hits"])


def test_a_default_mapping_indexes_json_of_any_shape_with_typed_fields(
    mariadb: MariaDB, osmem: Osmem, fresh_db: str, es_index: str, tmp_path: Path
) -> None:
    config = _setup(mariadb, osmem, fresh_db, es_index, tmp_path)
    stats = run_until_caught_up(config)

    assert stats.dead_letters == 0
    with open_stores(load_config(config)) as stores:
        assert stores.letters.size() == 0
    assert sorted(osmem.all_docs(es_index)) == ["1", "2", "3"]
    types = {name: spec.get("type") for name, spec in _properties(osmem, es_index).items()}
    assert types == {
        "id": "long",
        "big": "unsigned_long",
        "small": "long",
        "price": "keyword",
        "wide": "keyword",
        "ratio": "float",
        "score": "double",
        "born": "date",
        "seen": "date",
        "stamp": "date",
        "dur": "keyword",
        "yr": "short",
        "name": "text",
        "code": "text",
        "body": "text",
        "state": "keyword",
        "flags": "keyword",
        "attrs": "flat_object",  # `flattened` on Elasticsearch
        "blob_col": "binary",
        "bits": "long",
    }
    assert _properties(osmem, es_index)["name"]["fields"]["keyword"]["type"] == "keyword"
    assert _search(osmem, es_index, {"term": {"name.keyword": "ann"}}) == ["1"]
    assert _search(osmem, es_index, {"range": {"seen": {"lt": "2001-01-01T00:00:00Z"}}}) == [
        "2",
        "3",
    ]


def test_options_choose_numbers_keywords_and_json_objects(
    mariadb: MariaDB, osmem: Osmem, fresh_db: str, es_index: str, tmp_path: Path
) -> None:
    config = _setup(
        mariadb,
        osmem,
        fresh_db,
        es_index,
        tmp_path,
        decimal="number",
        string_fields={"code": "keyword", "body": "text"},
        json_fields="disabled",
        binary="skip",
        rename={"price": "amount"},
    )
    assert run_until_caught_up(config).dead_letters == 0

    properties = _properties(osmem, es_index)
    assert properties["amount"]["type"] == "scaled_float"
    assert float(properties["amount"]["scaling_factor"]) == 100
    assert properties["wide"]["type"] == "double"  # 30 digits do not fit a scaled long
    assert properties["code"] == {"type": "keyword", "ignore_above": 256}
    assert properties["body"] == {"type": "text"}
    assert properties["attrs"]["enabled"] is False
    assert "blob_col" not in properties
    # DECIMAL as a number answers range queries (as text it could not).
    assert _search(osmem, es_index, {"range": {"amount": {"gte": 10, "lte": 20}}}) == ["1", "3"]


def test_index_mappings_override_the_derived_types_field_by_field(
    mariadb: MariaDB, osmem: Osmem, fresh_db: str, es_index: str, tmp_path: Path
) -> None:
    config = _setup(
        mariadb,
        osmem,
        fresh_db,
        es_index,
        tmp_path,
        index_mappings={"properties": {"name": {"type": "keyword"}, "extra": {"type": "long"}}},
    )
    run_until_caught_up(config)

    properties = _properties(osmem, es_index)
    assert properties["name"] == {"type": "keyword"}
    assert properties["extra"] == {"type": "long"}
    assert properties["price"] == {"type": "keyword"}


def test_check_names_an_existing_field_whose_type_contradicts_its_column(
    mariadb: MariaDB, osmem: Osmem, fresh_db: str, es_index: str, tmp_path: Path
) -> None:
    config = _setup(mariadb, osmem, fresh_db, es_index, tmp_path, include=["id", "price", "seen"])
    osmem.request(
        "PUT",
        f"/{es_index}",
        {"mappings": {"properties": {"id": {"type": "long"}, "price": {"type": "float"}}}},
    )

    result = CliRunner().invoke(app, ["check", "--config", str(config)])

    line = next(x for x in result.stdout.splitlines() if f"index {es_index}" in x)
    assert line.startswith(
        f"! index {es_index}: exists, but its field types differ from its columns"
    )
    assert "price is float (column type: keyword)" in line
    assert "seen is not mapped (column type: date)" in line
    assert stored_checkpoint(config) is None  # check writes nothing
    assert result.exit_code == 0  # a warning, not a failure
