"""`cdc init`'s writing, without a server: index names, table patterns, YAML scalars and
comments that load back as what was meant, whatever the names hold."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cdc.cli.init import (
    Plan,
    Table,
    _scalar,
    default_name,
    index_name,
    index_names,
    render,
    table_pattern,
)
from cdc.config import load_config
from cdc.model.events import Column, Kind, TableSchema
from cdc.model.position import ServerInfo

INFO = ServerInfo(flavor="mysql", version="8.4.3", server_id=1, server_uuid=None, gtid_mode=True)


def schema(db: str, name: str, *columns: Column) -> TableSchema:
    return TableSchema(db, name, columns, tuple(c.name for c in columns if c.is_primary))


def column(name: str, kind: Kind = Kind.INT, primary: bool = False, sql: str = "") -> Column:
    return Column(name, kind, is_primary=primary, sql_type=sql or kind.value)


def plan(tables: list[Table], **overrides: object) -> Plan:
    settings: dict[str, object] = {
        "host": "db.internal",
        "port": 3306,
        "user": "cdc",
        "password_env": "MYSQL_PASSWORD",
        "server_id": 4242,
        "info": INFO,
        "patterns": ["shop.*"],
        "urls": ["https://es.internal:9200"],
        "redis_url": None,
        "checkpoint_dir": None,
        "name": "shop",
        "tables": tables,
    }
    settings.update(overrides)
    return Plan(**settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("table", "index"),
    [
        ("orders", "orders"),
        ("Order Items", "order_items"),
        ("__tmp-Log", "tmp-log"),
        ("Größe", "gr__e"),
        ("___", "table"),
        ("x" * 300, "x" * 255),
    ],
)
def test_index_names_are_valid_names_made_of_the_table_name(table: str, index: str) -> None:
    assert index_name(table) == index


def test_tables_that_would_share_an_index_get_their_schema_in_it() -> None:
    tables = [
        schema("shop", "orders"),
        schema("archive", "orders"),
        schema("shop", "Orders"),
        schema("shop", "items"),
    ]

    assert index_names(tables, "p-") == {
        "shop.orders": "p-shop_orders",
        "archive.orders": "p-archive_orders",
        "shop.Orders": "p-shop_orders_2",
        "shop.items": "p-items",
    }


def test_a_table_pattern_matches_its_table_alone() -> None:
    import fnmatch

    pattern = table_pattern(schema("shop", "a*b?[c]"))

    assert pattern == "shop.a[*]b[?][[]c]"
    assert fnmatch.fnmatchcase("shop.a*b?[c]", pattern)
    assert not fnmatch.fnmatchcase("shop.axb?[c]", pattern)


def test_the_default_name_is_the_one_schema_else_cdc() -> None:
    assert default_name(["shop", "shop"]) == "shop"
    assert default_name(["my shop!"]) == "my-shop-"
    assert default_name(["shop", "crm"]) == "cdc"
    assert default_name(["_"]) == "cdc"


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "with space",
        "a: b",
        "#hash",
        "${HOME}",
        "$${x}",
        "yes",
        "null",
        "12",
        "[x]",
        "-dash",
        'quote"s',
        "back\\slash",
        "tab\there",
        "line\nbreak",
        "ünï",
        "\x85\x9f",
        "😀",
    ],
)
def test_scalars_load_back_as_themselves_without_expansion(value: str, tmp_path: Path) -> None:
    text = f"name: n\nvalue: {_scalar(value)}\nflow: [{_scalar(value, flow=True)}]\n"

    loaded = yaml.safe_load(text)

    assert loaded["value"].replace("$${", "${") == value
    assert loaded["flow"][0].replace("$${", "${") == value


def test_the_config_loads_with_awkward_names(tmp_path: Path) -> None:
    odd = "we\nird: #${X}\x85\u2028\u2029\x7f"
    tables = [
        Table(
            schema(
                "shop",
                "order lines*",
                column("order id", primary=True),
                column("line#", primary=True),
                column(odd, Kind.JSON, sql="json"),
            ),
            ("order id", "line#"),
            True,
        ),
        Table(
            schema(
                "shop",
                "people",
                column(odd, Kind.STRING, sql="varchar(10)"),
                column("e-mail", Kind.STRING, sql="varchar(99)"),
                column("price", Kind.DECIMAL, sql="decimal(10,2)"),
                column("blob", Kind.BINARY, sql="blob"),
            ),
            (odd, "e-mail"),
            False,
        ),
        Table(schema("shop", "log", column("at", Kind.DATETIME)), None, False),
        Table(schema("shop", "a.b", column("id", primary=True)), ("id",), True),
    ]
    path = tmp_path / "c.yaml"

    path.write_text(render(plan(tables, redis_url="redis://:${x}@r:6379/0")))
    # The URL's password is written as ${REDIS_PASSWORD}, and read back from there as it was.
    cfg = load_config(path, {"MYSQL_PASSWORD": "secret", "REDIS_PASSWORD": "${x}"})

    assert [(m.table, m.index, m.id_columns) for m in cfg.tables] == [
        ("shop.order lines[*]", "order_lines_", None),
        ("shop.people", "people", [odd, "e-mail"]),
    ]
    assert cfg.tables[0].matches("shop", "order lines*")
    assert cfg.checkpoint.redis is not None
    assert cfg.checkpoint.redis.url == "redis://:${x}@r:6379/0"
    assert cfg.source.password == "secret" and cfg.source.flavor == "mysql"
    text = path.read_text()
    assert "# tls:" in text  # an https URL
    assert "#   index: log" in text  # left out: no key
    assert "Left out: its name holds a `.`" in text
    # Line breaks and what YAML refuses are spelled out in comments.
    assert "# shop.people: we\\u000aird: #${X}\\u0085\\u2028\\u2029\\u007f varchar(10)" in text
