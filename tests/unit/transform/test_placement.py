"""Where a row's document lives: routing from a column and an index per period, and the
deletes that follow a row to another shard or period."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cdc.config import TableMapping
from cdc.model.events import Column, Kind, RowChange, TableSchema
from cdc.sink.bulk import encode
from cdc.transform.checks import problems
from cdc.transform.mapping import Mapper

ORDERS = TableSchema(
    "shop",
    "orders",
    (
        Column("id", Kind.INT, is_primary=True),
        Column("customer", Kind.STRING),
        Column("created_at", Kind.DATETIME),
        Column("note", Kind.STRING),
    ),
    ("id",),
)


def _mapper(**options: Any) -> Mapper:
    mapping = TableMapping(table="shop.orders", index="orders-{created_at:%Y.%m}", **options)
    return Mapper(mapping, ORDERS, ZoneInfo("UTC"))


def _row(i: int, customer: str, month: int) -> dict[str, Any]:
    return {"id": i, "customer": customer, "created_at": dt.datetime(2024, month, 5), "note": ""}


def _ops(mapper: Mapper, op: str, before: Any, after: Any) -> list[tuple[str, str, str, Any]]:
    change = RowChange(ORDERS, op, before, after)  # type: ignore[arg-type]
    return [(a.op, a.index, a.doc_id, a.routing) for a in mapper.map(change)]


def test_moves_between_periods_and_shards_delete_where_the_document_was() -> None:
    mapper = _mapper(routing="customer")
    jan, feb = _row(1, "ann", 1), _row(1, "ann", 2)

    assert _ops(mapper, "insert", None, jan) == [("index", "orders-2024.01", "1", "ann")]
    assert _ops(mapper, "update", jan, feb) == [
        ("delete", "orders-2024.01", "1", "ann"),
        ("index", "orders-2024.02", "1", "ann"),
    ]
    assert _ops(mapper, "update", feb, {**feb, "customer": "bob"}) == [
        ("delete", "orders-2024.02", "1", "ann"),
        ("index", "orders-2024.02", "1", "bob"),
    ]
    assert _ops(mapper, "update", feb, {**feb, "note": "x"}) == [
        ("index", "orders-2024.02", "1", "ann")
    ]
    assert _ops(mapper, "delete", feb, None) == [("delete", "orders-2024.02", "1", "ann")]
    assert _ops(mapper, "insert", None, {**jan, "created_at": None}) == [
        ("index", "orders-none", "1", "ann")
    ]


def test_routing_and_pipeline_are_in_the_bulk_metadata() -> None:
    mapper = _mapper(routing="customer", pipeline="tidy")
    index = mapper.map(RowChange(ORDERS, "insert", None, _row(7, "ann", 3)))[0]
    line = encode(index, 5).split(b"\n")[0]

    assert line == (
        b'{"index":{"_index":"orders-2024.03","_id":"7","routing":"ann","pipeline":"tidy",'
        b'"version":5,"version_type":"external"}}'
    )
    delete = mapper.map(RowChange(ORDERS, "delete", _row(7, "ann", 3), None))[0]
    assert encode(delete, 6) == (
        b'{"delete":{"_index":"orders-2024.03","_id":"7","routing":"ann","version":6,'
        b'"version_type":"external"}}\n'
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"routing": "client"}, "routing names unknown column 'client'"),
        ({"index": "orders-{note}"}, "only DATE, DATETIME and TIMESTAMP columns have periods"),
        ({"index": "orders-{made}"}, "index names unknown column 'made'"),
    ],
)
def test_routing_and_period_columns_must_fit_the_table(
    options: dict[str, Any], message: str
) -> None:
    mapping = TableMapping.model_validate(
        {"table": "shop.orders", "index": "orders-{created_at:%Y.%m}", **options}
    )

    assert any(message in p.message for p in problems(mapping, ORDERS))


def test_a_period_template_must_give_valid_index_names() -> None:
    with pytest.raises(ValueError, match="valid index name"):
        TableMapping(table="shop.orders", index="Orders-{created_at}")


def test_computed_fields_are_checked_against_the_table() -> None:
    mapping = TableMapping.model_validate(
        {
            "table": "shop.orders",
            "index": "orders",
            "computed": {
                "who": {"concat": {"columns": ["customr"]}},
                "month": {"date_format": {"column": "note", "format": "%Y"}},
                "w": {"json_path": {"column": "note", "path": "$.w"}},
                "note": {"constant": 1},
            },
            "transform": "no_such_module_here:fn",
        }
    )

    found = [p.message for p in problems(mapping, ORDERS)]

    assert any("computed names unknown column 'customr'" in m for m in found), found
    mapping = mapping.model_copy(
        update={"computed": {k: v for k, v in mapping.computed.items() if k != "who"}}
    )
    found = [p.message for p in problems(mapping, ORDERS)]
    assert any("date_format needs a DATE, DATETIME or TIMESTAMP column" in m for m in found)
    assert any("json_path needs a JSON column" in m for m in found)
    assert any("computed field 'note' collides" in m for m in found)
    assert any("cannot import 'no_such_module_here'" in m for m in found)


def test_a_computed_field_gives_exactly_one_kind() -> None:
    with pytest.raises(ValueError, match="exactly one of"):
        TableMapping.model_validate(
            {
                "table": "a.b",
                "index": "i",
                "computed": {"x": {"constant": 1, "concat": {"columns": ["a"]}}},
            }
        )
