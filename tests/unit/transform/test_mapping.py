"""Row changes become the right index/delete operations and documents (cdc.transform.mapping)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from cdc.config import TableMapping
from cdc.errors import MappingError
from cdc.model.events import Column, Kind, RowChange, TableSchema
from cdc.transform.mapping import Action, Mapper

UTC = ZoneInfo("UTC")

ORDERS = TableSchema(
    schema="shop",
    table="orders_1",
    columns=(
        Column("id", Kind.INT, unsigned=True, is_primary=True),
        Column("region", Kind.STRING),
        Column("customer", Kind.STRING),
        Column("total", Kind.DECIMAL),
        Column("secret", Kind.STRING),
        Column("deleted", Kind.INT),
        Column("photo", Kind.BINARY),
        Column("attrs", Kind.STRING),
    ),
    primary_key=("id",),
)


def mapping(**fields: Any) -> TableMapping:
    return TableMapping.model_validate({"table": "shop.orders_*", "index": "orders", **fields})


def row(**changes: Any) -> dict[str, Any]:
    base = {
        "id": 7,
        "region": "eu",
        "customer": "Zoë",
        "total": Decimal("12.30"),
        "secret": "hunter2",
        "deleted": 0,
        "photo": b"\x00\xff",
        "attrs": '{"gift": true}',
    }
    return {**base, **changes}


def insert(after: dict[str, Any], table: TableSchema = ORDERS) -> RowChange:
    return RowChange(table, "insert", None, after)


def update(before: dict[str, Any], after: dict[str, Any]) -> RowChange:
    return RowChange(ORDERS, "update", before, after)


def delete(before: dict[str, Any]) -> RowChange:
    return RowChange(ORDERS, "delete", before, None)


def index(doc_id: str, source: dict[str, Any]) -> Action:
    return Action("index", "orders", doc_id, source)


def remove(doc_id: str) -> Action:
    return Action("delete", "orders", doc_id, None)


def test_default_document_has_every_column_converted() -> None:
    actions = Mapper(mapping(), ORDERS, UTC).map(insert(row()))
    assert actions == [
        index(
            "7",
            {
                "id": 7,
                "region": "eu",
                "customer": "Zoë",
                "total": "12.30",
                "secret": "hunter2",
                "deleted": 0,
                "photo": "AP8=",
                "attrs": '{"gift": true}',
            },
        )
    ]


def test_include_rename_and_static_shape_the_document() -> None:
    mapper = Mapper(
        mapping(
            include=["total", "id", "customer"],
            rename={"customer": "customer_name"},
            static={"source": "shop-db", "tags": ["a"]},
        ),
        ORDERS,
        UTC,
    )
    [action] = mapper.map(insert(row()))
    assert action.source == {
        "id": 7,
        "customer_name": "Zoë",
        "total": "12.30",
        "source": "shop-db",
        "tags": ["a"],
    }


def test_exclude_leaves_columns_out() -> None:
    mapper = Mapper(mapping(exclude=["secret", "photo", "attrs"]), ORDERS, UTC)
    [action] = mapper.map(insert(row()))
    assert action.source == {
        "id": 7,
        "region": "eu",
        "customer": "Zoë",
        "total": "12.30",
        "deleted": 0,
    }


def test_excluded_id_column_still_forms_the_id() -> None:
    [action] = Mapper(mapping(exclude=["id"]), ORDERS, UTC).map(insert(row()))
    assert action.doc_id == "7"
    assert action.source is not None
    assert "id" not in action.source


def test_composite_id_joined_with_separator() -> None:
    mapper = Mapper(mapping(id_columns=["region", "id"], id_separator="/"), ORDERS, UTC)
    assert [a.doc_id for a in mapper.map(insert(row()))] == ["eu/7"]


def test_actions_carry_the_key_parts_to_find_the_row_again() -> None:
    mapper = Mapper(mapping(id_columns=["region", "id"], id_separator=":"), ORDERS, UTC)
    assert mapper.id_columns == ("region", "id")
    # The joined id would be ambiguous ("a:b" + "7" vs "a" + "b:7"); the key parts are not.
    delete_old, index_new = mapper.map(update(row(region="a:b"), row(region="a:b", id=8)))
    assert (delete_old.op, delete_old.doc_id, delete_old.key) == ("delete", "a:b:7", ("a:b", "7"))
    assert (index_new.op, index_new.doc_id, index_new.key) == ("index", "a:b:8", ("a:b", "8"))


def test_composite_primary_key_is_the_default_id() -> None:
    table = TableSchema("shop", "orders_1", ORDERS.columns, ("region", "id"))
    [action] = Mapper(mapping(), table, UTC).map(insert(row(), table))
    assert action.doc_id == "eu:7"


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        pytest.param(Column("k", Kind.INT), 2**64 - 1, "18446744073709551615", id="int"),
        pytest.param(Column("k", Kind.DECIMAL), Decimal("1.00E-8"), "0.0000000100", id="decimal"),
        pytest.param(Column("k", Kind.DATE), dt.date(2024, 2, 29), "2024-02-29", id="date"),
        pytest.param(
            Column("k", Kind.DATETIME), dt.datetime(2024, 7, 1, 12), "2024-07-01T12:00:00Z", id="dt"
        ),
        pytest.param(Column("k", Kind.TIME), dt.timedelta(hours=-5), "-05:00:00", id="time"),
        pytest.param(Column("k", Kind.STRING), "a:b 😀", "a:b 😀", id="string"),
        pytest.param(Column("k", Kind.ENUM), "small", "small", id="enum"),
        pytest.param(Column("k", Kind.SET), {"b", "a"}, "a,b", id="set"),
        pytest.param(Column("k", Kind.BIT), "101", "5", id="bit"),
        pytest.param(Column("k", Kind.YEAR), 2024, "2024", id="year"),
        pytest.param(
            Column("k", Kind.BINARY),
            bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0"),
            "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
            id="binary-uuid-hex",
        ),
    ],
)
def test_id_part_rendering(column: Column, value: Any, expected: str) -> None:
    table = TableSchema("s", "t", (column,), ("k",))
    mapper = Mapper(TableMapping(table="s.t", index="i", decimal="number"), table, UTC)
    [action] = mapper.map(RowChange(table, "insert", None, {"k": value}))
    assert action.doc_id == expected


def test_null_id_part_is_a_mapping_error() -> None:
    mapper = Mapper(mapping(id_columns=["region", "id"]), ORDERS, UTC)
    with pytest.raises(MappingError) as caught:
        mapper.map(insert(row(region=None)))
    assert caught.value.message == (
        "shop.orders_1: id column 'region' is NULL, so the row has no document id"
    )


def test_insert_update_delete_operations() -> None:
    mapper = Mapper(mapping(include=["id", "customer"]), ORDERS, UTC)
    assert mapper.map(insert(row())) == [index("7", {"id": 7, "customer": "Zoë"})]
    assert mapper.map(update(row(), row(customer="Ana"))) == [
        index("7", {"id": 7, "customer": "Ana"})
    ]
    assert mapper.map(delete(row())) == [remove("7")]


def test_primary_key_change_deletes_old_id_then_indexes_new() -> None:
    mapper = Mapper(mapping(include=["id"]), ORDERS, UTC)
    assert mapper.map(update(row(id=7), row(id=8))) == [remove("7"), index("8", {"id": 8})]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(insert(row(deleted=1)), [remove("7")], id="insert-already-deleted"),
        pytest.param(update(row(), row(deleted=1)), [remove("7")], id="update-to-deleted"),
        pytest.param(
            update(row(id=7), row(id=8, deleted=1)),
            [remove("7"), remove("8")],
            id="pk-change-and-deleted",
        ),
        pytest.param(
            update(row(deleted=1), row(deleted=0)), [index("7", {"id": 7})], id="undelete"
        ),
        pytest.param(delete(row(deleted=1)), [remove("7")], id="hard-delete"),
    ],
)
def test_soft_delete(change: RowChange, expected: list[Action]) -> None:
    rule = {"column": "deleted", "values": [1, 2]}
    mapper = Mapper(mapping(include=["id"], soft_delete=rule), ORDERS, UTC)
    assert mapper.map(change) == expected


def test_soft_delete_on_decimal_compares_numerically() -> None:
    rule = {"column": "total", "values": [0, "-1"]}
    mapper = Mapper(mapping(include=["id"], soft_delete=rule), ORDERS, UTC)
    assert mapper.map(insert(row(total=Decimal("-1.00")))) == [remove("7")]
    assert mapper.map(insert(row(total=Decimal("0.00")))) == [remove("7")]
    assert mapper.map(insert(row(total=Decimal("0.01")))) == [index("7", {"id": 7})]


def test_soft_delete_on_string_compares_converted_value() -> None:
    rule = {"column": "region", "values": ["gone"]}
    mapper = Mapper(mapping(include=["id"], soft_delete=rule), ORDERS, UTC)
    assert mapper.map(insert(row(region="gone"))) == [remove("7")]
    assert mapper.map(insert(row(region="eu"))) == [index("7", {"id": 7})]


def test_json_columns_parse_text_columns_into_objects() -> None:
    mapper = Mapper(mapping(include=["id", "attrs"], json_columns=["attrs"]), ORDERS, UTC)
    [action] = mapper.map(insert(row(attrs='{"gift": true, "n": [1]}')))
    assert action.source == {"id": 7, "attrs": {"gift": True, "n": [1]}}


def test_json_columns_parse_blob_columns() -> None:
    mapper = Mapper(mapping(include=["photo"], json_columns=["photo"]), ORDERS, UTC)
    [action] = mapper.map(insert(row(photo=b'{"w": 10}')))
    assert action.source == {"photo": {"w": 10}}


def test_decimal_number_serializes_exact_digits() -> None:
    digits = "9" * 35 + "." + "0123456789" * 3
    mapper = Mapper(mapping(include=["total"], decimal="number"), ORDERS, UTC)
    [action] = mapper.map(insert(row(total=Decimal(digits))))
    assert orjson.dumps(action.source) == f'{{"total":{digits}}}'.encode()


def test_binary_skip_leaves_field_out() -> None:
    mapper = Mapper(mapping(include=["id", "photo"], binary="skip"), ORDERS, UTC)
    assert mapper.map(insert(row())) == [index("7", {"id": 7})]
    assert mapper.map(insert(row(photo=None))) == [index("7", {"id": 7})]


def test_datetime_uses_configured_time_zone() -> None:
    table = TableSchema(
        "s", "t", (Column("id", Kind.INT), Column("at", Kind.DATETIME)), primary_key=("id",)
    )
    mapper = Mapper(TableMapping(table="s.t", index="i"), table, ZoneInfo("Europe/Berlin"))
    [action] = mapper.map(
        RowChange(table, "insert", None, {"id": 1, "at": dt.datetime(2024, 7, 1)})
    )
    assert action.source == {"id": 1, "at": "2024-07-01T00:00:00+02:00"}


def test_conversion_error_names_table_and_column() -> None:
    mapper = Mapper(mapping(json_columns=["attrs"]), ORDERS, UTC)
    with pytest.raises(MappingError) as caught:
        mapper.map(insert(row(attrs="{not json")))
    assert caught.value.message.startswith("shop.orders_1: column 'attrs': invalid JSON text")


def test_row_missing_a_column_is_a_mapping_error() -> None:
    incomplete = row()
    del incomplete["customer"]
    with pytest.raises(MappingError) as caught:
        Mapper(mapping(), ORDERS, UTC).map(insert(incomplete))
    assert caught.value.message == "shop.orders_1: row image lacks column 'customer'"


COLUMN_LIST = "id, region, customer, total, secret, deleted, photo, attrs"


@pytest.mark.parametrize(
    ("fields", "setting", "column"),
    [
        pytest.param({"id_columns": ["id", "regoin"]}, "id_columns", "regoin", id="id_columns"),
        pytest.param({"include": ["Customer"]}, "include", "Customer", id="include"),
        pytest.param({"exclude": ["password"]}, "exclude", "password", id="exclude"),
        pytest.param({"rename": {"cust": "c"}}, "rename", "cust", id="rename"),
        pytest.param(
            {"soft_delete": {"column": "is_deleted", "values": [1]}},
            "soft_delete.column",
            "is_deleted",
            id="soft_delete",
        ),
        pytest.param({"json_columns": ["meta"]}, "json_columns", "meta", id="json_columns"),
    ],
)
def test_unknown_column_error_message(fields: dict[str, Any], setting: str, column: str) -> None:
    with pytest.raises(MappingError) as caught:
        Mapper(mapping(**fields), ORDERS, UTC)
    assert caught.value.message == (
        f"mapping 'shop.orders_*' (table shop.orders_1): {setting} names unknown column "
        f"'{column}'; the table's columns are: {COLUMN_LIST}"
    )


def test_table_without_primary_key_needs_id_columns() -> None:
    table = TableSchema("shop", "orders_1", ORDERS.columns, primary_key=())
    with pytest.raises(MappingError) as caught:
        Mapper(mapping(), table, UTC)
    assert caught.value.message == (
        "mapping 'shop.orders_*' (table shop.orders_1): the table has no primary key, "
        "so documents would have no id"
    )
    assert caught.value.hint == (
        "set id_columns in the mapping to columns that identify a row uniquely"
    )
    [action] = Mapper(mapping(id_columns=["region", "id"]), table, UTC).map(insert(row(), table))
    assert action.doc_id == "eu:7"


def test_two_columns_renamed_to_one_field_is_an_error() -> None:
    with pytest.raises(MappingError) as caught:
        Mapper(mapping(rename={"customer": "region"}), ORDERS, UTC)
    assert caught.value.message == (
        "mapping 'shop.orders_*' (table shop.orders_1): columns 'region' and 'customer' "
        "would both become field 'region'"
    )


def test_static_field_colliding_with_a_column_is_an_error() -> None:
    with pytest.raises(MappingError) as caught:
        Mapper(mapping(static={"customer": "x"}), ORDERS, UTC)
    assert caught.value.message == (
        "mapping 'shop.orders_*' (table shop.orders_1): static field 'customer' collides "
        "with the field of column 'customer'"
    )


def test_json_id_column_is_an_error() -> None:
    with pytest.raises(MappingError) as caught:
        Mapper(mapping(id_columns=["attrs"], json_columns=["attrs"]), ORDERS, UTC)
    assert caught.value.message == (
        "mapping 'shop.orders_*' (table shop.orders_1): id column 'attrs' holds JSON, "
        "which cannot form a document id"
    )
