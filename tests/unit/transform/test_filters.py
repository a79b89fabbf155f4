"""Row filters: parsing, SQL's three-valued logic on row images, rows entering and leaving the
filter, and the SQL the snapshot reads with."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cdc.config import TableMapping
from cdc.config.expressions import FilterError, parse
from cdc.model.events import Column, Kind, RowChange, TableSchema
from cdc.transform.checks import problems
from cdc.transform.filters import RowFilter
from cdc.transform.mapping import Mapper

ITEMS = TableSchema(
    "shop",
    "items",
    (
        Column("id", Kind.INT, is_primary=True),
        Column("qty", Kind.INT),
        Column("price", Kind.DECIMAL),
        Column("e", Kind.ENUM),
        Column("name", Kind.STRING),
        Column("seen", Kind.DATETIME),
        Column("born", Kind.DATE),
        Column("attrs", Kind.JSON),
    ),
    ("id",),
)


def _row(**values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {c.name: None for c in ITEMS.columns}
    return {**row, "id": 1, **values}


@pytest.mark.parametrize(
    ("text", "row", "expected"),
    [
        ("qty > 0 and e in ('a', 'b')", _row(qty=1, e="a"), True),
        ("qty > 0 and e in ('a', 'b')", _row(qty=1, e="c"), False),
        ("qty > 0 and e in ('a', 'b')", _row(qty=0, e="a"), False),
        ("qty > 0", _row(qty=None), False),  # unknown is not true
        ("not (qty > 0)", _row(qty=None), False),  # not unknown is still unknown
        ("qty > 0 or e = 'a'", _row(qty=None, e="a"), True),
        ("qty is null", _row(qty=None), True),
        ("qty is not null", _row(qty=None), False),
        ("e not in ('a', null)", _row(e="b"), False),  # NOT IN with a NULL is never true
        ("e in ('a', null)", _row(e="a"), True),
        ("price >= 10.5", _row(price=Decimal("10.50")), True),
        ("price < 10.5", _row(price=Decimal("10.49")), True),
        ("5 < qty", _row(qty=6), True),
        ("name = 'Ann'", _row(name="ann"), False),  # exact, not by collation
        ("name <> 'x'", _row(name="y"), True),
        ("seen >= '2024-01-01 00:00:00'", _row(seen=dt.datetime(2024, 1, 1)), True),
        ("seen < '2024-01-01'", _row(seen=dt.datetime(2023, 12, 31, 23, 59)), True),
        ("born = '2024-02-29'", _row(born=dt.date(2024, 2, 29)), True),
        ("attrs is not null and qty = true", _row(attrs={"a": 1}, qty=1), True),
        ("`qty` = 1 AND NOT e = 'a'", _row(qty=1, e="b"), True),
    ],
)
def test_rows_match_as_sql_would_select_them(
    text: str, row: dict[str, Any], expected: bool
) -> None:
    assert RowFilter(text, ITEMS).matches(row) is expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("qty >", "ends where a column or a value was expected"),
        ("qty > 0 and", "ends where a column or a value was expected"),
        ("qty 5", "expected a comparison, `in` or `is null` after column 'qty'"),
        ("(qty > 0", "expected ')'"),
        ("qty > 0 #", "unexpected '#'"),
        ("qty in (other)", "`in (...)` takes values, not column 'other'"),
    ],
)
def test_malformed_expressions_say_where(text: str, message: str) -> None:
    with pytest.raises(FilterError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("qtty > 0", "names unknown column 'qtty'"),
        ("qty > 'many'", "compares number column 'qty' with text 'many'"),
        ("name = 5", "compares text column 'name' with 5; quote it"),
        ("seen > 2024", "write dates and times as quoted text"),
        ("born = '2024-13-01'", "is not a value of column 'born'"),
        ("attrs = 'x'", "can only be tested with `is null`"),
        ("1 = 1", "one side must be a column"),
    ],
)
def test_expressions_that_do_not_fit_the_table_are_refused(text: str, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        RowFilter(text, ITEMS)


def test_the_snapshot_reads_with_sql_of_the_same_meaning() -> None:
    where = RowFilter(
        "qty > 0 and (e in ('a', 'b') or name is null) and seen >= '2024-01-01'", ITEMS
    )

    sql, params = where.sql(lambda name: f"`{name}`")

    assert sql == (
        "(`qty` > %s) AND ((BINARY `e` IN (%s, %s)) OR (`name` IS NULL)) AND (`seen` >= %s)"
    )
    assert params == [Decimal(0), "a", "b", dt.datetime(2024, 1, 1)]


def _mapper(where: str) -> Mapper:
    mapping = TableMapping(table="shop.items", index="items", include=["id", "qty"], where=where)
    return Mapper(mapping, ITEMS, ZoneInfo("UTC"))


def _ops(mapper: Mapper, op: str, before: Any, after: Any) -> list[tuple[str, str]]:
    return [(a.op, a.doc_id) for a in mapper.map(RowChange(ITEMS, op, before, after))]  # type: ignore[arg-type]


def test_rows_entering_and_leaving_the_filter() -> None:
    mapper = _mapper("qty > 0")
    inside, outside = _row(qty=5), _row(qty=0)

    assert _ops(mapper, "insert", None, inside) == [("index", "1")]
    assert _ops(mapper, "insert", None, outside) == []  # nothing to write
    assert _ops(mapper, "update", outside, inside) == [("index", "1")]  # enters
    assert _ops(mapper, "update", inside, outside) == [("delete", "1")]  # leaves
    assert _ops(mapper, "update", outside, {**outside, "qty": -1}) == []
    assert _ops(mapper, "delete", inside, None) == [("delete", "1")]
    assert _ops(mapper, "delete", outside, None) == []
    # A key change while inside moves the document; entering with a new key only indexes.
    assert _ops(mapper, "update", inside, {**inside, "id": 2}) == [("delete", "1"), ("index", "2")]
    assert _ops(mapper, "update", outside, {**inside, "id": 2}) == [("index", "2")]
    assert _ops(mapper, "update", inside, {**outside, "id": 2}) == [("delete", "1")]
    # A row read now (snapshot, replay, verify) outside the filter has no document.
    assert [(a.op, a.doc_id) for a in mapper.map_row(outside)] == [("delete", "1")]


def test_a_where_that_does_not_parse_is_a_config_error_at_its_field() -> None:
    with pytest.raises(ValueError, match="where"):
        TableMapping(table="shop.items", index="items", where="qty >")


def test_cdc_check_and_cdc_run_name_a_where_that_does_not_fit_the_table() -> None:
    mapping = TableMapping(table="shop.items", index="items", where="qtty > 0")

    (problem,) = problems(mapping, ITEMS)

    assert problem.loc == ("where",)
    assert problem.message.startswith("where names unknown column 'qtty'")
