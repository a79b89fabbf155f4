"""The source server as the engine uses it: startup checks, the binlog stream, current rows."""

from __future__ import annotations

from cdc.config import ConnectorConfig
from cdc.model.position import Position, ServerInfo
from cdc.source import mysql
from cdc.source.binlog import BinlogSource
from cdc.source.positions import check_position
from cdc.source.prereq import check_source, require
from cdc.source.rows import RowReader


class MysqlSource:
    """The MySQL or MariaDB server a connector config names (`cdc.engine.ports.Source`)."""

    def __init__(self, cfg: ConnectorConfig) -> None:
        self._cfg = cfg

    def inspect(self) -> tuple[ServerInfo, Position]:
        with mysql.Session(self._cfg.source) as session:
            info = session.info()
            conn = session.connection()
            require(check_source(conn, info, self._cfg.schemas()))
            return info, mysql.current_position(conn, info)

    def check_position(self, info: ServerInfo, position: Position) -> None:
        with mysql.Session(self._cfg.source) as session:
            require([check_position(session.connection(), info, position)])

    def stream(self, start: Position, info: ServerInfo) -> BinlogSource:
        return BinlogSource(self._cfg.source, self._cfg.streamed_tables(), start, info)

    def rows(self) -> RowReader:
        return RowReader(self._cfg.source)
