"""Columns as the catalog describes them, and selected values in the binlog decoder's shapes.

Rows read with a plain SELECT (snapshots, `cdc dlq replay`) go through the same `Mapper` as
rows streamed from the binlog, so every value is given exactly the shape python-mysql-replication
1.0.17 decodes it to (see `cdc.model.events`, `cdc.transform.convert`):

- FLOAT: the 4-byte value widened to a double (selected as `CAST(col AS DOUBLE)`; the text
  protocol would round it to 6 digits).
- DATE, DATETIME: zero and partly-zero dates -> None.
- TIMESTAMP: naive UTC (the session runs with time_zone '+00:00'); the zero TIMESTAMP -> the
  epoch, 1970-01-01 00:00:00, as the library decodes it.
- YEAR: 0000 -> 1900 (the library adds 1900 to the stored byte).
- SET: set of str; the empty set -> None.
- BIT: a string of '0'/'1' as wide as the column ('0000000101' for BIT(10) 5).
- BINARY(n): without trailing zero bytes, which the binlog drops as padding (a BINARY(3)
  holding 0x000100 arrives as 0x0001). Keys are padded back before they are compared.
- JSON: MariaDB (LONGTEXT with a `json_valid` CHECK) -> the JSON text, str; MySQL -> the parsed
  value with bytes keys and bytes strings, as the library decodes MySQL's binary JSON.
- Everything else as PyMySQL returns it (int, Decimal, timedelta, str, bytes), which matches.

Key values travel the other way too: a document id's rendered parts (`key_param`) and a
chunk's last key (`after_param`) become query parameters that compare as the column does.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from cdc.errors import CdcError
from cdc.model.events import Column, Kind
from cdc.source.mysql import quote_name

_EPOCH = dt.datetime(1970, 1, 1)
_ZERO_YEAR = 1900

_KIND_BY_TYPE: dict[str, Kind] = {
    "tinyint": Kind.INT,
    "smallint": Kind.INT,
    "mediumint": Kind.INT,
    "int": Kind.INT,
    "bigint": Kind.INT,
    "decimal": Kind.DECIMAL,
    "float": Kind.FLOAT,
    "double": Kind.FLOAT,
    "date": Kind.DATE,
    "datetime": Kind.DATETIME,
    "timestamp": Kind.TIMESTAMP,
    "time": Kind.TIME,
    "year": Kind.YEAR,
    "enum": Kind.ENUM,
    "set": Kind.SET,
    "bit": Kind.BIT,
    "json": Kind.JSON,
    "geometry": Kind.GEOMETRY,
    "point": Kind.GEOMETRY,
    "linestring": Kind.GEOMETRY,
    "polygon": Kind.GEOMETRY,
    "multipoint": Kind.GEOMETRY,
    "multilinestring": Kind.GEOMETRY,
    "multipolygon": Kind.GEOMETRY,
    "geometrycollection": Kind.GEOMETRY,
}
_TEXT_TYPES = frozenset(
    {"char", "varchar", "tinytext", "text", "mediumtext", "longtext", "binary", "varbinary"}
    | {"tinyblob", "blob", "mediumblob", "longblob"}
)
_QUOTED = re.compile(r"'((?:[^']|'')*)'")


@dataclass(frozen=True, slots=True)
class ColumnInfo:
    """What reading a column needs beyond its `Column`: the SQL to select it and its members."""

    column: Column
    data_type: str
    bits: int
    """Width of a BIT column."""
    octets: int
    """Length of a BINARY column, which the server pads with zero bytes."""
    members: tuple[str, ...]
    """ENUM/SET members in definition order."""

    @property
    def name(self) -> str:
        return self.column.name

    @property
    def select(self) -> str:
        quoted = quote_name(self.name)
        return f"CAST({quoted} AS DOUBLE)" if self.data_type == "float" else quoted


def column_info(row: Sequence[Any], json_columns: frozenset[str]) -> ColumnInfo:
    """A column from its `mysql.column_definitions` row (`json_columns`: MariaDB's JSON ones)."""
    name, data_type, column_type, charset, column_key, precision, octets = row
    data_type = str(data_type).lower()
    column_type = str(column_type).lower()
    if name in json_columns:
        kind = Kind.JSON
    elif data_type in _TEXT_TYPES:
        binary = charset is None or str(charset).lower() == "binary"
        kind = Kind.BINARY if binary else Kind.STRING
    else:
        # Types the binlog source does not know (MariaDB's INET6, UUID, ...) are binary there.
        kind = _KIND_BY_TYPE.get(data_type, Kind.BINARY)
    members: tuple[str, ...] = ()
    if kind is Kind.ENUM or kind is Kind.SET:
        members = tuple(m.replace("''", "'") for m in _QUOTED.findall(str(row[2])))
    return ColumnInfo(
        column=Column(
            name=str(name),
            kind=kind,
            # YEAR is stored unsigned and the binlog's signedness metadata says so.
            unsigned="unsigned" in column_type or kind is Kind.YEAR,
            is_primary=column_key == "PRI",
            sql_type=column_type,
        ),
        data_type=data_type,
        bits=int(precision or 1) if kind is Kind.BIT else 0,
        octets=int(octets or 0) if data_type == "binary" else 0,
        members=members,
    )


def decoder(info: ColumnInfo) -> Callable[[Any], Any]:
    """The function giving a selected value of the column its binlog shape."""
    kind = info.column.kind
    if kind is Kind.DATE or kind is Kind.DATETIME:
        return _valid_date
    if kind is Kind.TIMESTAMP:
        return _timestamp
    if kind is Kind.YEAR:
        return _year
    if kind is Kind.SET:
        return _set
    if kind is Kind.BIT:
        return _bit_string(info.bits)
    if kind is Kind.JSON and info.data_type == "json":
        return _mysql_json
    if info.octets:
        return _unpadded
    return _identity


def key_param(info: ColumnInfo, part: str, zone: ZoneInfo) -> Any:
    """A rendered id part (see `cdc.transform.mapping`) as a query parameter of the
    column's type."""
    kind = info.column.kind
    try:
        if kind in (Kind.INT, Kind.YEAR, Kind.BIT):
            return int(part)
        if kind is Kind.DECIMAL:
            return Decimal(part)
        if kind is Kind.FLOAT:
            return float(part)
        if kind is Kind.DATE:
            return dt.date.fromisoformat(part)
        if kind is Kind.DATETIME:
            return _wall_time(dt.datetime.fromisoformat(part), zone)
        if kind is Kind.TIMESTAMP:
            return _naive_utc(dt.datetime.fromisoformat(part))
        if kind is Kind.TIME:
            _parse_time(part)
            return part
        if kind is Kind.SET:
            return _set_mask(info, part.split(",") if part else [])
        if kind is Kind.BINARY or kind is Kind.GEOMETRY:
            return bytes.fromhex(part).ljust(info.octets, b"\0")
        if kind is Kind.JSON:
            raise ValueError("a JSON column cannot be part of a key")
    except (ValueError, InvalidOperation) as exc:
        raise CdcError(
            f"key part {part!r} is not a value of column {info.name!r} ({info.data_type}): {exc}"
        ) from None
    return part


def after_param(info: ColumnInfo, value: Any) -> Any:
    """A key value as `fetch_chunk` returned it, as a query parameter that compares in the
    same order the column sorts in."""
    kind = info.column.kind
    if value is None:
        raise CdcError(
            f"cannot continue after a row whose key column {info.name!r} is NULL or a zero "
            "date: it has no comparable value"
        )
    if kind is Kind.BIT:
        return int(value, 2) if isinstance(value, str) else value
    if kind is Kind.YEAR:
        return 0 if value == _ZERO_YEAR else value
    if kind is Kind.TIME:
        return _format_time(value) if isinstance(value, dt.timedelta) else value
    if kind is Kind.ENUM:
        # ENUM and SET sort by their numeric value, and compare numerically with a number.
        return info.members.index(value) + 1 if value in info.members else 0
    if kind is Kind.SET:
        return _set_mask(info, value)
    if kind is Kind.JSON:
        raise CdcError(f"a JSON column ({info.name!r}) cannot order a chunked read")
    if info.octets and isinstance(value, bytes):
        return value.ljust(info.octets, b"\0")
    return value


def _wall_time(value: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    """The naive local time a rendered DATETIME stands for (see `cdc.transform.convert`)."""
    if value.tzinfo is None:
        return value
    if value.utcoffset() == value.replace(tzinfo=zone).utcoffset():
        return value.replace(tzinfo=None)
    # Written in UTC because the zone's offset then had seconds: convert back.
    return value.astimezone(zone).replace(tzinfo=None)


def _identity(value: Any) -> Any:
    return value


def _valid_date(value: Any) -> Any:
    # PyMySQL returns the text of a date it cannot build ('0000-00-00', '2024-00-10'); the
    # binlog decoder returns None for those.
    return None if isinstance(value, str) else value


def _unpadded(value: Any) -> Any:
    # The binlog drops a BINARY value's trailing zero bytes (the server's padding), and the
    # document id and field are built from what the binlog holds.
    return value.rstrip(b"\0") if isinstance(value, bytes) else value


def _timestamp(value: Any) -> Any:
    return _EPOCH if isinstance(value, str) else value


def _year(value: Any) -> Any:
    return _ZERO_YEAR if value == 0 else value


def _set(value: Any) -> Any:
    if isinstance(value, set):
        return value or None
    members = set(str(value).split(",")) if value else set()
    return members or None


def _bit_string(bits: int) -> Callable[[Any], Any]:
    def decode(value: Any) -> Any:
        number = int.from_bytes(value, "big") if isinstance(value, bytes) else int(value)
        return format(number, f"0{bits}b")

    return decode


def _mysql_json(value: Any) -> Any:
    return _binary_json_shape(json.loads(value))


def _binary_json_shape(value: Any) -> Any:
    """Parsed JSON as the library decodes MySQL's binary JSON: bytes keys and bytes strings."""
    if isinstance(value, dict):
        return {key.encode(): _binary_json_shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_binary_json_shape(item) for item in value]
    if isinstance(value, str):
        return value.encode()
    return value


def _set_mask(info: ColumnInfo, members: Any) -> int:
    mask = 0
    for member in members:
        if member not in info.members:
            raise ValueError(f"{member!r} is not a member of the SET")
        mask |= 1 << info.members.index(member)
    return mask


def _naive_utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        return value
    return value.astimezone(dt.UTC).replace(tzinfo=None)


def _parse_time(text: str) -> None:
    if not re.match(r"^-?\d{2,3}:\d{2}:\d{2}(\.\d{1,6})?$", text):
        raise ValueError("expected [-]HH:MM:SS[.ffffff]")


def _format_time(value: dt.timedelta) -> str:
    # PyMySQL's own rendering of a negative timedelta is not a valid TIME ('-839:00:01').
    micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    sign = "-" if micros < 0 else ""
    hours, rest = divmod(abs(micros), 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    seconds, fraction = divmod(rest, 1_000_000)
    return f"{sign}{hours:02d}:{minutes:02d}:{seconds:02d}.{fraction:06d}"
