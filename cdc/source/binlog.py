"""The binlog stream: committed row changes of the mapped tables, from one start position.

It wraps python-mysql-replication's `BinLogStreamReader` and turns its events into
`Begin` / `RowChange` / `Commit` (see `cdc.model.events`). Three traps of the library are
handled here:

- Its silent reconnect replays from the position the reader was *created* with. We refuse it:
  the stream connection factory raises on a second connect, so a broken link surfaces as
  `SourceUnavailable` and the caller builds a new reader from its own last commit.
- MariaDB resumes only by GTID (file/offset are ignored); MySQL resumes by the *full* executed
  GTID set, or by file/offset when GTIDs are off.
- A commit comes in three shapes: `XidEvent`, `QueryEvent('COMMIT')` and a standalone statement
  (DDL) after a GTID event. Only those produce `Commit`, so positions always name a boundary.
"""

from __future__ import annotations

import fnmatch
import logging
import socket
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pymysql
import pymysql.cursors
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.constants import FIELD_TYPE
from pymysqlreplication.event import (
    GtidEvent,
    HeartbeatLogEvent,
    MariadbGtidEvent,
    QueryEvent,
    XidEvent,
)
from pymysqlreplication.row_event import (
    DeleteRowsEvent,
    UpdateRowsEvent,
    WriteRowsEvent,
)

from cdc.config import SourceConfig
from cdc.errors import PositionError, SourceUnavailable
from cdc.model.events import Begin, Column, Commit, Event, Heartbeat, Kind, RowChange, TableSchema
from cdc.model.gtid import MariadbGtidList, MysqlGtidSet
from cdc.model.position import Flavor, Position, ServerInfo
from cdc.source import mysql, rowdecode, rownative, tablemaps

log = logging.getLogger(__name__)

_BINARY_CHARSET_ID = 63
_MARIADB_FL_STANDALONE = 0x01
_MAX_BYTES_SEEN = 1 << 62

_KIND_BY_TYPE: dict[int, Kind] = {
    FIELD_TYPE.TINY: Kind.INT,
    FIELD_TYPE.SHORT: Kind.INT,
    FIELD_TYPE.LONG: Kind.INT,
    FIELD_TYPE.LONGLONG: Kind.INT,
    FIELD_TYPE.INT24: Kind.INT,
    FIELD_TYPE.DECIMAL: Kind.DECIMAL,
    FIELD_TYPE.NEWDECIMAL: Kind.DECIMAL,
    FIELD_TYPE.FLOAT: Kind.FLOAT,
    FIELD_TYPE.DOUBLE: Kind.FLOAT,
    FIELD_TYPE.DATE: Kind.DATE,
    FIELD_TYPE.NEWDATE: Kind.DATE,
    FIELD_TYPE.DATETIME: Kind.DATETIME,
    FIELD_TYPE.DATETIME2: Kind.DATETIME,
    FIELD_TYPE.TIMESTAMP: Kind.TIMESTAMP,
    FIELD_TYPE.TIMESTAMP2: Kind.TIMESTAMP,
    FIELD_TYPE.TIME: Kind.TIME,
    FIELD_TYPE.TIME2: Kind.TIME,
    FIELD_TYPE.YEAR: Kind.YEAR,
    FIELD_TYPE.ENUM: Kind.ENUM,
    FIELD_TYPE.SET: Kind.SET,
    FIELD_TYPE.BIT: Kind.BIT,
    FIELD_TYPE.JSON: Kind.JSON,
    FIELD_TYPE.GEOMETRY: Kind.GEOMETRY,
}
_TEXT_TYPES = {
    FIELD_TYPE.VARCHAR,
    FIELD_TYPE.VAR_STRING,
    FIELD_TYPE.STRING,
    FIELD_TYPE.TINY_BLOB,
    FIELD_TYPE.MEDIUM_BLOB,
    FIELD_TYPE.LONG_BLOB,
    FIELD_TYPE.BLOB,
}


def _column_key(column: Any) -> tuple[Any, ...]:
    """Everything about a table map column that decoding depends on, hashable."""
    return tuple(
        (name, tuple(value) if isinstance(value, list) else value)
        for name, value in sorted(vars(column).items())
    )


def _changes(event: Any, schema: TableSchema, images: list[dict[str, Any]]) -> Iterator[RowChange]:
    """The row changes of a rows event whose images were read by a compiled decoder."""
    if isinstance(event, UpdateRowsEvent):
        size = int(event.event_size) * 2 // max(1, len(images))
        for i in range(0, len(images), 2):
            yield RowChange(schema, "update", images[i], images[i + 1], size)
        return
    size = int(event.event_size) // max(1, len(images))
    if isinstance(event, WriteRowsEvent):
        for image in images:
            yield RowChange(schema, "insert", None, image, size)
    else:
        for image in images:
            yield RowChange(schema, "delete", image, None, size)


def _kind(col: Any) -> Kind:
    if col.type in _TEXT_TYPES:
        binary = col.charset_id == _BINARY_CHARSET_ID or col.character_set_name in (None, "binary")
        return Kind.BINARY if binary else Kind.STRING
    return _KIND_BY_TYPE.get(col.type, Kind.BINARY)


class _JsonColumns:
    """MariaDB stores JSON as LONGTEXT with a `json_valid` CHECK; find those columns once per
    table (until a DDL statement says they may have changed)."""

    def __init__(self, cfg: SourceConfig) -> None:
        self._session = mysql.Session(cfg)
        self._cache: dict[tuple[str, str], frozenset[str]] = {}

    def get(self, schema: str, table: str) -> frozenset[str]:
        key = (schema, table)
        if key not in self._cache:
            self._cache[key] = self._session.run(mysql.json_columns, schema, table)
        return self._cache[key]

    def forget(self) -> None:
        self._cache.clear()

    def close(self) -> None:
        self._session.close()


class _GtidTracker:
    """The executed GTID state, advanced at every commit."""

    def __init__(self, flavor: Flavor, start: str) -> None:
        self.flavor = flavor
        self.mysql = MysqlGtidSet.parse(start) if flavor == "mysql" else None
        self.mariadb = MariadbGtidList.parse(start) if flavor == "mariadb" else None

    def add(self, gtid: str) -> None:
        if self.mysql is not None:
            self.mysql = self.mysql.add(gtid)
        elif self.mariadb is not None:
            self.mariadb = self.mariadb.add(gtid)

    def __str__(self) -> str:
        return str(self.mysql if self.mysql is not None else self.mariadb)


class BinlogSource:
    """Reads committed row changes of mapped tables from one start position.

    One instance is one connection: `events()` yields until the link breaks, then raises
    `SourceUnavailable`; build a new instance from the last `Commit.position` to go on. It never
    reconnects by itself, so it never replays behind the caller's back.
    """

    def __init__(
        self,
        cfg: SourceConfig,
        tables: Sequence[str],
        start: Position,
        info: ServerInfo,
    ) -> None:
        self._cfg = cfg
        self._tables = list(tables)
        """`schema.table` patterns (globs allowed) of the tables whose changes are read."""
        self._start = start
        self._info = info
        self._reader: BinLogStreamReader | None = None
        self._json = _JsonColumns(cfg)
        self._schemas: dict[tuple[Any, ...], TableSchema] = {}
        self._decoders: dict[tuple[Any, ...], rowdecode.ImageDecoder | None] = {}
        # Per table map object (the library makes one per TABLE_MAP event, so once per
        # transaction and table): the object itself, its schema and its row decoder.
        self._by_map: dict[int, tuple[Any, TableSchema, rowdecode.ImageDecoder | None]] = {}
        self._stream_connects = 0
        # A MySQL stream started from a file/offset cannot know the GTIDs executed before it;
        # recording only those it sees would store a partial set, from which the server would
        # resend everything else. Such a stream keeps resuming by file/offset.
        self._track_gtids = info.flavor == "mariadb" or bool(start.gtid)

    # -- library setup ---------------------------------------------------------------------

    def _connection_factory(self) -> Callable[..., Any]:
        def factory(**settings: Any) -> Any:
            is_stream = settings.get("db") != "information_schema"
            if is_stream:
                self._stream_connects += 1
                if self._stream_connects > 1:
                    # The library is trying to reconnect on its own and would replay from our
                    # original start position: refuse, the caller resumes from its own commit.
                    raise SourceUnavailable("the binlog stream connection was lost")
            try:
                conn = pymysql.connect(**settings)
            except mysql.DRIVER_ERRORS as exc:
                raise mysql.translate_error(
                    exc, f"connecting to {self._cfg.host}:{self._cfg.port}"
                ) from exc
            if is_stream:
                self._tune_socket(conn)
            else:
                tablemaps.enable(conn)
            return conn

        return factory

    def _tune_socket(self, conn: Any) -> None:
        sock: socket.socket | None = getattr(conn, "_sock", None)
        if sock is None:
            return
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def _filters(self) -> dict[str, Any]:
        """Narrow what the library decodes: schemas and table names when no glob needs them."""
        schemas: set[str] = set()
        tables: set[str] = set()
        for pattern in self._tables:
            schema, table = pattern.split(".", 1)
            if any(ch in schema for ch in "*?["):
                return {}
            schemas.add(schema)
            if any(ch in table for ch in "*?["):
                tables.clear()
                tables.add("*")
            elif "*" not in tables:
                tables.add(table)
        result: dict[str, Any] = {"only_schemas": sorted(schemas)}
        if "*" not in tables:
            result["only_tables"] = sorted(tables)
        return result

    def _open(self) -> BinLogStreamReader:
        kwargs: dict[str, Any] = {
            "connection_settings": mysql.connection_settings(self._cfg),
            "server_id": self._cfg.server_id,
            "blocking": True,
            "resume_stream": True,
            "slave_heartbeat": self._cfg.heartbeat_interval,
            "only_events": [
                GtidEvent,
                MariadbGtidEvent,
                QueryEvent,
                XidEvent,
                WriteRowsEvent,
                UpdateRowsEvent,
                DeleteRowsEvent,
                HeartbeatLogEvent,
            ],
            "pymysql_wrapper": self._connection_factory(),
            "enable_logging": False,
            **self._filters(),
        }
        pos = self._start
        if self._info.flavor == "mariadb":
            kwargs["is_mariadb"] = True
            kwargs["auto_position"] = pos.gtid or None
        elif pos.gtid:
            kwargs["auto_position"] = pos.gtid
        else:
            if not pos.file or pos.offset is None:
                raise PositionError(
                    "the start position has neither a GTID set nor a binlog file and offset",
                    hint="run `cdc position reset --to now` (and re-snapshot) to start over",
                )
            kwargs["log_file"] = pos.file
            kwargs["log_pos"] = pos.offset
        return BinLogStreamReader(**kwargs)

    # -- events -----------------------------------------------------------------------------

    def _table_schema(self, event: Any) -> TableSchema:
        table = event.table_map[event.table_id]
        columns = table.columns
        signature = (
            event.schema,
            event.table,
            tuple((c.name, c.type, c.unsigned, c.charset_id, c.is_primary) for c in columns),
        )
        schema = self._schemas.get(signature)
        if schema is None:
            json_cols = (
                self._json.get(event.schema, event.table)
                if self._info.flavor == "mariadb"
                else frozenset()
            )
            cols = tuple(
                Column(
                    name=c.name,
                    kind=Kind.JSON if c.name in json_cols else _kind(c),
                    unsigned=bool(c.unsigned),
                    is_primary=bool(c.is_primary),
                )
                for c in columns
            )
            schema = TableSchema(
                schema=event.schema,
                table=event.table,
                columns=cols,
                primary_key=tuple(c.name for c in cols if c.is_primary),
            )
            if len(self._schemas) > 10_000:
                self._schemas.clear()
            self._schemas[signature] = schema
        return schema

    def _compiled(self, event: Any) -> tuple[TableSchema, rowdecode.ImageDecoder | None]:
        """The schema and the compiled row decoder (None: the library decodes) of the table
        map of a rows event."""
        table = event.table_map[event.table_id]
        hit = self._by_map.get(id(table))
        if hit is not None and hit[0] is table:
            return hit[1], hit[2]
        schema = self._table_schema(event)
        key = tuple(_column_key(c) for c in table.columns)
        if key not in self._decoders:
            if len(self._decoders) > 1_000:
                self._decoders.clear()
            self._decoders[key] = rownative.decoder_for(table.columns)
        decoder = self._decoders[key]
        if len(self._by_map) > 256:
            self._by_map.clear()
        self._by_map[id(table)] = (table, schema, decoder)
        return schema, decoder

    def _mapped(self, schema: str, table: str) -> bool:
        name = f"{schema}.{table}"
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self._tables)

    def events(self) -> Iterator[Event]:
        """Yield events from the start position; raises SourceUnavailable when the link breaks.

        A `Heartbeat` says the server has sent everything before its position (it is idle, or
        it skipped events the stream already has).
        """
        tracker = _GtidTracker(self._info.flavor, self._start.gtid)
        self._reader = reader = self._open()
        in_txn = False
        explicit = False
        pending_gtid: str | None = None
        changes = 0
        try:
            while True:
                try:
                    event = reader.fetchone()
                except mysql.DRIVER_ERRORS as exc:
                    raise mysql.translate_error(exc, "reading the binlog") from exc
                if event is None:
                    raise SourceUnavailable("the server ended the binlog stream")
                if isinstance(event, HeartbeatLogEvent):
                    yield Heartbeat(file=str(event.ident), offset=int(event.packet.log_pos))
                    continue
                if isinstance(event, GtidEvent | MariadbGtidEvent):
                    pending_gtid = event.gtid
                    in_txn = True
                    changes = 0
                    explicit = isinstance(event, MariadbGtidEvent) and not (
                        event.flags & _MARIADB_FL_STANDALONE
                    )
                    yield Begin(gtid=pending_gtid)
                    continue
                if isinstance(event, QueryEvent):
                    query = event.query.strip().upper()
                    if query == "BEGIN":
                        if not in_txn:
                            in_txn = True
                            changes = 0
                            yield Begin(gtid=None)
                        explicit = True
                        continue
                    if query in ("COMMIT", "ROLLBACK") or not explicit:
                        if not in_txn:
                            yield Begin(gtid=None)
                        if query not in ("COMMIT", "ROLLBACK"):
                            self._on_ddl(event)
                        yield self._commit(event, reader, tracker, pending_gtid, changes)
                        in_txn = explicit = False
                        pending_gtid = None
                        continue
                    continue
                if isinstance(event, XidEvent):
                    yield self._commit(event, reader, tracker, pending_gtid, changes)
                    in_txn = explicit = False
                    pending_gtid = None
                    continue
                if isinstance(event, WriteRowsEvent | UpdateRowsEvent | DeleteRowsEvent):
                    if not self._mapped(event.schema, event.table):
                        continue
                    schema, decoder = self._compiled(event)
                    if not in_txn:
                        in_txn = True
                        yield Begin(gtid=None)
                    images = None if decoder is None else rowdecode.event_body(event, decoder)
                    if images is not None:
                        changes += len(images) // (2 if isinstance(event, UpdateRowsEvent) else 1)
                        yield from _changes(event, schema, images)
                        continue
                    rows = event.rows
                    size = int(event.event_size) // max(1, len(rows))
                    for row in rows:
                        changes += 1
                        if isinstance(event, WriteRowsEvent):
                            yield RowChange(schema, "insert", None, row["values"], size)
                        elif isinstance(event, UpdateRowsEvent):
                            yield RowChange(
                                schema, "update", row["before_values"], row["after_values"], size
                            )
                        else:
                            yield RowChange(schema, "delete", row["values"], None, size)
        finally:
            self.close()

    def _on_ddl(self, event: Any) -> None:
        # MariaDB JSON columns look like LONGTEXT in the table map and are found in the live
        # schema; any DDL may change them (also one naming another database), so forget all.
        self._json.forget()
        self._schemas.clear()
        self._by_map.clear()

    def _commit(
        self,
        event: Any,
        reader: BinLogStreamReader,
        tracker: _GtidTracker,
        gtid: str | None,
        changes: int,
    ) -> Commit:
        if gtid:
            tracker.add(gtid)
        position = Position(
            flavor=self._info.flavor,
            gtid=str(tracker) if self._track_gtids else "",
            file=reader.log_file,
            offset=reader.log_pos,
        )
        return Commit(position=position, timestamp=int(event.timestamp), changes=changes)

    def interrupt(self) -> None:
        """Unblock a read in progress from another thread (used when stopping)."""
        conn = getattr(self._reader, "_stream_connection", None)
        sock: socket.socket | None = getattr(conn, "_sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                log.debug("stream socket already closed")

    def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            try:
                reader.close()
            except Exception:
                log.debug("closing the binlog reader failed", exc_info=True)
        self._json.close()
