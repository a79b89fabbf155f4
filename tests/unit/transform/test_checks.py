"""Every way a mapping can get a table wrong, each reported at its field path with a fix (and,
for a typo, the closest name), and all of them at once."""

from __future__ import annotations

from typing import Any

import pytest

from cdc.config import TableMapping
from cdc.model.events import Column, Kind, TableSchema
from cdc.transform.checks import Problem, problems

ITEMS = TableSchema(
    "acc",
    "items",
    (
        Column("id", Kind.INT, is_primary=True),
        Column("name", Kind.STRING),
        Column("qty", Kind.INT),
        Column("price", Kind.DECIMAL),
        Column("tags", Kind.SET),
        Column("doc", Kind.JSON),
        Column("made", Kind.DATE),
    ),
    ("id",),
)
COLUMNS = "the table's columns are: id, name, qty, price, tags, doc, made"


def _problems(**mapping: Any) -> list[Problem]:
    return problems(TableMapping(table="acc.items", index="items", **mapping), ITEMS)


def test_a_mapping_that_fits_has_no_problem() -> None:
    assert (
        _problems(
            include=["id", "name", "qty"],
            rename={"name": "title"},
            soft_delete={"column": "qty", "values": [0, -1]},
            static={"kind": "item"},
        )
        == []
    )


@pytest.mark.parametrize(
    ("mapping", "loc", "setting", "bad", "near"),
    [
        ({"include": ["id", "nosuchcol"]}, ("include", 1), "include", "nosuchcol", None),
        ({"exclude": ["nmae"]}, ("exclude", 0), "exclude", "nmae", "name"),
        ({"rename": {"namee": "title"}}, ("rename", "namee"), "rename", "namee", "name"),
        ({"id_columns": ["idd"]}, ("id_columns", 0), "id_columns", "idd", "id"),
        (
            {"soft_delete": {"column": "qtty", "values": [0]}},
            ("soft_delete", "column"),
            "soft_delete.column",
            "qtty",
            "qty",
        ),
        ({"json_columns": ["docs"]}, ("json_columns", 0), "json_columns", "docs", "doc"),
    ],
)
def test_each_unknown_column_is_named_where_it_is_written_with_the_closest_one(
    mapping: dict[str, Any], loc: tuple[str | int, ...], setting: str, bad: str, near: str | None
) -> None:
    (problem,) = _problems(**mapping)

    assert problem.loc == loc
    assert problem.message == f"{setting} names unknown column {bad!r}; {COLUMNS}"
    assert problem.suggestion == near
    assert problem.hint == "correct the column name in the mapping (names are case-sensitive)"


def test_every_problem_is_reported_not_only_the_first() -> None:
    found = _problems(include=["id", "nosuchcol"], rename={"namee": "title"})

    assert [(p.loc, p.suggestion) for p in found] == [
        (("include", 1), None),
        (("rename", "namee"), "name"),
    ]


@pytest.mark.parametrize(
    ("mapping", "loc", "message"),
    [
        (
            {"rename": {"qty": "name"}},
            ("rename", "qty"),
            "columns 'name' and 'qty' would both become field 'name'",
        ),
        (
            {"static": {"qty": 1}},
            ("static", "qty"),
            "static field 'qty' collides with the field of column 'qty'",
        ),
        (
            {"id_columns": ["doc"]},
            ("id_columns", 0),
            "id column 'doc' holds JSON, which cannot form a document id",
        ),
        (
            {"json_columns": ["qty"]},
            ("json_columns", 0),
            "json_columns names column 'qty', which is an integer: only text columns can hold "
            "JSON text",
        ),
        (
            {"soft_delete": {"column": "qty", "values": ["0"]}},
            ("soft_delete", "values", 0),
            "soft_delete value '0' can never equal a value of column 'qty', which is an integer",
        ),
        (
            {"soft_delete": {"column": "tags", "values": ["a"]}},
            ("soft_delete", "values", 0),
            "soft_delete value 'a' can never equal a value of column 'tags', which is a SET column",
        ),
        (
            {"soft_delete": {"column": "made", "values": [20240101]}},
            ("soft_delete", "values", 0),
            "soft_delete value 20240101 can never equal a value of column 'made', which is a DATE "
            "column",
        ),
        (
            {"soft_delete": {"column": "price", "values": [True]}},
            ("soft_delete", "values", 0),
            "soft_delete value True can never equal a value of column 'price', which is a DECIMAL "
            "column",
        ),
    ],
)
def test_options_that_do_not_fit_their_column(
    mapping: dict[str, Any], loc: tuple[str | int, ...], message: str
) -> None:
    (problem,) = _problems(**mapping)

    assert (problem.loc, problem.message) == (loc, message)
    assert problem.hint


def test_values_of_the_column_s_type_fit() -> None:
    assert _problems(soft_delete={"column": "price", "values": [1, "2.50", 0.5]}) == []
    assert _problems(soft_delete={"column": "tags", "values": [["a", "b"], None]}) == []
    assert _problems(soft_delete={"column": "made", "values": ["2024-01-01"]}) == []


def test_a_table_without_a_primary_key_needs_id_columns() -> None:
    keyless = TableSchema("acc", "log", ITEMS.columns, ())

    (problem,) = problems(TableMapping(table="acc.log", index="log"), keyless)

    assert problem.message == "the table has no primary key, so documents would have no id"
    assert problems(TableMapping(table="acc.log", index="log", id_columns=["id"]), keyless) == []
