"""What the binlog stream raises when reading fails: a lost link is `SourceUnavailable` (the
engine reconnects), anything else is a bug that surfaces as it is (before, every unknown
exception became "MySQL unavailable" and was retried forever)."""

from __future__ import annotations

import pymysql
import pytest

from cdc.config import SourceConfig
from cdc.errors import SourceUnavailable
from cdc.model.position import Position, ServerInfo
from cdc.source.binlog import BinlogSource


class _Reader:
    """Stands in for the library's stream reader; its only event is an error."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def fetchone(self) -> None:
        raise self.error

    def close(self) -> None:
        return None


def _source(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> BinlogSource:
    source = BinlogSource(
        SourceConfig(user="cdc", server_id=7),
        ["shop.items"],
        Position("mariadb", "0-1-5"),
        ServerInfo("mariadb", "10.11.0-MariaDB", 1, None, True),
    )
    monkeypatch.setattr(source, "_open", lambda: _Reader(error))
    return source


def test_a_lost_link_ends_the_stream_as_a_transient_error(monkeypatch: pytest.MonkeyPatch) -> None:
    lost = pymysql.err.OperationalError(2013, "Lost connection to server during query")

    with pytest.raises(SourceUnavailable, match=r"reading the binlog: Lost connection"):
        next(_source(monkeypatch, lost).events())


def test_a_bug_while_reading_is_raised_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(KeyError, match="90"):
        next(_source(monkeypatch, KeyError(90)).events())
