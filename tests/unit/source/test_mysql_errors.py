"""Every driver error the source can raise has one translation, and nothing else is translated:
a lost link is retried, wrong credentials and a purged position are terminal, a bug is a bug."""

from __future__ import annotations

import struct

import pymysql
import pytest

from cdc.errors import CdcError, PositionError, SchemaChanged, SourceUnavailable
from cdc.source.mysql import DRIVER_ERRORS, translate_error

OPERATIONAL = pymysql.err.OperationalError


@pytest.mark.parametrize(
    ("error", "kind", "message"),
    [
        (OPERATIONAL(2003, "Can't connect"), SourceUnavailable, "x: Can't connect (error 2003)"),
        (
            OPERATIONAL(2013, "Lost connection"),
            SourceUnavailable,
            "x: Lost connection (error 2013)",
        ),
        (
            OPERATIONAL(1053, "Server shutdown"),
            SourceUnavailable,
            "x: Server shutdown (error 1053)",
        ),
        (OPERATIONAL(1045, "denied for 'cdc'"), CdcError, "x: access denied: denied for 'cdc'"),
        (OPERATIONAL(1236, "purged"), PositionError, "x: the server cannot stream from the"),
        (OPERATIONAL(1054, "Unknown column 'a'"), SchemaChanged, "x: Unknown column 'a' (error"),
        (OPERATIONAL(1412, "Table definition"), SchemaChanged, "x: Table definition (error 1412)"),
        (OPERATIONAL(1227, "Access denied; you need"), CdcError, "x: Access denied; you need"),
        (pymysql.err.InterfaceError(0, ""), SourceUnavailable, "x: connection lost"),
        (pymysql.err.ProgrammingError(1064, "syntax"), CdcError, "x: (1064, 'syntax')"),
        (ConnectionResetError(104, "reset"), SourceUnavailable, "x: connection lost"),
        (TimeoutError("timed out"), SourceUnavailable, "x: connection lost (timed out)"),
        (struct.error("unpack requires"), SourceUnavailable, "x: connection lost"),
        (EOFError(), SourceUnavailable, "x: connection lost (EOFError)"),
    ],
)
def test_each_driver_error_has_its_translation(
    error: BaseException, kind: type[CdcError], message: str
) -> None:
    assert isinstance(error, DRIVER_ERRORS)

    translated = translate_error(error, "x")

    assert type(translated) is kind
    assert translated.message.startswith(message)
    assert translated.transient == (kind is SourceUnavailable)


def test_terminal_errors_say_how_to_fix_them() -> None:
    denied = translate_error(OPERATIONAL(1045, "denied"), "x")
    purged = translate_error(OPERATIONAL(1236, "purged"), "x")

    assert denied.hint == "check source.user and source.password"
    assert purged.hint is not None and "cdc position reset --to now" in purged.hint


def test_anything_else_is_not_a_driver_error_and_is_not_translated() -> None:
    for bug in (KeyError("table_id"), AttributeError("'NoneType' has no attribute 'read'")):
        assert not isinstance(bug, DRIVER_ERRORS)
        with pytest.raises(TypeError, match="not a driver error"):
            translate_error(bug, "x")


def test_a_connector_error_passes_through_unchanged() -> None:
    lost = SourceUnavailable("the binlog stream connection was lost")

    assert translate_error(lost, "x") is lost
