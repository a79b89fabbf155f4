"""The compiled row decoder (`cdc.source._rownative`) against the Python one, on random bytes.

The generated Python decoder of `cdc.source.rowdecode` is proven equal to the library by
`test_rowdecode.py`; here it is the oracle for the C decoder. Each example draws a table map of
random column types and metadata (every compiled type, several charsets, every fractional
precision, NULLs) with row images, then decodes the bytes with both decoders, also after
cutting them short, overwriting some of them with garbage, or starting and ending inside the
body. The results must be the same values of the same types in the same key order, or the same
exception type.

Without the extension these tests skip, saying so; in CI (`CI=true`), where scripts/setup.sh
installs a compiler, a missing extension fails them instead.
"""

from __future__ import annotations

import logging
import os
import sys
import types
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymysqlreplication.column import Column
from pymysqlreplication.constants import BINLOG, FIELD_TYPE
from rowimages import (
    column_and_values,
    library_event,
    library_images,
    make_column,
    outcome,
    same,
    table_and_event,
)

from cdc import native as native_path
from cdc.config import TableMapping
from cdc.model.events import Column as Column_
from cdc.model.events import Kind, RowChange, TableSchema
from cdc.source import rowdecode, rownative
from cdc.transform.mapping import Mapper

if native_path.rownative is None:
    if os.environ.get("CI") == "true":
        pytest.fail("cdc.source._rownative was not built (is a C compiler installed?)")
    pytest.skip(
        "the compiled row path (cdc.source._rownative) was not built here: no C compiler "
        "when the package was installed",
        allow_module_level=True,
    )

EXAMPLES = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decoders(columns: list[Column]) -> tuple[Any, Any]:
    python = rowdecode.compile_table(columns)
    assert python is not None
    native = rownative.compile_native(columns, python)
    assert native is not None, "every column type compiled in Python is compiled in C"
    return python, native


def assert_same_outcome(python: Any, native: Any, body: bytes, start: int, end: int) -> None:
    expected = outcome(lambda: python(body, start, end))
    actual = outcome(lambda: native(body, start, end))
    assert expected[0] == actual[0], (expected, actual)
    if expected[0] == "raised":
        assert expected[1] is actual[1], (expected, actual)
    else:
        assert same(expected[1], actual[1]), (expected[1], actual[1])


@EXAMPLES
@given(table_and_event())
def test_compiled_decoder_equals_the_python_one_on_random_rows(
    case: tuple[int, list[Column], bytes],
) -> None:
    _, columns, body = case
    python, native = decoders(columns)
    assert_same_outcome(python, native, body, 0, len(body))


@EXAMPLES
@given(table_and_event())
def test_compiled_decoder_equals_the_library_through_a_rows_event(
    case: tuple[int, list[Column], bytes],
) -> None:
    event_type, columns, body = case
    _, native = decoders(columns)
    expected = outcome(lambda: library_images(library_event(event_type, columns, body)))
    actual = outcome(lambda: rowdecode.event_body(library_event(event_type, columns, body), native))
    assert expected[0] == actual[0], (expected, actual)
    if expected[0] == "raised":
        assert expected[1] is actual[1]
    else:
        assert same(expected[1], actual[1]), (expected[1], actual[1])


@EXAMPLES
@given(table_and_event(), st.data())
def test_damaged_bytes_decode_or_fail_alike(
    case: tuple[int, list[Column], bytes], data: st.DataObject
) -> None:
    _, columns, body = case
    python, native = decoders(columns)
    damage = data.draw(st.sampled_from(["cut", "overwrite", "append", "window"]))
    start, end = 0, len(body)
    if damage == "cut":
        body = body[: data.draw(st.integers(0, len(body)))]
        end = len(body) if data.draw(st.booleans()) else end
    elif damage == "overwrite":
        at = data.draw(st.integers(0, len(body)))
        garbage = data.draw(st.binary(min_size=1, max_size=8))
        body = body[:at] + garbage + body[at + len(garbage) :]
    elif damage == "append":
        body += data.draw(st.binary(min_size=1, max_size=12))
        end = len(body)
    else:
        start = data.draw(st.integers(0, len(body)))
        end = data.draw(st.integers(start, len(body) + 4))
    assert_same_outcome(python, native, body, start, end)


@EXAMPLES
@given(st.data())
def test_arbitrary_bytes_decode_or_fail_alike(data: st.DataObject) -> None:
    count = data.draw(st.integers(1, 6))
    columns = [data.draw(column_and_values(f"c{i}"))[0] for i in range(count)]
    body = data.draw(st.binary(max_size=200))
    python, native = decoders(columns)
    assert_same_outcome(python, native, body, 0, len(body))


EDGES: list[tuple[Column, bytes]] = [
    (make_column(FIELD_TYPE.LONGLONG, "u", unsigned=True), b"\xff" * 8),
    (make_column(FIELD_TYPE.LONGLONG, "s"), b"\x00" * 7 + b"\x80"),
    (make_column(FIELD_TYPE.LONG, "i"), b"\x00\x00\x00\x80"),
    (make_column(FIELD_TYPE.LONG, "ui", unsigned=True), b"\xff" * 4),
    (make_column(FIELD_TYPE.SHORT, "h"), b"\x00\x80"),
    (make_column(FIELD_TYPE.TINY, "b"), b"\x80"),
    (make_column(FIELD_TYPE.INT24, "m"), b"\x00\x00\x80"),
    (make_column(FIELD_TYPE.INT24, "um", unsigned=True), b"\xff\xff\xff"),
    (make_column(FIELD_TYPE.FLOAT, "nan", size=4), b"\x00\x00\xc0\x7f"),
    (make_column(FIELD_TYPE.DOUBLE, "inf", size=8), b"\x00" * 6 + b"\xf0\x7f"),
    (make_column(FIELD_TYPE.NEWDECIMAL, "d", precision=65, decimals=30), b"\x80" + bytes(29)),
    (make_column(FIELD_TYPE.NEWDECIMAL, "n", precision=10, decimals=2), b"\x7f" + b"\xff" * 4),
    (make_column(FIELD_TYPE.NEWDECIMAL, "g", precision=10, decimals=0), b"\xff" * 5),
    (make_column(FIELD_TYPE.NEWDECIMAL, "s0", precision=1, decimals=1), b"\x89"),
    (make_column(FIELD_TYPE.DATETIME2, "z", fsp=6), bytes([0x80, 0, 0, 0, 0, 0, 0, 0])),
    (make_column(FIELD_TYPE.DATETIME2, "max", fsp=6), b"\xfe\xf3\xdf\x7e\xfb\x0f\x42\x3f"),
    (make_column(FIELD_TYPE.DATETIME2, "over", fsp=6), b"\x99\x9e\x20\x00\x00\x7f\xff\xff"),
    (make_column(FIELD_TYPE.DATETIME2, "neg", fsp=2), b"\x99\x9e\x20\x00\x00\xff"),
    (make_column(FIELD_TYPE.TIME2, "t", fsp=3), bytes([0x7F, 0xFF, 0xFF, 0xFF, 0xFF])),
    (make_column(FIELD_TYPE.TIME2, "tmax", fsp=0), b"\xb4\x6e\xfb"),
    (make_column(FIELD_TYPE.TIME2, "tmin", fsp=5), b"\x4b\x91\x05\xff\xff\xff"),
    (make_column(FIELD_TYPE.TIMESTAMP2, "e", fsp=0), bytes(4)),
    (make_column(FIELD_TYPE.TIMESTAMP2, "early", fsp=1), b"\x80\x00\x00\x00\x80"),
    (make_column(FIELD_TYPE.TIMESTAMP2, "late", fsp=4), b"\x7f\xff\xff\xff\x27\x0f"),
    (make_column(FIELD_TYPE.DATE, "zero"), bytes(3)),
    (make_column(FIELD_TYPE.DATE, "feb30"), (2024 << 9 | 2 << 5 | 30).to_bytes(3, "little")),
    (make_column(FIELD_TYPE.YEAR, "y"), bytes(1)),
    (make_column(FIELD_TYPE.BIT, "b1", bits=1, bytes=1), b"\xff"),
    (make_column(FIELD_TYPE.BIT, "b12", bits=12, bytes=2), b"\xff\xff"),
    (make_column(FIELD_TYPE.BIT, "b64", bits=64, bytes=8), b"\xff" * 8),
    (make_column(FIELD_TYPE.ENUM, "e", size=1, enum_values=["", "a"]), b"\x05"),
    (make_column(FIELD_TYPE.ENUM, "none", size=2, enum_values=None), b"\x01\x00"),
    (make_column(FIELD_TYPE.SET, "s", size=8, set_values=["a", "b"]), b"\xff" * 8),
    (make_column(FIELD_TYPE.SET, "empty", size=1, set_values=["a", "b"]), b"\x00"),
    (
        make_column(FIELD_TYPE.VARCHAR, "bad", max_length=10, character_set_name="utf8mb4"),
        b"\x02\xc3\x28",
    ),
    (
        make_column(FIELD_TYPE.VARCHAR, "cp", max_length=300, character_set_name="cp1251"),
        b"\x03\x00\xc0\xc1\x98",
    ),
    (make_column(FIELD_TYPE.STRING, "swe", max_length=5, character_set_name="swe7"), b"\x00"),
    (make_column(FIELD_TYPE.STRING, "swe2", max_length=5, character_set_name="swe7"), b"\x01a"),
    (make_column(FIELD_TYPE.JSON, "j", length_size=4), b"\x00\x00\x00\x00"),
    (make_column(FIELD_TYPE.JSON, "junk", length_size=1), b"\x02\x99\x00"),
    (make_column(FIELD_TYPE.BLOB, "big", length_size=4), b"\xff\xff\xff\xff"),
]


@pytest.mark.parametrize(("column", "value"), EDGES, ids=[c.name for c, _ in EDGES])
def test_edge_values_decode_as_the_python_decoder_does(column: Column, value: bytes) -> None:
    columns = [column, make_column(FIELD_TYPE.LONG, "after")]
    python, native = decoders(columns)
    for nulls in (b"\x00", b"\x02", b"\x01", b"\x03"):
        body = nulls + (b"" if nulls[0] & 1 else value) + (b"" if nulls[0] & 2 else bytes(4))
        assert_same_outcome(python, native, body, 0, len(body))


def test_duplicate_and_missing_column_names_keep_the_python_key_order() -> None:
    columns = [
        make_column(FIELD_TYPE.TINY, "a"),
        make_column(FIELD_TYPE.TINY, ""),
        make_column(FIELD_TYPE.TINY, "a"),
    ]
    python, native = decoders(columns)
    body = b"\x00\x01\x02\x03"
    assert same(python(body, 0, len(body)), native(body, 0, len(body)))
    assert list(native(body, 0, len(body))[0]) == ["a", "UNKNOWN_COL1"]


def test_shapes_the_c_decoder_does_not_read_are_left_to_python() -> None:
    wide_bits = make_column(FIELD_TYPE.BIT, "b", bits=70, bytes=9)
    python = rowdecode.compile_table([wide_bits])
    assert python is not None
    assert rownative.compile_native([wide_bits], python) is None
    assert type(rownative.decoder_for([wide_bits])).__name__ == "function"
    assert rownative.decoder_for([make_column(FIELD_TYPE.DATETIME, "legacy")]) is None


def test_cdc_native_0_uses_the_python_decoder_and_says_so_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    columns = [make_column(FIELD_TYPE.LONG, "id")]
    assert type(rownative.decoder_for(columns)).__name__ == "Decoder"
    monkeypatch.setenv("CDC_NATIVE", "0")
    monkeypatch.setattr(native_path, "_announced", False)
    with caplog.at_level(logging.INFO, logger="cdc.native"):
        first = rownative.decoder_for(columns)
        rownative.decoder_for(columns)
    assert type(first).__name__ == "function"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "Python" in lines[0], lines
    assert first is not None and first(b"\x00\x07\x00\x00\x00", 0, 5) == [{"id": 7}]


def test_missing_extensions_fall_back_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(native_path, "rownative", None)
    monkeypatch.setattr(native_path, "docnative", None)
    monkeypatch.setattr(native_path, "_announced", False)
    columns = [make_column(FIELD_TYPE.LONG, "id")]
    table = TableSchema(
        schema="db",
        table="t",
        columns=(Column_("id", Kind.INT, is_primary=True),),
        primary_key=("id",),
    )
    with caplog.at_level(logging.INFO, logger="cdc.native"):
        decoder = rownative.decoder_for(columns)
        rownative.decoder_for(columns)
        mapper = Mapper(TableMapping(table="db.t", index="i"), table, ZoneInfo("UTC"), encoded=True)
    assert decoder is not None and decoder(b"\x00\x07\x00\x00\x00", 0, 5) == [{"id": 7}]
    (action,) = mapper.map(RowChange(table, "insert", None, {"id": 7}))
    assert action.body is None and action.source == {"id": 7}
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "compiled row path is not available" in caplog.records[0].getMessage()


def test_update_events_decode_both_images() -> None:
    columns = [make_column(FIELD_TYPE.LONG, "id"), make_column(FIELD_TYPE.YEAR, "y")]
    body = b"\x00\x01\x00\x00\x00\x7b" + b"\x02\x01\x00\x00\x00"
    event = library_event(BINLOG.UPDATE_ROWS_EVENT_V1, columns, body)
    _, native = decoders(columns)
    assert rowdecode.event_body(event, native) == [{"id": 1, "y": 2023}, {"id": 1, "y": None}]


def test_an_extension_built_from_other_sources_is_not_used(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    old = types.ModuleType("cdc.source._rownative_old")
    old.PLAN_VERSION = native_path.PLAN_VERSION - 1  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cdc.source._rownative_old", old)
    monkeypatch.setattr(native_path, "stale", [])
    monkeypatch.setattr(native_path, "_announced", False)
    assert native_path._load("cdc.source._rownative_old") is None
    with caplog.at_level(logging.INFO, logger="cdc.native"):
        native_path.enabled()
    assert "built from other sources" in caplog.records[0].getMessage()
