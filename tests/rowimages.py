"""Rows events of random table maps and row bytes, for the differential tests of the row decoders.

`table_and_event()` draws a table map of random column types and metadata (every type the
compiled decoders read, several charsets, every fractional precision, DECIMAL widths up to 65
digits) and row images for it, NULLs included; `library_event` wraps such bytes in a real
python-mysql-replication rows event, and `library_images` reads them the library's way. The
value bytes are arbitrary within each type's width, so the edge and garbage cases (invalid
dates, out-of-range digits, undecodable text) come up as well.
"""

from __future__ import annotations

import math
import struct
from decimal import Decimal
from typing import Any

import pymysql.protocol
from hypothesis import strategies as st
from pymysqlreplication.column import Column
from pymysqlreplication.constants import BINLOG, FIELD_TYPE
from pymysqlreplication.packet import BinLogPacketWrapper
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent
from pymysqlreplication.table import Table

from cdc.source import rowdecode

TABLE_ID = 77
CHARSETS = ["utf8mb4", "utf8mb3", "latin1", "binary", "cp1251", "ujis", "swe7", None]
ENCODINGS = {"utf8mb4": "utf8", "utf8mb3": "utf8", "latin1": "cp1252", "cp1251": "cp1251"}


class _Control:
    """What the library asks of its control connection while parsing an event."""

    charset = "utf8mb4"

    def _get_dbms(self) -> str:
        return "mariadb"


def _lenenc(n: int) -> bytes:
    if n < 251:
        return bytes([n])
    return b"\xfc" + struct.pack("<H", n)


def library_event(event_type: int, columns: list[Column], rows_body: bytes) -> Any:
    """A real library rows event over `rows_body` (the row images after the bitmaps)."""
    count = len(columns)
    bitmap = ((1 << count) - 1).to_bytes((count + 7) // 8, "little")
    bitmaps = bitmap * (2 if event_type == BINLOG.UPDATE_ROWS_EVENT_V1 else 1)
    body = TABLE_ID.to_bytes(6, "little") + b"\x00\x00" + _lenenc(count) + bitmaps + rows_body
    header = struct.pack("<IBIIIH", 0, event_type, 1, 19 + len(body), 0, 0)
    packet = pymysql.protocol.MysqlPacket(b"\x00" + header + body, "utf8")
    table = Table(TABLE_ID, "db", "t", columns)
    wrapper = BinLogPacketWrapper(
        packet,
        {TABLE_ID: table},
        _Control(),
        (10, 11, 0),
        False,
        frozenset({WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent}),
        None,
        None,
        None,
        None,
        False,
        False,
        False,
        False,
        False,
    )
    assert wrapper.event is not None
    return wrapper.event


def make_column(type_: int, name: str, **meta: Any) -> Column:
    base = {
        "type": type_,
        "name": name,
        "unsigned": False,
        "is_primary": False,
        "charset_id": None,
        "character_set_name": None,
        "collation_name": None,
        "enum_values": None,
        "set_values": None,
        "visibility": False,
    }
    base.update(meta)
    return Column(**base)


# -- column definitions and the bytes of their values -----------------------------------------


@st.composite
def text_value(draw: st.DrawFn, charset: str | None, max_len: int) -> bytes:
    encoding = ENCODINGS.get(charset or "utf8mb4")
    if encoding is not None and draw(st.booleans()):
        text = draw(st.text(max_size=max_len // 4))
        data = text.encode(encoding, errors="replace")
    else:
        data = draw(st.binary(max_size=max_len))
    return data[:max_len]


@st.composite
def decimal_bytes(draw: st.DrawFn, precision: int, scale: int) -> bytes:
    """A value as the server stores DECIMAL(precision, scale): groups of up to 9 digits
    (4 bytes for 9, fewer bytes for fewer), big-endian, sign in the top bit, negatives
    inverted. Edge values (all nines, zero, negative zero) come up often."""
    sizes = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4]
    int_digits = precision - scale
    groups = []
    if int_digits % 9:
        groups.append(int_digits % 9)
    groups += [9] * (int_digits // 9) + [9] * (scale // 9)
    if scale % 9:
        groups.append(scale % 9)
    data = b""
    for digits in groups:
        limit = 10**digits - 1
        value = draw(st.one_of(st.integers(0, limit), st.sampled_from([0, limit])))
        data += value.to_bytes(sizes[digits], "big")
    raw = bytearray(data)
    raw[0] |= 0x80
    if draw(st.booleans()):
        raw = bytearray(b ^ 0xFF for b in raw)
    return bytes(raw)


def fixed(width: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=width, max_size=width)


@st.composite
def column_and_values(draw: st.DrawFn, name: str) -> tuple[Column, st.SearchStrategy[bytes]]:
    """A random column of a compiled type and the strategy of its value bytes."""
    kind = draw(
        st.sampled_from(
            [
                "int",
                "int24",
                "float",
                "double",
                "varchar",
                "string",
                "blob",
                "json",
                "geometry",
                "decimal",
                "date",
                "datetime2",
                "timestamp2",
                "time2",
                "year",
                "enum",
                "set",
                "bit",
            ]
        )
    )
    unsigned = draw(st.booleans())
    if kind == "int":
        type_, width = draw(
            st.sampled_from(
                [
                    (FIELD_TYPE.TINY, 1),
                    (FIELD_TYPE.SHORT, 2),
                    (FIELD_TYPE.LONG, 4),
                    (FIELD_TYPE.LONGLONG, 8),
                ]
            )
        )
        return make_column(type_, name, unsigned=unsigned), fixed(width)
    if kind == "int24":
        return make_column(FIELD_TYPE.INT24, name, unsigned=unsigned), fixed(3)
    if kind == "float":
        return make_column(FIELD_TYPE.FLOAT, name, size=4), fixed(4)
    if kind == "double":
        return make_column(FIELD_TYPE.DOUBLE, name, size=8), fixed(8)
    if kind in ("varchar", "string", "blob"):
        charset = draw(st.sampled_from(CHARSETS))
        if kind == "blob":
            size = draw(st.integers(1, 4))
            column = make_column(
                FIELD_TYPE.BLOB, name, length_size=size, character_set_name=charset
            )
            limit = min(300, (1 << (8 * size)) - 1)
        else:
            max_length = draw(st.sampled_from([1, 10, 255, 256, 1000, 65535]))
            type_ = FIELD_TYPE.VARCHAR if kind == "varchar" else FIELD_TYPE.STRING
            column = make_column(type_, name, max_length=max_length, character_set_name=charset)
            size = 2 if max_length > 255 else 1
            limit = min(300, max_length)

        def text_prefixed(data: bytes, size: int = size) -> bytes:
            return len(data).to_bytes(size, "little") + data

        values = text_value(charset, limit).map(text_prefixed)
        return column, values
    if kind == "json":
        size = draw(st.integers(1, 4))
        payload = st.one_of(
            st.just(b""),
            st.sampled_from([b"\x04\x00", b"\x04\x01", b"\x04\x02", b"\x05\x07\x00"]),
            st.text(max_size=20).map(lambda s: b"\x0c" + _lenenc(len(s.encode())) + s.encode()),
            st.binary(min_size=1, max_size=30),
        )

        def json_prefixed(data: bytes, size: int = size) -> bytes:
            return len(data).to_bytes(size, "little") + data

        return make_column(FIELD_TYPE.JSON, name, length_size=size), payload.map(json_prefixed)
    if kind == "geometry":
        return make_column(FIELD_TYPE.GEOMETRY, name, length_size=4), st.binary(max_size=40).map(
            lambda data: len(data).to_bytes(4, "little") + data
        )
    if kind == "decimal":
        precision = draw(st.integers(1, 65))
        scale = draw(st.integers(0, min(30, precision)))
        width, _ = rowdecode._decimal_reader(precision, scale)
        column = make_column(FIELD_TYPE.NEWDECIMAL, name, precision=precision, decimals=scale)
        return column, st.one_of(fixed(width), decimal_bytes(precision, scale))
    if kind in ("datetime2", "timestamp2", "time2"):
        fsp = draw(st.integers(0, 6))
        type_, width = {
            "datetime2": (FIELD_TYPE.DATETIME2, 5),
            "timestamp2": (FIELD_TYPE.TIMESTAMP2, 4),
            "time2": (FIELD_TYPE.TIME2, 3),
        }[kind]
        return make_column(type_, name, fsp=fsp), fixed(width + (fsp + 1) // 2)
    if kind == "date":
        return make_column(FIELD_TYPE.DATE, name), fixed(3)
    if kind == "year":
        return make_column(FIELD_TYPE.YEAR, name), fixed(1)
    if kind == "enum":
        size = draw(st.sampled_from([1, 2]))
        labels = draw(st.lists(st.text(max_size=5), max_size=5))
        enum_values = ["", *labels] if labels else None
        column = make_column(FIELD_TYPE.ENUM, name, size=size, enum_values=enum_values)
        count = len(enum_values) if enum_values else 3

        def index_bytes(n: int, size: int = size) -> bytes:
            return n.to_bytes(size, "little")

        return column, st.integers(0, count - 1).map(index_bytes)
    if kind == "set":
        size = draw(st.sampled_from([1, 2, 3, 4, 8]))
        members = draw(st.lists(st.text(max_size=5), max_size=8, unique=True))
        column = make_column(FIELD_TYPE.SET, name, size=size, set_values=members or None)
        return column, fixed(size)
    bits = draw(st.integers(1, 64))
    column = make_column(FIELD_TYPE.BIT, name, bits=bits, bytes=(bits + 7) // 8)
    return column, fixed((bits + 7) // 8)


@st.composite
def table_and_event(draw: st.DrawFn) -> tuple[int, list[Column], bytes]:
    count = draw(st.integers(1, 12))
    pairs = [draw(column_and_values(f"c{i}")) for i in range(count)]
    columns = [column for column, _ in pairs]
    event_type = draw(
        st.sampled_from(
            [BINLOG.WRITE_ROWS_EVENT_V1, BINLOG.UPDATE_ROWS_EVENT_V1, BINLOG.DELETE_ROWS_EVENT_V1]
        )
    )
    images = draw(st.integers(1, 4)) * (2 if event_type == BINLOG.UPDATE_ROWS_EVENT_V1 else 1)
    body = b""
    for _ in range(images):
        nulls = [draw(st.booleans()) if draw(st.integers(0, 3)) == 0 else False for _ in pairs]
        bitmap = sum(1 << i for i, null in enumerate(nulls) if null)
        body += bitmap.to_bytes((count + 7) // 8, "little")
        for (_, values), null in zip(pairs, nulls, strict=True):
            if not null:
                body += draw(values)
    return event_type, columns, body


# -- comparison ---------------------------------------------------------------------------------


def same(a: Any, b: Any) -> bool:
    """Equal values of the same type; Decimals with the same digits and exponent, NaN = NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, Decimal):
        return bool(a.as_tuple() == b.as_tuple())
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def library_images(event: Any) -> list[dict[str, Any]]:
    images = []
    for row in event.rows:
        if "values" in row:
            images.append(row["values"])
        else:
            images.extend([row["before_values"], row["after_values"]])
    return images


def outcome(call: Any) -> tuple[str, Any]:
    try:
        return "ok", call()
    except Exception as exc:
        return "raised", type(exc)
