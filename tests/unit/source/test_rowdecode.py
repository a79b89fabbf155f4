"""The compiled row decoder against python-mysql-replication, on random bytes.

Each example builds a real rows event (a table map of random column types and metadata, and
random row images, NULLs included) and decodes it twice: with the library's own `event.rows`
and with `cdc.source.rowdecode`. They must agree on every value, its type, the key order, and on
failure (the same exception type). Values the server really writes are covered by
`tests/integration/source/test_rowdecode_mariadb.py`; here the bytes are arbitrary, so the edge and
garbage cases (invalid dates, out-of-range digits, undecodable text) are compared as well.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from pymysqlreplication.column import Column
from pymysqlreplication.constants import BINLOG, FIELD_TYPE
from rowimages import (
    library_event,
    library_images,
    make_column,
    outcome,
    same,
    table_and_event,
)

from cdc.source import rowdecode


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table_and_event())
def test_compiled_decoder_equals_the_library_on_random_rows(
    case: tuple[int, list[Column], bytes],
) -> None:
    event_type, columns, body = case
    decoder = rowdecode.compile_table(columns)
    assert decoder is not None
    expected = outcome(lambda: library_images(library_event(event_type, columns, body)))
    actual = outcome(
        lambda: rowdecode.event_body(library_event(event_type, columns, body), decoder)
    )
    assert expected[0] == actual[0], (expected, actual)
    if expected[0] == "raised":
        assert expected[1] is actual[1]
    else:
        assert same(expected[1], actual[1]), (expected[1], actual[1])


def test_edge_values_of_each_fixed_type_decode_as_the_library_does() -> None:
    cases: list[tuple[Column, bytes]] = [
        (make_column(FIELD_TYPE.LONGLONG, "u", unsigned=True), b"\xff" * 8),
        (make_column(FIELD_TYPE.LONGLONG, "s"), b"\x00" * 7 + b"\x80"),
        (make_column(FIELD_TYPE.INT24, "m"), b"\x00\x00\x80"),
        (
            make_column(FIELD_TYPE.NEWDECIMAL, "d", precision=65, decimals=30),
            bytes([0x80]) + bytes(29),
        ),
        (
            make_column(FIELD_TYPE.NEWDECIMAL, "n", precision=10, decimals=2),
            bytes([0x7F]) + b"\xff" * 4,
        ),
        (make_column(FIELD_TYPE.DATETIME2, "z", fsp=6), bytes([0x80, 0, 0, 0, 0, 0, 0, 0])),
        (make_column(FIELD_TYPE.TIME2, "t", fsp=3), bytes([0x7F, 0xFF, 0xFF, 0xFF, 0xFF])),
        (make_column(FIELD_TYPE.TIMESTAMP2, "e", fsp=0), bytes(4)),
        (make_column(FIELD_TYPE.DATE, "zero"), bytes(3)),
        (make_column(FIELD_TYPE.YEAR, "y"), bytes(1)),
        (make_column(FIELD_TYPE.BIT, "b", bits=12, bytes=2), b"\xff\xff"),
    ]
    for column, value in cases:
        columns = [column]
        body = b"\x00" + value
        expected = library_images(library_event(BINLOG.WRITE_ROWS_EVENT_V1, columns, body))
        decoder = rowdecode.compile_table(columns)
        assert decoder is not None
        event = library_event(BINLOG.WRITE_ROWS_EVENT_V1, columns, body)
        actual = rowdecode.event_body(event, decoder)
        assert same(expected, actual), (column.name, expected, actual)


def test_types_it_does_not_compile_are_left_to_the_library() -> None:
    old_datetime = make_column(FIELD_TYPE.DATETIME, "legacy")
    assert rowdecode.compile_table([make_column(FIELD_TYPE.LONG, "id"), old_datetime]) is None


def test_a_minimal_row_image_is_left_to_the_library() -> None:
    columns = [make_column(FIELD_TYPE.LONG, "a"), make_column(FIELD_TYPE.LONG, "b")]
    event = library_event(BINLOG.WRITE_ROWS_EVENT_V1, columns, b"\x00" + bytes(8))
    event.columns_present_bitmap = b"\x01"
    decoder = rowdecode.compile_table(columns)
    assert decoder is not None
    assert rowdecode.event_body(event, decoder) is None
    assert event.packet.read_bytes < event.event_size  # untouched: the library still reads it
