"""The compiled document encoder (`cdc.transform._docnative`) against the Python mapping path.

Each example draws a table (an id column and columns of random kinds), mapping options (include
or exclude, renames, decimal and binary modes, JSON text columns, static fields, the time zone
of DATETIME values) and row images holding the values the decoders produce plus garbage (ints
past 64 bits, text with control characters or lone surrogates, text that arrived as bytes,
invalid JSON, missing columns). The same row change is mapped by a mapper that builds
documents in Python and by one that encodes them in C; the bulk lines sent must be the same
bytes, or both must raise the same error with the same message.

Without the extension these tests skip, saying so; in CI (`CI=true`) they fail instead.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdc import native
from cdc.config import TableMapping
from cdc.errors import MappingError
from cdc.model.events import Column, Kind, RowChange, TableSchema
from cdc.sink.bulk import encode
from cdc.transform.mapping import Mapper

if native.docnative is None:
    if os.environ.get("CI") == "true":
        pytest.fail("cdc.transform._docnative was not built (is a C compiler installed?)")
    pytest.skip(
        "the compiled document encoder (cdc.transform._docnative) was not built here: no C "
        "compiler when the package was installed",
        allow_module_level=True,
    )

EPOCH = dt.datetime(1970, 1, 1)
CONTROL = "".join(chr(i) for i in range(32))
texts = st.text(max_size=12) | st.sampled_from(
    ["", CONTROL, '"\\/\x7f', "é😀\u2028", "\ud800", "a\tb\nc"]
)
naive = st.datetimes(
    min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31)
) | st.builds(
    dt.datetime,
    st.sampled_from([1, 999, 1970, 2024, 9999]),
    st.integers(1, 12),
    st.integers(1, 28),
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 59),
    st.sampled_from([0, 1, 10, 999999]),
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**19), 10**19)
    | st.floats(allow_nan=False)
    | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def json_text(draw: st.DrawFn) -> str:
    """JSON text as servers and applications write it: any separators and indentation, ASCII
    escapes or not, plus the cases orjson reads differently from the text (repeated keys, -0,
    deep nesting) and text that is not JSON."""
    value = draw(json_values)
    separators = draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,\n", " :\t")]))
    indent = draw(st.sampled_from([None, 2]))
    text = json.dumps(value, separators=separators, indent=indent, ensure_ascii=draw(st.booleans()))
    special = draw(
        st.sampled_from(
            [
                text,
                text,
                text,
                '{"a": 1, "a": 2}',
                " -0 ",
                "[01]",
                "[1,]",
                "[" * 70 + "]" * 70,
                text + " x",
                "\ufeff[1]",
                "",
                "{bad",
                '"a\x01b"',
            ]
        )
    )
    return special


VALUES: dict[Kind, st.SearchStrategy[Any]] = {
    Kind.INT: st.integers(-(2**63), 2**64 - 1) | st.sampled_from([2**64, -(2**63) - 1, True]),
    Kind.FLOAT: st.floats(allow_nan=True, allow_infinity=True),
    Kind.DECIMAL: st.decimals(allow_nan=False, places=3)
    | st.decimals(allow_nan=True)
    | st.sampled_from([Decimal("-0.00"), Decimal("1E+2"), Decimal("1E-7"), Decimal("0E-30")]),
    Kind.DATE: st.dates(),
    Kind.DATETIME: naive | st.just(dt.datetime(2024, 3, 31, 2, 30)),
    Kind.TIMESTAMP: naive | st.just(EPOCH) | st.just(dt.datetime(2024, 1, 1, tzinfo=dt.UTC)),
    Kind.TIME: st.timedeltas(min_value=dt.timedelta(hours=-838), max_value=dt.timedelta(hours=838)),
    Kind.YEAR: st.integers(1900, 2155),
    Kind.STRING: texts | st.binary(max_size=4) | json_text(),
    Kind.ENUM: texts,
    Kind.SET: st.sets(st.sampled_from(["a", "b", "c"]), min_size=1) | st.just(None),
    Kind.BIT: st.text("01", min_size=1, max_size=70) | st.integers(0, 2**64 - 1) | st.binary(),
    Kind.JSON: json_text() | st.just({b"k": [b"v", 1]}),
    Kind.BINARY: st.binary(max_size=8) | st.text(max_size=4),
    Kind.GEOMETRY: st.binary(max_size=8),
}
statics = st.dictionaries(
    st.sampled_from(["source", "c1", "tenant", "f_c2"]),
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | texts.filter(lambda t: "\ud800" not in t)
    | st.lists(st.integers(0, 3), max_size=2),
    max_size=2,
)


@st.composite
def cases(draw: st.DrawFn) -> tuple[Mapper, Mapper, RowChange]:
    kinds = draw(st.lists(st.sampled_from(list(VALUES)), min_size=1, max_size=8))
    columns = [Column("id", Kind.INT, is_primary=True)] + [
        Column(f"c{i}", kind, unsigned=draw(st.booleans())) for i, kind in enumerate(kinds)
    ]
    names = [c.name for c in columns]
    options: dict[str, Any] = {"table": "db.t", "index": "docs"}
    chosen = draw(st.lists(st.sampled_from(names), unique=True))
    include: bool = draw(st.booleans())
    if chosen and include:
        options["include"] = chosen
    elif chosen:
        options["exclude"] = chosen
    renamed = draw(st.lists(st.sampled_from(names), unique=True, max_size=3))
    options["rename"] = {name: f"f_{name}" for name in renamed}
    options["decimal"] = draw(st.sampled_from(["string", "number"]))
    options["binary"] = draw(st.sampled_from(["base64", "skip"]))
    textual = [c.name for c in columns if c.kind in (Kind.STRING, Kind.BINARY)]
    options["json_columns"] = (
        draw(st.lists(st.sampled_from(textual), unique=True)) if textual else []
    )
    options["static"] = draw(statics)
    zone = ZoneInfo(draw(st.sampled_from(["UTC", "Etc/UTC", "Europe/Berlin", "Asia/Kolkata"])))
    table = TableSchema(schema="db", table="t", columns=tuple(columns), primary_key=("id",))
    try:
        python = Mapper(TableMapping(**options), table, zone)
        compiled = Mapper(TableMapping(**options), table, zone, encoded=True)
    except MappingError:
        python = compiled = Mapper(TableMapping(table="db.t", index="docs"), table, zone)
    row: dict[str, Any] = {"id": draw(st.integers(0, 10**6))}
    for column in columns[1:]:
        if draw(st.integers(0, 30)) == 0:
            continue  # a row image that lacks a column
        row[column.name] = None if draw(st.integers(0, 5)) == 0 else draw(VALUES[column.kind])
    return python, compiled, RowChange(table, "insert", None, row, 10)


def sent(mapper: Mapper, change: RowChange) -> tuple[str, Any]:
    try:
        return "ok", [encode(action, 42) for action in mapper.map(change)]
    except Exception as exc:
        return "raised", (type(exc), str(exc))


@settings(max_examples=700, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_compiled_documents_are_the_bytes_of_the_python_ones(
    case: tuple[Mapper, Mapper, RowChange],
) -> None:
    python, compiled, change = case
    assert sent(compiled, change) == sent(python, change)


def test_the_streaming_mapper_encodes_the_common_shape_and_reads_it_back() -> None:
    table = TableSchema(
        schema="db",
        table="t",
        columns=(
            Column("id", Kind.INT, is_primary=True),
            Column("at", Kind.DATETIME),
            Column("bits", Kind.BIT),
            Column("name", Kind.STRING),
        ),
        primary_key=("id",),
    )
    mapping = TableMapping(table="db.t", index="docs", rename={"name": "title"}, static={"s": 1})
    mapper = Mapper(mapping, table, ZoneInfo("UTC"), encoded=True)
    row = {"id": 7, "at": dt.datetime(999, 1, 2, 3, 4, 5, 6), "bits": "101", "name": 'a"b'}
    (action,) = mapper.map(RowChange(table, "insert", None, row))
    assert action.source is None
    assert (
        action.body == b'{"id":7,"at":"0999-01-02T03:04:05.000006Z","bits":5,"title":"a\\"b","s":1}'
    )
    assert action.document() == {
        "id": 7,
        "at": "0999-01-02T03:04:05.000006Z",
        "bits": 5,
        "title": 'a"b',
        "s": 1,
    }
    assert encode(action, 3).endswith(action.body + b"\n")


def test_computed_fields_and_hooks_keep_the_python_builder() -> None:
    table = TableSchema(
        schema="db",
        table="t",
        columns=(Column("id", Kind.INT, is_primary=True), Column("a", Kind.STRING)),
        primary_key=("id",),
    )
    mapping = TableMapping(table="db.t", index="docs", computed={"both": {"constant": "x"}})
    mapper = Mapper(mapping, table, ZoneInfo("UTC"), encoded=True)
    (action,) = mapper.map(RowChange(table, "insert", None, {"id": 1, "a": "x"}))
    assert action.body is None and action.source == {"id": 1, "a": "x", "both": "x"}


def test_cdc_native_0_builds_documents_in_python(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDC_NATIVE", "0")
    table = TableSchema(
        schema="db",
        table="t",
        columns=(Column("id", Kind.INT, is_primary=True),),
        primary_key=("id",),
    )
    mapper = Mapper(TableMapping(table="db.t", index="docs"), table, ZoneInfo("UTC"), encoded=True)
    (action,) = mapper.map(RowChange(table, "insert", None, {"id": 1}))
    assert action.body is None and action.source == {"id": 1}
    assert orjson.dumps(action.source) == b'{"id":1}'
