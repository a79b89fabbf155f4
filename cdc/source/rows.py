"""Read current rows from MySQL/MariaDB, in the value shapes the binlog decoder produces.

`cdc dlq replay` (and the snapshot) map rows read with a plain SELECT through the same `Mapper`
as rows streamed from the binlog, so this module returns every value exactly as
python-mysql-replication 1.0.17 decodes it (see `cdc.model.events`, `cdc.transform.convert`),
and describes the table with the same `TableSchema` the binlog source builds:

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

Column order is the table's, and the primary key is listed in column order (not key order),
because that is how the binlog source lists it and the document id joins its parts that way.

All errors are translated at this boundary: a lost connection is `SourceUnavailable`, a missing
table or an unusable key value `CdcError`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from cdc.config import SourceConfig
from cdc.errors import CdcError
from cdc.model.events import Column, Kind, TableSchema
from cdc.source import mysql
from cdc.source.mysql import quote_name

log = logging.getLogger(__name__)

_EPOCH = dt.datetime(1970, 1, 1)
_ZERO_YEAR = 1900
_KEYS_PER_QUERY = 200

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
class _ColumnInfo:
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


@dataclass(frozen=True, slots=True)
class _Table:
    schema: TableSchema
    columns: tuple[_ColumnInfo, ...]
    decoders: tuple[Callable[[Any], Any], ...]

    def info(self, name: str) -> _ColumnInfo:
        for col in self.columns:
            if col.name == name:
                return col
        raise CdcError(
            f"table {self.schema.name} has no column {name!r}",
            hint="the table was altered since the key was recorded; check its columns",
        )


class RowReader:
    """Reads rows of the source server over one ordinary connection (not the binlog stream).

    The connection opens on first use and again after a failure; table descriptions are cached
    until `forget()` (call it after DDL). Not thread-safe.
    """

    def __init__(self, cfg: SourceConfig) -> None:
        self._session = mysql.Session(cfg)
        self._zone = ZoneInfo(cfg.time_zone)
        self._tables: dict[tuple[str, str], _Table] = {}

    # -- public API ------------------------------------------------------------------------------

    def table_schema(self, schema: str, table: str) -> TableSchema:
        """The table as the binlog source would describe it. CdcError if it does not exist."""
        return self._table(schema, table).schema

    def fetch_by_keys(
        self,
        schema: str,
        table: str,
        id_columns: Sequence[str],
        keys: Sequence[tuple[str, ...]],
    ) -> dict[tuple[str, ...], dict[str, Any] | None]:
        """The current row of each key, or None when no row has it.

        A key holds the rendered values of `id_columns`, as in `Action.key` (integers in
        decimal, DECIMAL as fixed-point text, dates and times in ISO 8601 as documents write
        them, SET members sorted and joined with ",", binary as hex). Each is turned back into a
        value of its column's type, so comparisons are the server's own: exact for numbers,
        dates and binary, by the column's collation for text. CdcError if a key cannot be a
        value of its column.
        """
        info = self._table(schema, table)
        columns = [info.info(name) for name in id_columns]
        result: dict[tuple[str, ...], dict[str, Any] | None] = {}
        wanted = list(dict.fromkeys(keys))
        for key in wanted:
            if len(key) != len(columns):
                raise CdcError(
                    f"key {key!r} of {schema}.{table} has {len(key)} parts; the id columns "
                    f"are {', '.join(id_columns)}"
                )
            result[key] = None
        select = ", ".join(col.select for col in info.columns)
        where = " AND ".join(f"{quote_name(col.name)} = %s" for col in columns)
        source = f"{quote_name(schema)}.{quote_name(table)}"
        for start in range(0, len(wanted), _KEYS_PER_QUERY):
            batch = wanted[start : start + _KEYS_PER_QUERY]
            # One round trip per batch; the first column says which key a row answers, so
            # the server's notion of equality decides, not a re-rendering here.
            parts = []
            params: list[Any] = []
            for number, key in enumerate(batch):
                parts.append(f"(SELECT {number}, {select} FROM {source} WHERE {where} LIMIT 1)")
                params += [
                    self._key_param(col, part) for col, part in zip(columns, key, strict=True)
                ]
            for row in self._query(" UNION ALL ".join(parts), params, f"reading {source}"):
                result[batch[row[0]]] = self._decode(info, row[1:])
        return result

    def fetch_chunk(
        self,
        schema: str,
        table: str,
        key_columns: Sequence[str],
        after: tuple[Any, ...] | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        """Up to `limit` rows ordered by `key_columns`, starting after the key `after`.

        `key_columns` must identify a row uniquely (a primary or unique key). `after` holds the
        key of the last row of the previous chunk as this reader returned it
        (`tuple(row[c] for c in key_columns)`); None starts at the beginning. A chunk shorter
        than `limit` is the last one. CdcError when a key value cannot be compared (a zero
        date decodes to None and cannot be continued from).
        """
        info = self._table(schema, table)
        columns = [info.info(name) for name in key_columns]
        if not columns:
            raise CdcError(f"reading {schema}.{table} in chunks needs key columns")
        select = ", ".join(col.select for col in info.columns)
        order = ", ".join(quote_name(col.name) for col in columns)
        sql = f"SELECT {select} FROM {quote_name(schema)}.{quote_name(table)}"
        params: list[Any] = []
        if after is not None:
            if len(after) != len(columns):
                raise CdcError(f"`after` has {len(after)} values for {len(columns)} key columns")
            values = [
                self._after_param(col, value) for col, value in zip(columns, after, strict=True)
            ]
            where, params = _after_condition([quote_name(col.name) for col in columns], values)
            sql += f" WHERE {where}"
        sql += f" ORDER BY {order} LIMIT {int(limit)}"
        rows = self._query(sql, params, f"reading {schema}.{table}")
        return [self._decode(info, row) for row in rows]

    def consistent_chunk(
        self,
        schema: str,
        table: str,
        key_columns: Sequence[str],
        after: tuple[Any, ...] | None,
        limit: int,
    ) -> tuple[list[dict[str, Any]], tuple[str, int]]:
        """`fetch_chunk` inside a consistent-snapshot transaction, with the binlog position
        (file, offset) that snapshot corresponds to (see `mysql.consistent_snapshot`)."""
        self._table(schema, table)
        with mysql.consistent_snapshot(self._session) as position:
            rows = self.fetch_chunk(schema, table, key_columns, after, limit)
        return rows, position

    def unique_key(self, schema: str, table: str) -> tuple[str, ...] | None:
        """The primary key, else the first unique key whose columns are all NOT NULL, else
        None: the columns that identify a row for reading in chunks."""
        described = self._table(schema, table)
        if described.schema.primary_key:
            return described.schema.primary_key
        keys = self._session.run(mysql.unique_keys, schema, table)
        for columns in keys.values():
            if not any(nullable for _, nullable in columns):
                return tuple(name for name, _ in columns)
        return None

    def list_tables(self) -> list[str]:
        """Every base table the user can see, as `schema.table` (system schemas left out)."""
        return self._session.run(mysql.base_tables)

    def estimate_rows(self, schema: str, table: str) -> int:
        """The server's estimate of the table's row count (cheap; exact for MyISAM)."""
        return self._session.run(mysql.estimated_rows, schema, table)

    def forget(self) -> None:
        """Drop cached table descriptions (after DDL)."""
        self._tables.clear()

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> RowReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- connection --------------------------------------------------------------------------------

    def _query(self, sql: str, params: Sequence[Any], what: str) -> list[tuple[Any, ...]]:
        return self._session.query(sql, params, what)

    # -- table descriptions ------------------------------------------------------------------------

    def _table(self, schema: str, table: str) -> _Table:
        cached = self._tables.get((schema, table))
        if cached is not None:
            return cached
        rows = self._session.run(mysql.column_definitions, schema, table)
        if not rows:
            raise CdcError(
                f"table {schema}.{table} does not exist on {self._session.address} "
                "(or the user may not SELECT from it)",
                hint="check the table name, and grant SELECT on it to source.user",
            )
        json_columns = self._mariadb_json_columns(schema, table)
        infos = tuple(_column_info(row, json_columns) for row in rows)
        columns = tuple(info.column for info in infos)
        described = _Table(
            schema=TableSchema(
                schema=schema,
                table=table,
                columns=columns,
                primary_key=tuple(col.name for col in columns if col.is_primary),
            ),
            columns=infos,
            decoders=tuple(self._decoder(info) for info in infos),
        )
        if len(self._tables) > 10_000:
            self._tables.clear()
        self._tables[(schema, table)] = described
        return described

    def _mariadb_json_columns(self, schema: str, table: str) -> frozenset[str]:
        """MariaDB's JSON is LONGTEXT with a `json_valid` CHECK; the binlog source reads these
        columns as JSON, so they are JSON here too."""
        if self._session.info().flavor != "mariadb":
            return frozenset()
        return self._session.run(mysql.json_columns, schema, table)

    def _decoder(self, info: _ColumnInfo) -> Callable[[Any], Any]:
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

    def _decode(self, table: _Table, values: Sequence[Any]) -> dict[str, Any]:
        return {
            col.name: None if value is None else decode(value)
            for col, decode, value in zip(table.columns, table.decoders, values, strict=True)
        }

    # -- key values -------------------------------------------------------------------------------

    def _key_param(self, info: _ColumnInfo, part: str) -> Any:
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
                return self._wall_time(dt.datetime.fromisoformat(part))
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
                f"key part {part!r} is not a value of column {info.name!r} ({info.data_type}): "
                f"{exc}"
            ) from None
        return part

    def _after_param(self, info: _ColumnInfo, value: Any) -> Any:
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

    def _wall_time(self, value: dt.datetime) -> dt.datetime:
        """The naive local time a rendered DATETIME stands for (see `cdc.transform.convert`)."""
        if value.tzinfo is None:
            return value
        if value.utcoffset() == value.replace(tzinfo=self._zone).utcoffset():
            return value.replace(tzinfo=None)
        # Written in UTC because the zone's offset then had seconds: convert back.
        return value.astimezone(self._zone).replace(tzinfo=None)


def _column_info(row: Sequence[Any], json_columns: frozenset[str]) -> _ColumnInfo:
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
    return _ColumnInfo(
        column=Column(
            name=str(name),
            kind=kind,
            # YEAR is stored unsigned and the binlog's signedness metadata says so.
            unsigned="unsigned" in column_type or kind is Kind.YEAR,
            is_primary=column_key == "PRI",
        ),
        data_type=data_type,
        bits=int(precision or 1) if kind is Kind.BIT else 0,
        octets=int(octets or 0) if data_type == "binary" else 0,
        members=members,
    )


def _after_condition(names: Sequence[str], values: Sequence[Any]) -> tuple[str, list[Any]]:
    """`(k1, k2, ...) > (v1, v2, ...)` spelled so the server can range-scan the key.

    Row-value comparisons are not turned into index ranges by every server version; this form
    bounds the first key column (`k1 >= v1`) and then excludes the rows at or before `after`.
    """
    alternatives = []
    params: list[Any] = [values[0]]
    for i in range(len(names)):
        equal = [f"{names[j]} = %s" for j in range(i)]
        alternatives.append("(" + " AND ".join([*equal, f"{names[i]} > %s"]) + ")")
        params += [*values[:i], values[i]]
    return f"{names[0]} >= %s AND ({' OR '.join(alternatives)})", params


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


def _set_mask(info: _ColumnInfo, members: Any) -> int:
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
