"""Prerequisite checks of the source server, run before streaming and by `cdc check`.

`check_source` inspects the server's settings and the connected user's privileges and returns
one `Check` per prerequisite (`cdc.source.positions.check_position` adds the one about the
stored position). `require` turns the fatal failures among them into one exception whose
message is a single paragraph naming every problem and its fix, so the operator fixes
everything in one round instead of one per restart.

Each check only reads (global variables and grants, through `cdc.source.mysql`). A lost
connection while checking raises `SourceUnavailable` (transient); everything the server says
about itself becomes a `Check`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cdc.errors import PositionError, PrerequisiteError
from cdc.model.position import ServerInfo
from cdc.source import mysql
from cdc.source.mysql import Connection

log = logging.getLogger(__name__)

POSITION_CHECK = "position"
"""The `Check.name` of `check_position`; `require` raises `PositionError` for it."""

RESET_FIX = "run `cdc position reset --to now` and re-snapshot the tables (`cdc snapshot --all`)"
"""The way out of an unusable position."""
_CONFIG_FILE = "in the [mysqld] section of the server config file so it survives a restart"
_NEW_SESSIONS = "connections already open keep the old value until they reconnect"

_VARIABLES = (
    "log_bin",
    "binlog_format",
    "binlog_row_image",
    "binlog_row_metadata",
    "binlog_transaction_compression",
    "log_bin_compress",
    "gtid_mode",
    "enforce_gtid_consistency",
    "gtid_executed",
    "gtid_binlog_pos",
)


@dataclass(frozen=True, slots=True)
class Check:
    """The outcome of one prerequisite check.

    `detail` says what was found (and, for a failure, why it matters); `fix` names the exact
    setting or statement that repairs a failure and is None when `ok`. A failure with
    `fatal=False` is a warning: the connector works, with a limitation `detail` names.
    """

    name: str
    ok: bool
    detail: str
    fix: str | None
    fatal: bool = True


# -- settings ----------------------------------------------------------------------------------


def _version_tuple(version: str) -> tuple[int, int, int] | None:
    match = re.match(r"\s*(\d+)\.(\d+)\.(\d+)", version)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def _check_version(info: ServerInfo) -> Check:
    found = _version_tuple(info.version)
    if info.flavor == "mariadb":
        product, minimum, why = "MariaDB", (10, 5), "binlog_row_metadata arrived in 10.5"
    else:
        product, minimum, why = "MySQL", (8, 0), "binlog_row_metadata arrived in 8.0.1"
    if found is None:
        return Check(
            "server_version",
            False,
            f"cannot read a version number from {info.version!r}",
            f"make sure the source is {product} {minimum[0]}.{minimum[1]} or later",
            fatal=False,
        )
    if found[:2] < minimum:
        return Check(
            "server_version",
            False,
            f"{product} {info.version} is too old: the connector needs "
            f"{product} {minimum[0]}.{minimum[1]} or later ({why}, and without it column "
            "names cannot be read from the binlog)",
            f"upgrade the server to {product} {minimum[0]}.{minimum[1]} or later",
        )
    return Check("server_version", True, f"{product} {info.version}", None)


def _set_global(name: str, value: str, *, per_session: bool = False) -> str:
    fix = f"SET GLOBAL {name} = {value}, and {name} = {value} {_CONFIG_FILE}"
    return f"{fix} ({_NEW_SESSIONS})" if per_session else fix


def _check_log_bin(info: ServerInfo, v: dict[str, str]) -> Check:
    value = v.get("log_bin", "OFF").upper()
    if value in ("ON", "1"):
        return Check("log_bin", True, "binary logging is enabled (log_bin is ON)", None)
    if info.flavor == "mariadb":
        fix = (
            "add log_bin = mysql-bin (and a server_id other than 0) to the [mysqld] section of "
            "the server config file and restart the server; log_bin cannot be set at runtime"
        )
    else:
        fix = (
            "remove skip-log-bin / disable-log-bin from the server config file or command line "
            "(MySQL 8 logs by default) and restart the server; log_bin cannot be set at runtime"
        )
    return Check(
        "log_bin",
        False,
        f"binary logging is disabled (log_bin is {value}), so there is no binlog to stream",
        fix,
    )


def _check_equals(v: dict[str, str], name: str, wanted: str, why: str) -> Check:
    value = v.get(name, "")
    if value.upper() == wanted:
        return Check(name, True, f"{name} is {value}", None)
    shown = value or "not set"
    return Check(
        name,
        False,
        f"{name} is {shown}; the connector needs {wanted} {why}",
        _set_global(name, wanted, per_session=True),
    )


def _check_row_metadata(info: ServerInfo, v: dict[str, str]) -> Check:
    why = (
        "so that every row event carries its table's column names: otherwise rows written "
        "before an ALTER TABLE are decoded with today's columns or as UNKNOWN_COLn"
    )
    value = v.get("binlog_row_metadata")
    if value is None:
        first = "MariaDB 10.5" if info.flavor == "mariadb" else "MySQL 8.0.1"
        return Check(
            "binlog_row_metadata",
            False,
            f"the server has no binlog_row_metadata setting (it arrived in {first}); the "
            f"connector needs binlog_row_metadata = FULL {why}",
            f"upgrade the server to {first} or later and set binlog_row_metadata = FULL",
        )
    if value.upper() == "FULL":
        return Check("binlog_row_metadata", True, f"binlog_row_metadata is {value}", None)
    return Check(
        "binlog_row_metadata",
        False,
        f"binlog_row_metadata is {value}; the connector needs FULL {why}",
        _set_global("binlog_row_metadata", "FULL"),
    )


def _check_compression(info: ServerInfo, v: dict[str, str]) -> Check:
    if info.flavor == "mariadb":
        name, what, per_session = "log_bin_compress", "compressed binlog events", False
    else:
        name, what, per_session = (
            "binlog_transaction_compression",
            "compressed transaction payloads",
            True,
        )
    value = v.get(name)
    if value is None:
        return Check("binlog_compression", True, f"the server has no {name} setting", None)
    if value.upper() in ("OFF", "0"):
        return Check("binlog_compression", True, f"{name} is {value}", None)
    fix = (
        f"{_set_global(name, 'OFF', per_session=per_session)}; binlogs written while it was ON "
        f"stay unreadable, so if the stored position lies in them, {RESET_FIX}"
    )
    return Check(
        "binlog_compression",
        False,
        f"{name} is {value}; the binlog library the connector uses cannot read {what}",
        fix,
    )


def _check_gtid_mode(info: ServerInfo, v: dict[str, str]) -> Check:
    if info.flavor == "mariadb":
        current = v.get("gtid_binlog_pos") or "none yet"
        return Check(
            "gtid_mode",
            True,
            f"MariaDB writes a GTID for every transaction (gtid_binlog_pos is {current})",
            None,
        )
    mode = v.get("gtid_mode", "OFF").upper()
    enforce = v.get("enforce_gtid_consistency", "OFF").upper()
    found = f"gtid_mode is {mode}, enforce_gtid_consistency is {enforce}"
    if mode == "ON" and enforce == "ON":
        return Check("gtid_mode", True, found, None)
    return Check(
        "gtid_mode",
        False,
        f"{found}: the connector works, but keeps its position as a binlog file and offset, "
        "which does not survive a failover to another server",
        "SET GLOBAL enforce_gtid_consistency = ON, then SET GLOBAL gtid_mode = OFF_PERMISSIVE, "
        "ON_PERMISSIVE and ON one step at a time (before ON, wait until "
        "Ongoing_anonymous_transaction_count is 0), and gtid_mode = ON and "
        f"enforce_gtid_consistency = ON {_CONFIG_FILE}",
        fatal=False,
    )


def _tagged_gtids(gtid_set: str) -> list[str]:
    """The `uuid:tag:...` entries of a MySQL GTID set (MySQL 8.4 tags start with a letter)."""
    tagged = []
    for item in gtid_set.split(","):
        parts = [part.strip() for part in item.split(":")[1:]]
        if any(part[:1].isalpha() or part[:1] == "_" for part in parts):
            tagged.append(item.strip())
    return tagged


def _check_tagged_gtids(v: dict[str, str]) -> Check:
    tagged = _tagged_gtids(v.get("gtid_executed", ""))
    if not tagged:
        return Check("tagged_gtids", True, "gtid_executed holds no tagged GTIDs", None)
    shown = ", ".join(tagged[:3]) + (f" and {len(tagged) - 3} more" if len(tagged) > 3 else "")
    return Check(
        "tagged_gtids",
        False,
        f"gtid_executed holds tagged GTIDs ({shown}); MySQL 8.4's uuid:tag:N form cannot be "
        "read by the binlog library the connector uses, so it cannot track its position on "
        "this server",
        "stop assigning tagged GTIDs (SET gtid_next = 'AUTOMATIC:<tag>' or "
        "'<uuid>:<tag>:<n>'); the tagged GTIDs already in gtid_executed stay there until the "
        "server's GTID history is reset (RESET BINARY LOGS AND GTIDS), and until then this "
        "server cannot be a source",
    )


# -- privileges --------------------------------------------------------------------------------

_QUOTED = r"`(?:[^`]|``)*`"
_GRANT_RE = re.compile(
    rf"GRANT\s+(?P<privileges>(?:[^`]|{_QUOTED})+?)\s+ON\s+"
    r"(?:(?P<routine>FUNCTION|PROCEDURE|PACKAGE\s+BODY|PACKAGE)\s+|TABLE\s+)?"
    rf"(?P<db>\*|{_QUOTED})\.(?P<table>\*|{_QUOTED})\s+TO\s",
    re.IGNORECASE | re.DOTALL,
)
_ALL = "ALL PRIVILEGES"
# Other names of the same privilege. MariaDB 10.5+ made REPLICATION CLIENT an alias of
# BINLOG MONITOR, which is what it needs for SHOW BINARY LOGS; MySQL's REPLICATION CLIENT
# allows the same statements, so both flavors are checked under one name.
_ALIASES = {
    "ALL": _ALL,
    "REPLICATION REPLICA": "REPLICATION SLAVE",
    "REPLICATION CLIENT": "BINLOG MONITOR",
}


@dataclass(frozen=True, slots=True)
class _Grant:
    """Table-wide privileges on `db`.`table`; None means `*` (every database or table)."""

    privileges: frozenset[str]
    db: str | None
    table: str | None


def _unquote(name: str) -> str | None:
    return None if name == "*" else name[1:-1].replace("``", "`")


def _split_privileges(text: str) -> list[str]:
    """Split on commas outside column lists and quotes: `SELECT (a, b), INSERT`."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    quoted = False
    for ch in text:
        if ch == "`":
            quoted = not quoted
        elif not quoted and ch in "()":
            depth += 1 if ch == "(" else -1
        elif ch == "," and depth == 0 and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


def _parse_grants(lines: Iterable[str]) -> list[_Grant]:
    """Table-wide privileges from SHOW GRANTS lines; role, proxy and routine grants and
    column-level privileges are left out (they grant nothing the connector needs)."""
    grants = []
    for line in lines:
        match = _GRANT_RE.match(line.strip())
        if match is None or match["routine"]:
            continue
        privileges = set()
        for part in _split_privileges(match["privileges"]):
            # A column-level privilege keeps its column list, e.g. "SELECT (`ID`)", so it never
            # equals the table-wide name a check looks for.
            name = " ".join(part.split()).upper()
            privileges.add(_ALIASES.get(name, name))
        grants.append(
            _Grant(frozenset(privileges), _unquote(match["db"]), _unquote(match["table"]))
        )
    return grants


def _like(pattern: str) -> re.Pattern[str]:
    """A database name in a grant is a LIKE pattern: `_` and `%` are wildcards, `\\` escapes."""
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


def _grants_in(grants: Sequence[_Grant], schema: str, privilege: str) -> list[_Grant]:
    return [
        g
        for g in grants
        if (privilege in g.privileges or _ALL in g.privileges)
        and (g.db is None or _like(g.db).fullmatch(schema))
    ]


def _check_replication_privileges(info: ServerInfo, grants: Sequence[_Grant], user: str) -> Check:
    held = set().union(*(g.privileges for g in grants if g.db is None))
    client = "BINLOG MONITOR" if info.flavor == "mariadb" else "REPLICATION CLIENT"
    # SUPER still allows SHOW BINARY LOGS / SHOW MASTER STATUS on the servers that have it.
    needed = [
        ("REPLICATION SLAVE", {"REPLICATION SLAVE"}, "to read the binlog stream"),
        (client, {"BINLOG MONITOR", "SUPER"}, "to list binlogs and read the binlog position"),
    ]
    missing = [(name, why) for name, grants_it, why in needed if not held & (grants_it | {_ALL})]
    if not missing:
        names = " and ".join(name for name, _, _ in needed)
        return Check("replication_privileges", True, f"{user} has {names} on *.*", None)
    reasons = "; ".join(f"{name} {why}" for name, why in missing)
    return Check(
        "replication_privileges",
        False,
        f"{user} lacks {' and '.join(name for name, _ in missing)} on *.* (the connector needs "
        f"{reasons})",
        f"GRANT {', '.join(name for name, _ in missing)} ON *.* TO {user}",
    )


def _is_pattern(schema: str) -> bool:
    return any(ch in schema for ch in "*?[")


def _check_select(grants: Sequence[_Grant], schemas: Sequence[str], user: str) -> Check:
    wanted = sorted(set(schemas))
    if not wanted:
        return Check("select_privilege", True, "no mapped schemas to check", None)
    global_select = any(
        g.db is None and g.table is None and ({"SELECT", _ALL} & g.privileges) for g in grants
    )
    if global_select:
        return Check("select_privilege", True, f"{user} may SELECT in every schema", None)
    missing: list[str] = []
    partial: list[str] = []
    # Only a global grant, which is absent, proves SELECT in every schema a pattern matches.
    patterns = [schema for schema in wanted if _is_pattern(schema)]
    for schema in wanted:
        if _is_pattern(schema):
            continue
        found = _grants_in(grants, schema, "SELECT")
        if not any(g.table is None for g in found):
            (partial if found else missing).append(schema)
    if not missing and not partial and not patterns:
        return Check("select_privilege", True, f"{user} may SELECT in {', '.join(wanted)}", None)
    problems = []
    if missing:
        problems.append(f"has no SELECT privilege in {', '.join(missing)}")
    if partial:
        problems.append(f"may SELECT only in some tables of {', '.join(partial)}")
    if patterns:
        problems.append(
            f"has no global SELECT to cover every schema matching {', '.join(patterns)}"
        )
    grants_needed = [
        f"GRANT SELECT ON `{schema.replace('`', '``')}`.* TO {user}" for schema in missing + partial
    ]
    if patterns:
        grants_needed.append(f"GRANT SELECT ON *.* TO {user}")
    return Check(
        "select_privilege",
        False,
        f"{user} {' and '.join(problems)}; the connector needs SELECT on every mapped table to "
        "snapshot it and read its column definitions",
        "; ".join(grants_needed),
        # Table or pattern grants may well cover every mapped table: warn, do not refuse.
        fatal=bool(missing),
    )


def check_source(conn: Connection, info: ServerInfo, schemas: Sequence[str]) -> list[Check]:
    """Check the source server's settings and the connected user's privileges.

    Returns, in this order: server_version, log_bin, binlog_format, binlog_row_image,
    binlog_row_metadata, binlog_compression, gtid_mode, tagged_gtids (MySQL only),
    replication_privileges, select_privilege (SELECT in each of `schemas`, globally or per
    schema). A lost connection raises `SourceUnavailable`; other server errors `CdcError`.
    """
    what = "checking the source server"
    v = mysql.variables(conn, _VARIABLES, what)
    user = mysql.current_user(conn, what)
    grants = _parse_grants(mysql.grant_lines(conn, info, what))
    checks = [
        _check_version(info),
        _check_log_bin(info, v),
        _check_equals(
            v,
            "binlog_format",
            "ROW",
            "because only row events say which rows changed",
        ),
        _check_equals(
            v,
            "binlog_row_image",
            "FULL",
            "because every document is indexed from the complete row, which other images "
            "leave partly empty",
        ),
        _check_row_metadata(info, v),
        _check_compression(info, v),
        _check_gtid_mode(info, v),
    ]
    if info.flavor == "mysql":
        checks.append(_check_tagged_gtids(v))
    checks.append(_check_replication_privileges(info, grants, user))
    checks.append(_check_select(grants, schemas, user))
    return checks


def require(checks: Sequence[Check]) -> None:
    """Raise unless every fatal check passed; warnings are logged.

    The exception's message is one paragraph listing every fatal failure with its fix. It is
    a `PositionError` when the position check is the only kind of failure and a
    `PrerequisiteError` otherwise (server settings come first: resetting the position does
    not help while they are wrong).
    """
    for check in checks:
        if not check.ok and not check.fatal:
            log.warning("%s: %s (fix: %s)", check.name, check.detail, check.fix)
    failures = [c for c in checks if not c.ok and c.fatal]
    if not failures:
        return
    only_position = all(c.name == POSITION_CHECK for c in failures)
    head = (
        "The stored position cannot be used"
        if only_position
        else "The source server does not meet the connector's prerequisites"
    )
    items = [f"{c.detail}. Fix: {c.fix or 'see above'}." for c in failures]
    if len(items) == 1:
        message = f"{head}: {items[0]}"
    else:
        numbered = " ".join(f"({i}) {item}" for i, item in enumerate(items, 1))
        message = f"{head} ({len(items)} problems): {numbered}"
    raise (PositionError if only_position else PrerequisiteError)(message)
