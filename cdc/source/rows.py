"""Read current rows from MySQL/MariaDB, in the value shapes the binlog decoder produces.

Snapshots and `cdc dlq replay` map rows read with a plain SELECT through the same `Mapper` as
rows streamed from the binlog, so every value is returned as the binlog decoder would give it
(`cdc.source.columns`), and the table is described with the same `TableSchema` the binlog
source builds.

Column order is the table's, and the primary key is listed in column order (not key order),
because that is how the binlog source lists it and the document id joins its parts that way.

All errors are translated at this boundary: a lost connection is `SourceUnavailable`, a missing
table or an unusable key value `CdcError`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from cdc.config import SourceConfig
from cdc.errors import CdcError, SchemaChanged
from cdc.model.events import ForeignKey, TableSchema
from cdc.model.position import Position
from cdc.source import mysql
from cdc.source.columns import ColumnInfo, after_param, column_info, decoder, key_param
from cdc.source.mysql import quote_name

log = logging.getLogger(__name__)

_KEYS_PER_QUERY = 200
_KEYS_PER_IN = 2000
_DESCRIBE_ATTEMPTS = 3
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class _Table:
    schema: TableSchema
    columns: tuple[ColumnInfo, ...]
    decoders: tuple[Callable[[Any], Any], ...]

    def info(self, name: str) -> ColumnInfo:
        for col in self.columns:
            if col.name == name:
                return col
        raise CdcError(
            f"table {self.schema.name} has no column {name!r}",
            hint="the table was altered since the key was recorded; check its columns",
        )


class RowReader:
    """Reads rows of the source server over one ordinary connection (not the binlog stream).

    The connection opens on first use and again after a failure. Table descriptions are cached
    for `fetch_by_keys` and `fetch_chunk`; `consistent_chunk` reads them afresh. Not
    thread-safe.
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
                    key_param(col, part, self._zone) for col, part in zip(columns, key, strict=True)
                ]
            for row in self._session.query(" UNION ALL ".join(parts), params, f"reading {source}"):
                result[batch[row[0]]] = self._decode(info, row[1:])
        return result

    def fetch_key_columns(
        self,
        schema: str,
        table: str,
        id_columns: Sequence[str],
        keys: Sequence[tuple[str, ...]],
    ) -> list[dict[str, Any]]:
        """The `id_columns` of the rows whose key is among `keys` (rendered as in
        `fetch_by_keys`), decoded as the binlog would give them; only those columns are read,
        one `IN` query per batch."""
        info = self._table(schema, table)
        columns = [info.info(name) for name in id_columns]
        decoders = {col.name: decoder(col) for col in columns}
        select = ", ".join(col.select for col in columns)
        names = ", ".join(quote_name(col.name) for col in columns)
        source = f"{quote_name(schema)}.{quote_name(table)}"
        one = "%s" if len(columns) == 1 else "(" + ", ".join(["%s"] * len(columns)) + ")"
        target = names if len(columns) == 1 else f"({names})"
        wanted = list(dict.fromkeys(keys))
        found: list[dict[str, Any]] = []
        for start in range(0, len(wanted), _KEYS_PER_IN):
            batch = wanted[start : start + _KEYS_PER_IN]
            params: list[Any] = []
            for key in batch:
                if len(key) != len(columns):
                    raise CdcError(
                        f"key {key!r} of {schema}.{table} has {len(key)} parts; the id columns "
                        f"are {', '.join(id_columns)}"
                    )
                params += [
                    key_param(col, part, self._zone) for col, part in zip(columns, key, strict=True)
                ]
            sql = (
                f"SELECT {select} FROM {source} WHERE {target} IN ({', '.join([one] * len(batch))})"
            )
            for row in self._session.query(sql, params, f"reading {source}"):
                found.append(
                    {
                        col.name: None if value is None else decoders[col.name](value)
                        for col, value in zip(columns, row, strict=True)
                    }
                )
        return found

    def valid_key(
        self, schema: str, table: str, id_columns: Sequence[str], key: tuple[str, ...]
    ) -> bool:
        """Whether `key` (rendered as in `fetch_by_keys`) can be a key of the table: the
        right number of parts, each a value of its column's type. A document id that is not
        one cannot have come from the table."""
        info = self._table(schema, table)
        if len(key) != len(id_columns):
            return False
        try:
            for name, part in zip(id_columns, key, strict=True):
                key_param(info.info(name), part, self._zone)
        except CdcError:
            return False
        return True

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[tuple[str, int]]:
        """Reads inside this block see one consistent snapshot; yields a binlog position
        (file, offset) at or after every transaction the snapshot holds: MariaDB's exact one,
        and on MySQL the position read once the snapshot has started (`consistent_chunk`
        gives the position read before, which may be earlier)."""
        with mysql.consistent_snapshot(self._session) as position:
            if self._session.info().flavor != "mariadb":
                position = self._session.run(mysql.binlog_file_position)
            yield position

    def fetch_in(
        self,
        schema: str,
        table: str,
        columns: Sequence[str],
        values: Sequence[tuple[Any, ...]],
        order: Sequence[tuple[str, bool]] = (),
    ) -> tuple[TableSchema, list[dict[str, Any]]]:
        """The table, and every row whose `columns` equal one of `values` (value tuples in the
        shapes this reader and the binlog return), ordered by `order` ((column, descending)
        pairs) across batches of `_KEYS_PER_IN`: one `IN` query per batch, which an index on
        `columns` serves without a scan. A tuple holding None matches nothing."""
        info = self._table(schema, table)
        infos = [info.info(name) for name in columns]
        wanted = [v for v in dict.fromkeys(values) if None not in v]
        select = ", ".join(col.select for col in info.columns)
        names = ", ".join(quote_name(col.name) for col in infos)
        target = names if len(infos) == 1 else f"({names})"
        one = "%s" if len(infos) == 1 else "(" + ", ".join(["%s"] * len(infos)) + ")"
        source = f"{quote_name(schema)}.{quote_name(table)}"
        by = ", ".join(f"{quote_name(name)}{' DESC' if desc else ''}" for name, desc in order)
        found: list[dict[str, Any]] = []
        for start in range(0, len(wanted), _KEYS_PER_IN):
            batch = wanted[start : start + _KEYS_PER_IN]
            params: list[Any] = []
            for value in batch:
                params += [after_param(col, part) for col, part in zip(infos, value, strict=True)]
            sql = (
                f"SELECT {select} FROM {source} WHERE {target} IN ({', '.join([one] * len(batch))})"
            )
            if by:
                sql += f" ORDER BY {by}"
            rows = self._session.query(sql, params, f"reading {schema}.{table}")
            found += [self._decode(info, row) for row in rows]
        if len(wanted) > _KEYS_PER_IN and order:
            found.sort(key=_sort_key(order))
        return info.schema, found

    def consistent_read(self, read: Callable[[], _T]) -> tuple[_T, tuple[str, int]]:
        """`read()` inside one consistent-snapshot transaction, and the binlog position
        (file, offset) of that snapshot: exact on MariaDB, read just before it on MySQL (see
        `mysql.consistent_snapshot`), so every transaction up to it is in what `read` saw."""
        with mysql.consistent_snapshot(self._session) as position:
            return read(), position

    def indexes(self, schema: str, table: str) -> list[tuple[str, ...]]:
        """The columns of each index of the table, in index order."""
        return self._session.run(mysql.index_columns, schema, table)

    def foreign_keys(self, schema: str, table: str) -> list[ForeignKey]:
        """The table's FOREIGN KEY constraints."""
        return [
            ForeignKey(cols, ref, refs)
            for cols, ref, refs in self._session.run(mysql.foreign_keys, schema, table)
        ]

    def forget(self) -> None:
        """Drop the cached table descriptions (a table may have been altered)."""
        self._tables.clear()

    def fetch_chunk(
        self,
        schema: str,
        table: str,
        key_columns: Sequence[str],
        after: tuple[Any, ...] | None,
        limit: int,
        condition: tuple[str, Sequence[Any]] | None = None,
    ) -> list[dict[str, Any]]:
        """Up to `limit` rows ordered by `key_columns`, starting after the key `after`.

        `key_columns` must identify a row uniquely (a primary or unique key). `after` holds the
        key of the last row of the previous chunk as this reader returned it
        (`tuple(row[c] for c in key_columns)`); None starts at the beginning. `condition` (SQL
        with `%s` parameters, a mapping's `where`) leaves out the rows it is not true for. A
        chunk shorter than `limit` is the last one. CdcError when a key value cannot be
        compared (a zero date decodes to None and cannot be continued from).
        """
        info = self._table(schema, table)
        columns = [info.info(name) for name in key_columns]
        if not columns:
            raise CdcError(f"reading {schema}.{table} in chunks needs key columns")
        select = ", ".join(col.select for col in info.columns)
        order = ", ".join(quote_name(col.name) for col in columns)
        sql = f"SELECT {select} FROM {quote_name(schema)}.{quote_name(table)}"
        params: list[Any] = []
        conditions = []
        if after is not None:
            if len(after) != len(columns):
                raise CdcError(f"`after` has {len(after)} values for {len(columns)} key columns")
            values = [after_param(col, value) for col, value in zip(columns, after, strict=True)]
            where, params = _after_condition([quote_name(col.name) for col in columns], values)
            conditions.append(where)
        if condition is not None:
            conditions.append(f"({condition[0]})")
            params += condition[1]
        if conditions:
            sql += " WHERE " + " AND ".join(conditions)
        sql += f" ORDER BY {order} LIMIT {int(limit)}"
        rows = self._session.query(sql, params, f"reading {schema}.{table}")
        return [self._decode(info, row) for row in rows]

    def consistent_chunk(
        self,
        schema: str,
        table: str,
        key_columns: Sequence[str],
        after: tuple[Any, ...] | None,
        limit: int,
        condition: tuple[str, Sequence[Any]] | None = None,
    ) -> tuple[TableSchema, list[dict[str, Any]], tuple[str, int]]:
        """`fetch_chunk` inside a consistent-snapshot transaction: the table as it is now, the
        rows, and the binlog position (file, offset) that snapshot corresponds to (see
        `mysql.consistent_snapshot`).

        The table is described afresh for every chunk, so that a snapshot running across an
        ALTER TABLE reads the columns the table has, not those it had when it started.
        """
        for attempt in range(_DESCRIBE_ATTEMPTS):
            self._tables.pop((schema, table), None)
            described = self._table(schema, table).schema
            try:
                with mysql.consistent_snapshot(self._session) as position:
                    rows = self.fetch_chunk(schema, table, key_columns, after, limit, condition)
            except SchemaChanged:
                # Altered between the description and the read: describe it again.
                if attempt + 1 == _DESCRIBE_ATTEMPTS:
                    raise
                continue
            return described, rows, position
        raise AssertionError("unreachable")

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

    def position(self) -> Position:
        """The server's binlog position now (GTIDs, file and offset)."""
        return self._session.run(mysql.current_position, self._session.info())

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> RowReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        infos = tuple(column_info(row, json_columns) for row in rows)
        columns = tuple(info.column for info in infos)
        described = _Table(
            schema=TableSchema(
                schema=schema,
                table=table,
                columns=columns,
                primary_key=tuple(col.name for col in columns if col.is_primary),
            ),
            columns=infos,
            decoders=tuple(decoder(info) for info in infos),
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

    def _decode(self, table: _Table, values: Sequence[Any]) -> dict[str, Any]:
        return {
            col.name: None if value is None else decode(value)
            for col, decode, value in zip(table.columns, table.decoders, values, strict=True)
        }


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


def _sort_key(order: Sequence[tuple[str, bool]]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """Sorting rows merged from several batches the way one ORDER BY would (NULLs first, as
    MySQL sorts them ascending); a descending column is sorted by a reversed wrapper."""

    def key(row: dict[str, Any]) -> tuple[Any, ...]:
        parts: list[Any] = []
        for name, desc in order:
            value = row[name]
            part = (value is not None, value)
            parts.append(_Reversed(part) if desc else part)
        return tuple(parts)

    return key


class _Reversed:
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __lt__(self, other: _Reversed) -> bool:
        return bool(other.value < self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reversed) and self.value == other.value

    __hash__ = None  # type: ignore[assignment]
