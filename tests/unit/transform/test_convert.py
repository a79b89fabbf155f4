"""Every conversion rule of cdc.transform.convert, one case each, checked through orjson
serialization.

Inputs have the shapes python-mysql-replication 1.0.17 decodes (see cdc/events.py); the zero
YEAR (1900), zero TIMESTAMP (the epoch), negative fractional TIME and small DECIMAL shapes were
checked against MariaDB 10.11.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from cdc.errors import MappingError
from cdc.model.events import Column, Kind
from cdc.transform.convert import (
    OMIT,
    ConvertOptions,
    converter_for,
    json_text_converter,
    to_json_value,
)

UTC = ConvertOptions(time_zone=ZoneInfo("UTC"))
BERLIN = ConvertOptions(time_zone=ZoneInfo("Europe/Berlin"))
NUMBER = ConvertOptions(decimal="number")
SKIP = ConvertOptions(binary="skip")

DIGITS_65 = "-" + "9" * 35 + "." + "0123456789" * 3

MYSQL_JSON = {
    b"name": b"caf\xc3\xa9 \xf0\x9f\x98\x80",
    b"tags": [b"a", [1, 2.5, None], {b"deep": True}],
    b"price": Decimal("10.50"),
    b"empty": {},
}
MYSQL_JSON_AS_JSON = (
    '{"name":"café 😀","tags":["a",[1,2.5,null],{"deep":true}],"price":10.50,"empty":{}}'
).encode()


CASES = [
    pytest.param(Kind.INT, 42, UTC, b"42", id="int"),
    pytest.param(Kind.INT, None, UTC, b"null", id="null-stays-null"),
    pytest.param(Kind.INT, 2**64 - 1, UTC, b"18446744073709551615", id="unsigned-bigint-max"),
    pytest.param(Kind.INT, -(2**63), UTC, b"-9223372036854775808", id="signed-bigint-min"),
    pytest.param(Kind.DECIMAL, Decimal("12.30"), UTC, b'"12.30"', id="decimal-string-keeps-scale"),
    pytest.param(
        # DECIMAL(20,10) 0.00000001 as the library decodes it (verified on MariaDB 10.11).
        Kind.DECIMAL,
        Decimal("1.00E-8"),
        UTC,
        b'"0.0000000100"',
        id="decimal-string-no-exponent",
    ),
    pytest.param(
        Kind.DECIMAL, Decimal(DIGITS_65), UTC, f'"{DIGITS_65}"'.encode(), id="decimal-string-65"
    ),
    pytest.param(Kind.DECIMAL, Decimal("12.30"), NUMBER, b"12.30", id="decimal-number-exact"),
    pytest.param(
        Kind.DECIMAL, Decimal(DIGITS_65), NUMBER, DIGITS_65.encode(), id="decimal-number-65"
    ),
    pytest.param(
        Kind.DECIMAL, Decimal("1.00E-8"), NUMBER, b"0.0000000100", id="decimal-number-small"
    ),
    pytest.param(Kind.FLOAT, 1.25, UTC, b"1.25", id="float"),
    pytest.param(Kind.DATE, dt.date(2024, 2, 29), UTC, b'"2024-02-29"', id="date"),
    pytest.param(Kind.DATE, None, UTC, b"null", id="zero-date-none"),
    pytest.param(
        Kind.DATETIME, dt.datetime(2024, 7, 1, 12, 30), UTC, b'"2024-07-01T12:30:00Z"', id="dt-utc"
    ),
    pytest.param(
        Kind.DATETIME,
        dt.datetime(2024, 7, 1, 12, 30, 0, 250000),
        UTC,
        b'"2024-07-01T12:30:00.250000Z"',
        id="dt-utc-fraction",
    ),
    pytest.param(
        Kind.DATETIME,
        dt.datetime(2024, 7, 1, 12, 30, 0, 250000),
        BERLIN,
        b'"2024-07-01T12:30:00.250000+02:00"',
        id="dt-berlin-summer",
    ),
    pytest.param(
        Kind.DATETIME,
        dt.datetime(2024, 1, 15, 8, 0),
        BERLIN,
        b'"2024-01-15T08:00:00+01:00"',
        id="dt-berlin-winter",
    ),
    pytest.param(
        Kind.DATETIME,
        dt.datetime(2024, 10, 27, 2, 30),
        BERLIN,
        b'"2024-10-27T02:30:00+02:00"',
        id="dt-berlin-fall-back-ambiguous-fold0",
    ),
    pytest.param(
        Kind.DATETIME,
        dt.datetime(2024, 3, 31, 2, 30),
        BERLIN,
        b'"2024-03-31T02:30:00+01:00"',
        id="dt-berlin-spring-forward-gap",
    ),
    pytest.param(
        Kind.DATETIME,
        dt.datetime(1880, 1, 1),
        BERLIN,
        b'"1879-12-31T23:06:32Z"',
        id="dt-berlin-lmt-offset-with-seconds-in-utc",
    ),
    pytest.param(Kind.DATETIME, None, BERLIN, b"null", id="zero-datetime-none"),
    pytest.param(
        Kind.TIMESTAMP,
        dt.datetime(2024, 7, 1, 10, 30),
        BERLIN,
        b'"2024-07-01T10:30:00Z"',
        id="timestamp-utc-whatever-zone",
    ),
    pytest.param(
        Kind.TIMESTAMP,
        dt.datetime(2038, 1, 19, 3, 14, 7, 1),
        UTC,
        b'"2038-01-19T03:14:07.000001Z"',
        id="timestamp-fraction",
    ),
    pytest.param(Kind.TIMESTAMP, dt.datetime(1970, 1, 1), UTC, b"null", id="zero-timestamp-none"),
    pytest.param(Kind.TIME, dt.timedelta(hours=5), UTC, b'"05:00:00"', id="time"),
    pytest.param(
        Kind.TIME,
        -dt.timedelta(hours=838, minutes=59, seconds=59),
        UTC,
        b'"-838:59:59"',
        id="time-negative-min",
    ),
    pytest.param(
        Kind.TIME,
        dt.timedelta(hours=100, microseconds=500000),
        UTC,
        b'"100:00:00.500000"',
        id="time-large-fractional",
    ),
    pytest.param(
        Kind.TIME,
        -dt.timedelta(seconds=1, microseconds=500000),
        UTC,
        b'"-00:00:01.500000"',
        id="time-negative-fractional",
    ),
    pytest.param(Kind.YEAR, 2024, UTC, b"2024", id="year"),
    pytest.param(Kind.YEAR, 1900, UTC, b"null", id="year-0000-decodes-as-1900-none"),
    pytest.param(
        Kind.STRING, "naïve 😀 日本", UTC, '"naïve 😀 日本"'.encode(), id="string-utf8mb4"
    ),
    pytest.param(Kind.ENUM, "medium", UTC, b'"medium"', id="enum"),
    pytest.param(Kind.SET, {"red", "blue", "green"}, UTC, b'["blue","green","red"]', id="set"),
    pytest.param(Kind.SET, None, UTC, b"null", id="empty-set-none"),
    pytest.param(Kind.BIT, "101", UTC, b"5", id="bit-string"),
    pytest.param(Kind.BIT, "1" * 64, UTC, b"18446744073709551615", id="bit-64"),
    pytest.param(Kind.BIT, 5, UTC, b"5", id="bit-int"),
    pytest.param(Kind.JSON, MYSQL_JSON, UTC, MYSQL_JSON_AS_JSON, id="json-mysql-bytes-nested"),
    pytest.param(Kind.JSON, [b"x", {b"k": []}], UTC, b'["x",{"k":[]}]', id="json-mysql-array"),
    pytest.param(Kind.JSON, b"just text", UTC, b'"just text"', id="json-mysql-string-scalar"),
    pytest.param(Kind.JSON, True, UTC, b"true", id="json-mysql-true"),
    pytest.param(Kind.JSON, 3.5, UTC, b"3.5", id="json-mysql-number"),
    pytest.param(
        Kind.JSON,
        {b"at": dt.datetime(2024, 1, 2, 3, 4, 5), b"t": dt.time(1, 2, 3)},
        UTC,
        b'{"at":"2024-01-02T03:04:05","t":"01:02:03"}',
        id="json-mysql-opaque-temporal",
    ),
    pytest.param(
        Kind.JSON,
        '{"a": [1, {"b": null}], "s": "😀"}',
        UTC,
        '{"a":[1,{"b":null}],"s":"😀"}'.encode(),
        id="json-mariadb-text",
    ),
    pytest.param(Kind.JSON, "null", UTC, b"null", id="json-mariadb-null-scalar"),
    pytest.param(Kind.JSON, '"txt"', UTC, b'"txt"', id="json-mariadb-string-scalar"),
    pytest.param(Kind.JSON, "42", UTC, b"42", id="json-mariadb-number-scalar"),
    pytest.param(Kind.BINARY, b"\x00\xff\x10", UTC, b'"AP8Q"', id="binary-base64"),
    pytest.param(Kind.BINARY, None, UTC, b"null", id="binary-null"),
    pytest.param(Kind.GEOMETRY, b"\x01\x01\x00\x00\x00", UTC, b'"AQEAAAA="', id="geometry-base64"),
]


@pytest.mark.parametrize(("kind", "value", "opts", "expected"), CASES)
def test_value_becomes_expected_json(
    kind: Kind, value: Any, opts: ConvertOptions, expected: bytes
) -> None:
    converted = to_json_value(value, Column("c", kind), opts)
    assert orjson.dumps(converted) == expected


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        pytest.param(Kind.BINARY, b"\x00\x01", id="binary"),
        pytest.param(Kind.BINARY, None, id="binary-null"),
        pytest.param(Kind.GEOMETRY, b"\x01\x01", id="geometry"),
    ],
)
def test_binary_skip_omits_the_field(kind: Kind, value: Any) -> None:
    assert to_json_value(value, Column("c", kind), SKIP) is OMIT


def test_mysql_and_mariadb_json_give_the_same_document() -> None:
    mariadb_text = '{"name": "café 😀", "tags": ["a", [1, 2.5, null], {"deep": true}]}'
    mysql_value = {k: v for k, v in MYSQL_JSON.items() if k in (b"name", b"tags")}
    column = Column("doc", Kind.JSON)
    assert to_json_value(mysql_value, column, UTC) == to_json_value(mariadb_text, column, UTC)


class _JsonDiff:
    """Stands in for the library's partial-update JsonDiff object."""


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        pytest.param(
            Column("doc", Kind.JSON),
            '{"a": 1,',
            "column 'doc': invalid JSON text",
            id="invalid-json-text",
        ),
        pytest.param(
            Column("doc", Kind.JSON),
            _JsonDiff(),
            "column 'doc': JSON value of unexpected type _JsonDiff",
            id="partial-json-update",
        ),
        pytest.param(
            Column("doc", Kind.JSON),
            {b"k": b"\xff"},
            "column 'doc': JSON string is not valid UTF-8",
            id="json-bad-utf8",
        ),
        pytest.param(
            Column("name", Kind.STRING),
            b"\x93abc",
            "column 'name': text arrived as bytes",
            id="string-undecoded-bytes",
        ),
    ],
)
def test_unconvertible_value_raises_mapping_error_naming_column(
    column: Column, value: Any, message: str
) -> None:
    with pytest.raises(MappingError) as caught:
        to_json_value(value, column, UTC)
    assert caught.value.message.startswith(message)


def test_partial_json_update_error_tells_how_to_fix() -> None:
    with pytest.raises(MappingError) as caught:
        to_json_value(_JsonDiff(), Column("doc", Kind.JSON), UTC)
    assert caught.value.hint is not None
    assert "binlog_row_value_options" in caught.value.hint


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param('{"a": [1, "x"]}', {"a": [1, "x"]}, id="text"),
        pytest.param(b'{"a": "\xc3\xa9"}', {"a": "é"}, id="blob-bytes"),
        pytest.param(None, None, id="null"),
    ],
)
def test_json_text_converter_parses_text_and_blob_columns(value: Any, expected: Any) -> None:
    assert json_text_converter(Column("doc", Kind.BINARY))(value) == expected


def test_json_text_converter_rejects_invalid_text() -> None:
    with pytest.raises(MappingError, match="column 'doc': invalid JSON text"):
        json_text_converter(Column("doc", Kind.STRING))(b"{oops")


def test_converter_is_reusable_across_values() -> None:
    convert = converter_for(Column("at", Kind.DATETIME), BERLIN)
    assert [convert(dt.datetime(2024, 1, 1)), convert(dt.datetime(2024, 7, 1)), convert(None)] == [
        "2024-01-01T00:00:00+01:00",
        "2024-07-01T00:00:00+02:00",
        None,
    ]
