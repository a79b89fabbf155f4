"""Can streaming resume from a position, and which positions may an operator set?

`check_position` tells whether a stored position can still be streamed from: not purged, and
not from another server's history. Its passing detail says how far behind the position is and
how long the server keeps binlogs (the purge horizon), so an operator can compare it with the
outages the connector may see. `position_at` and `earliest_position` turn an operator's target
(a binlog file offset, the oldest binlog) into a position the connector can resume from.

Every check only reads, through `cdc.source.mysql`. A lost connection raises
`SourceUnavailable` (transient); everything the server says about a position becomes a failed
`Check` with its fix.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from cdc.errors import CdcError, PositionError
from cdc.model.gtid import MariadbGtidList, MysqlGtidSet
from cdc.model.lag import transactions_behind
from cdc.model.position import Position, ServerInfo
from cdc.source import mysql
from cdc.source.mysql import Connection
from cdc.source.prereq import POSITION_CHECK, RESET_FIX, Check

_WHAT = "checking the position"
_VARIABLES = (
    "gtid_mode",
    "gtid_executed",
    "gtid_purged",
    "gtid_binlog_pos",
    "gtid_binlog_state",
    "binlog_expire_logs_seconds",
    "expire_logs_days",
)

# Binlog events at which a transaction boundary starts: a position there resumes with a whole
# transaction. (Any other event sits inside a transaction or ends one.)
_BOUNDARY_EVENTS = frozenset(
    {
        "Format_desc",
        "Gtid_list",
        "Binlog_checkpoint",
        "Previous_gtids",
        "Gtid",
        "Anonymous_Gtid",
        "Rotate",
        "Stop",
    }
)


# -- can streaming resume from a position? ---------------------------------------------------


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _duration(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.3g} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} hours"
    return f"{seconds:.0f} seconds"


def _expiry(v: dict[str, str]) -> str:
    seconds = int(float(v.get("binlog_expire_logs_seconds") or 0))
    days = float(v.get("expire_logs_days") or 0)
    if seconds > 0:
        return f"binlogs expire after {_duration(seconds)} (binlog_expire_logs_seconds)"
    if days > 0:
        return f"binlogs expire after {_duration(days * 86400)} (expire_logs_days)"
    return "binlogs never expire by age (binlog_expire_logs_seconds is 0)"


def _horizon(v: dict[str, str], logs: Sequence[tuple[str, int]]) -> str:
    """How long the server keeps binlogs, for the operator to compare with possible outages."""
    if not logs:
        return "the server lists no binlogs"
    total = sum(size for _, size in logs)
    files = "1 binlog" if len(logs) == 1 else f"{len(logs)} binlogs"
    return f"the server keeps {files} ({_size(total)}, oldest {logs[0][0]}); {_expiry(v)}"


def _purged(v: dict[str, str]) -> str:
    return f"those changes can never be streamed; {_expiry(v)}"


_PURGED_FIX = (
    f"{RESET_FIX}; to keep it from happening again, keep binlogs longer than the connector may "
    "ever be stopped (binlog_expire_logs_seconds)"
)


def _binlog_number(name: str) -> tuple[str, int] | None:
    base, dot, number = name.rpartition(".")
    return (base, int(number)) if dot and number.isdigit() else None


def _position_check(ok: bool, detail: str, fix: str | None = None) -> Check:
    return Check(POSITION_CHECK, ok, detail, None if ok else fix)


def _mariadb_entries(text: str) -> list[tuple[int, int, int]]:
    """(domain, server, seq) of a MariaDB GTID state, which may hold several servers per
    domain (unlike a position)."""
    entries = []
    for item in re.findall(r"\d+-\d+-\d+", text):
        gtid = MariadbGtidList.parse(item)
        domain = gtid.domains()[0]
        server, seq = gtid.get(domain) or (0, 0)
        entries.append((domain, server, seq))
    return entries


def _check_mariadb_position(conn: Connection, position: Position) -> Check:
    wanted = MariadbGtidList.parse(position.gtid)
    v = mysql.variables(conn, _VARIABLES, _WHAT)
    logs = mysql.binary_logs(conn, _WHAT)
    horizon = _horizon(v, logs)
    state = _mariadb_entries(v.get("gtid_binlog_state", ""))
    last_by_server = {(d, s): seq for d, s, seq in state}

    unknown = []
    for domain in wanted.domains():
        server, seq = wanted.get(domain) or (0, 0)
        last = last_by_server.get((domain, server))
        if last is None or seq > last:
            unknown.append(f"{domain}-{server}-{seq}")
    if unknown:
        return _position_check(
            False,
            f"position {position.describe()} is unknown to this server: its binlogs never held "
            f"{', '.join(unknown)} (gtid_binlog_state is "
            f"{v.get('gtid_binlog_state') or 'empty'}); the position was taken on another "
            "server, or this server's binlog history was reset or has diverged",
            "check that source.host names the server the position was taken from; if it "
            f"does, {RESET_FIX}",
        )

    start_text = mysql.gtid_list(conn, logs[0][0], _WHAT) if logs else None
    if start_text is None:
        return Check(
            POSITION_CHECK,
            False,
            f"cannot tell whether position {position.describe()} was purged: the oldest "
            f"binlog has no Gtid_list event in its first events; {horizon}",
            "if streaming then fails with error 1236, " + RESET_FIX,
            fatal=False,
        )
    start: dict[int, int] = {}
    for d, _, seq in _mariadb_entries(start_text):
        start[d] = max(seq, start.get(d, 0))
    gone = []
    for domain, first_kept in sorted(start.items()):
        applied = (wanted.get(domain) or (0, 0))[1]
        if applied < first_kept:
            gone.append(f"domain {domain} seq {applied + 1} to {first_kept}")
    if gone:
        return _position_check(
            False,
            f"position {position.describe()} was purged: the server no longer has the "
            f"transactions after it ({'; '.join(gone)}); the oldest binlog, {logs[0][0]}, "
            f"starts after {start_text or 'nothing'}; {_purged(v)}",
            _PURGED_FIX,
        )
    behind = transactions_behind(position, Position("mariadb", v.get("gtid_binlog_pos", "")))
    return _position_check(
        True,
        f"position {position.describe()} is still in the binlogs, {behind} transactions "
        f"behind the server; {horizon}",
    )


def _check_mysql_gtid_position(conn: Connection, position: Position, v: dict[str, str]) -> Check:
    wanted = MysqlGtidSet.parse(position.gtid)
    executed = MysqlGtidSet.parse(v.get("gtid_executed", ""))
    purged = MysqlGtidSet.parse(v.get("gtid_purged", ""))
    logs = mysql.binary_logs(conn, _WHAT)
    horizon = _horizon(v, logs)
    extra = wanted.difference(executed)
    if extra:
        return _position_check(
            False,
            f"position {_shorten(position.describe())} holds transactions this server never "
            f"executed ({_shorten(str(extra))}); the position was taken on another server, or "
            "this server's history was reset or has diverged",
            "check that source.host names the server the position was taken from; if it "
            f"does, {RESET_FIX}",
        )
    unread = executed.difference(wanted)
    gone = unread.intersection(purged)
    if gone:
        oldest = logs[0][0] if logs else "none"
        return _position_check(
            False,
            f"position {_shorten(position.describe())} was purged: the server no longer has "
            f"transactions the connector has not read yet ({_shorten(str(gone))}, "
            f"{gone.count()} in all; oldest binlog {oldest}); {_purged(v)}",
            _PURGED_FIX,
        )
    return _position_check(
        True,
        f"position {_shorten(position.describe())} is still in the binlogs, "
        f"{transactions_behind(position, Position('mysql', str(executed)))} transactions behind "
        f"the server; {horizon}",
    )


def _check_file_position(conn: Connection, position: Position, v: dict[str, str]) -> Check:
    logs = mysql.binary_logs(conn, _WHAT)
    horizon = _horizon(v, logs)
    if not position.file or position.offset is None:
        return _position_check(
            False,
            f"position {position.describe()} names neither a GTID set nor a binlog file and offset",
            RESET_FIX,
        )
    if not logs:
        return _position_check(False, "the server lists no binlogs", RESET_FIX)
    sizes = dict(logs)
    span = f"the server has {logs[0][0]} to {logs[-1][0]}"
    number = _binlog_number(position.file)
    first, last = _binlog_number(logs[0][0]), _binlog_number(logs[-1][0])
    if number is None or first is None or last is None or number[0] != first[0]:
        return _position_check(
            False,
            f"binlog {position.file} of position {position.describe()} is not one of this "
            f"server's binlogs ({span}); the position was taken on another server",
            f"check that source.host names the server the position was taken from; if it "
            f"does, {RESET_FIX}",
        )
    # Compare numbers, not names: bin.9 comes before bin.10.
    if number[1] < first[1]:
        return _position_check(
            False,
            f"position {position.describe()} was purged: binlog {position.file} is gone and "
            f"the oldest binlog is {logs[0][0]}; {_purged(v)}",
            _PURGED_FIX,
        )
    if number[1] > last[1]:
        return _position_check(
            False,
            f"position {position.describe()} is unknown to this server: binlog "
            f"{position.file} is newer than its newest binlog ({span}); the position was "
            "taken on another server or the binlogs were reset",
            f"check that source.host names the server the position was taken from; if it "
            f"does, {RESET_FIX}",
        )
    if position.file not in sizes:
        return _position_check(
            False,
            f"binlog {position.file} of position {position.describe()} is missing although "
            f"older and newer binlogs exist ({span}); it was deleted by hand",
            RESET_FIX,
        )
    if position.offset > sizes[position.file]:
        return _position_check(
            False,
            f"position {position.describe()} lies beyond the end of {position.file} "
            f"({sizes[position.file]} bytes); the position was taken on another server",
            f"check that source.host names the server the position was taken from; if it "
            f"does, {RESET_FIX}",
        )
    return _position_check(True, f"position {position.describe()} is still there; {horizon}")


def check_position(conn: Connection, info: ServerInfo, position: Position) -> Check:
    """Can streaming resume from `position` on this server? One Check named "position".

    MariaDB: every (domain, server) of the position must be in `gtid_binlog_state` with at
    least its sequence number (else unknown), and no domain may be below where the oldest
    binlog's Gtid_list starts (else purged); the binlog file is not looked at, the GTID wins.
    MySQL with a GTID set: it must be a subset of `gtid_executed` (else unknown) and no
    transaction after it may be in `gtid_purged` (else purged). MySQL without one: the file
    must still be listed by SHOW BINARY LOGS. A passing check's detail reports how far behind
    the position is and how long the server keeps binlogs. A lost connection raises
    `SourceUnavailable`; any other error is a failed check.
    """
    if position.flavor != info.flavor:
        return _position_check(
            False,
            f"position {position.describe()} was taken on a {position.flavor} server, but "
            f"the source is {info.flavor}",
            f"check that source.host names the server the position was taken from; if it "
            f"does, {RESET_FIX}",
        )
    try:
        if info.flavor == "mariadb":
            return _check_mariadb_position(conn, position)
        v = mysql.variables(conn, _VARIABLES, _WHAT)
        if not position.gtid:
            return _check_file_position(conn, position, v)
        if v.get("gtid_mode", "OFF").upper() == "OFF":
            return _position_check(
                False,
                f"position {_shorten(position.describe())} is a GTID set, but the server runs "
                "with gtid_mode OFF and cannot stream from one",
                "turn gtid_mode back on (see the gtid_mode check), or " + RESET_FIX,
            )
        return _check_mysql_gtid_position(conn, position, v)
    except PositionError as exc:
        return _position_check(False, exc.message, exc.hint or RESET_FIX)
    except CdcError as exc:
        if exc.transient:
            raise
        return _position_check(
            False, exc.message, exc.hint or "fix the failures `cdc check` reports"
        )


def position_at(conn: Connection, info: ServerInfo, file: str, offset: int) -> Position:
    """The transaction boundary at `file:offset`, with the GTID state there when the server
    resumes by GTID. Raises PositionError when the file is gone or no transaction starts
    there."""
    logs = mysql.binary_logs(conn)
    sizes = dict(logs)
    if file not in sizes:
        names = f"{logs[0][0]} to {logs[-1][0]}" if logs else "none"
        raise PositionError(
            f"{file} is not among the server's binlogs ({names})",
            hint="it was purged or never existed; see SHOW BINARY LOGS",
        )
    if offset < 4 or offset > sizes[file]:
        raise PositionError(
            f"offset {offset} is outside {file} (4 to {sizes[file]})",
            hint=f"pick an offset from SHOW BINLOG EVENTS IN '{file}'",
        )
    event = mysql.event_at(conn, file, offset)
    if event is not None and event not in _BOUNDARY_EVENTS:
        raise PositionError(
            f"{file}:{offset} is inside a transaction (a {event} event starts there)",
            hint=f"pick the offset of a Gtid event from SHOW BINLOG EVENTS IN '{file}'; "
            "resuming mid-transaction would lose its first rows",
        )
    if info.flavor == "mariadb":
        # MariaDB streams only by GTID: the file position is translated into the GTID state
        # there (the library would ignore file and offset).
        return Position("mariadb", _mariadb_gtid_at(conn, file, offset), file, offset)
    if info.gtid_mode:
        raise PositionError(
            "this MySQL server has GTIDs on, and the connector resumes it by GTID set, which "
            "cannot be derived from a file offset",
            hint="give the executed set instead: `cdc position set --gtid '<uuid>:1-N,...'`",
        )
    return Position("mysql", "", file, offset)


def earliest_position(conn: Connection, info: ServerInfo) -> Position:
    """The start of the oldest binlog the server still has."""
    logs = mysql.binary_logs(conn)
    if not logs:
        raise PositionError(
            "the server lists no binlogs",
            hint="enable log_bin on the source server",
        )
    oldest = logs[0][0]
    if info.flavor == "mariadb":
        # The GTID state at the start of the oldest file (its Gtid_list event).
        return Position("mariadb", _mariadb_gtid_at(conn, oldest, 4), oldest, 4)
    if info.gtid_mode:
        # Resuming with the purged set asks for every transaction the server still has.
        return Position("mysql", str(MysqlGtidSet.parse(mysql.gtid_purged(conn))), oldest, 4)
    return Position("mysql", "", oldest, 4)


def _mariadb_gtid_at(conn: Connection, file: str, offset: int) -> str:
    gtid = mysql.gtid_at(conn, file, offset)
    if gtid is None:
        raise PositionError(
            f"the server cannot name the GTID position of {file}:{offset}",
            hint=f"pick an offset from SHOW BINLOG EVENTS IN '{file}' where a Gtid event starts",
        )
    return gtid
