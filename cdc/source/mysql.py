"""MySQL/MariaDB connections: the one module that sends SQL and translates driver errors.

Every catalog and SHOW statement the connector sends is a function here, taking a PyMySQL
connection: server identity and settings, the binlog position and files, grants, and the
catalog (columns, keys, tables, JSON checks). `Session` is a connection that opens on first use
and again after the link broke, for the long-lived readers; the row reads of `cdc.source.rows`
(SELECTs it builds for a table's columns) go through it too. The binlog stream has a connection
of its own, made by the library with `connection_settings` and the same error translation.

Every connection uses TLS as `source.tls` says (`connection_settings` builds the context
anew for each, so renewed certificates are picked up on the next connection), or none at all
without it: also when the server offers TLS, whatever the PyMySQL version would do by default.

Errors: the driver's exceptions (`DRIVER_ERRORS`) become the connector's own at this boundary
(`translate_error`): a lost link is `SourceUnavailable` (retried), wrong credentials, a TLS
certificate refused (`cdc.tls`), a server requiring TLS the config does not give, or a purged
position a terminal `CdcError`. Anything else that escapes a query is a bug and is not
translated, so it surfaces with its traceback instead of being retried forever.
"""

from __future__ import annotations

import contextlib
import logging
import re
import ssl
import struct
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Concatenate, ParamSpec, TypeAlias, TypeVar

import pymysql
from pymysql.constants import CLIENT

from cdc import tls
from cdc.config import SourceConfig
from cdc.errors import CdcError, ConfigError, PositionError, SchemaChanged, SourceUnavailable
from cdc.model.gtid import MariadbGtidList, MysqlGtidSet
from cdc.model.position import Flavor, Position, ServerInfo

log = logging.getLogger(__name__)

Connection: TypeAlias = "pymysql.connections.Connection[Any]"
P = ParamSpec("P")
T = TypeVar("T")

DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    pymysql.err.MySQLError,
    OSError,
    # The binlog library parses packets with struct and reads sockets to EOF: a link cut in the
    # middle of a packet surfaces as one of these.
    struct.error,
    EOFError,
)
"""What PyMySQL and python-mysql-replication raise when the server or the link fails."""

# Server error codes meaning "the link is gone" rather than "the request is wrong".
_CONNECTION_ERRORS = frozenset({1053, 1152, 1159, 1161, 1927})
_ACCESS_DENIED = 1045
# MySQL's "Connections using insecure transport are prohibited while
# --require_secure_transport=ON" (MariaDB answers such a login with access denied instead), and
# PyMySQL's "SSL is required but the server doesn't support it".
_TLS_REQUIRED = 3159
_TLS_UNSUPPORTED = 2026
_TLS_FIELDS = "source.tls"
_ADD_TLS = "add source.tls (with ca_file: the CA certificate that signed the server's certificate)"
_POSITION_UNAVAILABLE = 1236
_WRONG_OFFSET = 1220
# A query naming a column the table no longer has, and InnoDB's "table definition has changed,
# please retry transaction": both mean the table was altered under the reader.
_SCHEMA_CHANGED = frozenset({1054, 1412})
_JSON_CHECK = re.compile(r"json_valid\(`([^`]+)`\)", re.IGNORECASE)


def translate_error(exc: BaseException, what: str) -> CdcError:
    """The connector's error for a driver error (one of `DRIVER_ERRORS`) raised while doing
    `what`; a `CdcError` is returned as it is."""
    if isinstance(exc, CdcError):
        return exc
    refused = tls.failure(exc)
    if refused is not None:
        return tls.refusal(refused, what, _TLS_FIELDS)
    if isinstance(exc, pymysql.err.OperationalError):
        code = exc.args[0] if exc.args else 0
        message = exc.args[1] if len(exc.args) > 1 else str(exc)
        if code == _TLS_REQUIRED or "insecure transport" in str(message):
            return CdcError(
                f"{what}: the server accepts only TLS connections: {message}", hint=_ADD_TLS
            )
        if code == _TLS_UNSUPPORTED:
            return CdcError(
                f"{what}: the server does not offer TLS, which source.tls asks for",
                hint="enable TLS on the server (ssl_cert and ssl_key in its config), or "
                "remove source.tls",
            )
        if code == _ACCESS_DENIED:
            return CdcError(
                f"{what}: access denied: {message}",
                hint="check source.user and source.password",
            )
        if code == _POSITION_UNAVAILABLE:
            return PositionError(
                f"{what}: the server cannot stream from the requested position: {message}",
                hint="the binlogs holding it were purged or the GTID is unknown; run "
                "`cdc position reset --to now` and re-snapshot the tables",
            )
        # 2000 and up are the client's own codes: connection refused, lost, timed out.
        if code in _CONNECTION_ERRORS or code >= 2000:
            return SourceUnavailable(f"{what}: {message} (error {code})")
        if code in _SCHEMA_CHANGED:
            return SchemaChanged(f"{what}: {message} (error {code})")
        return CdcError(f"{what}: {message} (error {code})")
    if isinstance(exc, pymysql.err.InterfaceError | OSError | struct.error | EOFError):
        return SourceUnavailable(f"{what}: connection lost ({str(exc) or type(exc).__name__})")
    if isinstance(exc, pymysql.err.MySQLError):
        return CdcError(f"{what}: {exc}")
    raise TypeError(f"not a driver error: {type(exc).__name__}") from exc


def connect(cfg: SourceConfig, **extra: Any) -> Connection:
    """A connection with the configured timeouts and TLS, in autocommit mode."""
    what = f"connecting to {cfg.host}:{cfg.port}"
    conn = pymysql.Connection(
        **connection_settings(cfg), autocommit=True, defer_connect=True, **extra
    )
    try:
        conn.connect()
    except DRIVER_ERRORS as exc:
        error = translate_error(exc, what)
        if _code(exc) != _ACCESS_DENIED:
            raise error from exc
        # A login can also be refused for how it came: MariaDB answers a plaintext one to a
        # server with require_secure_transport=ON so, and one without a client certificate by
        # a user who must give one (REQUIRE X509, SUBJECT or ISSUER).
        if cfg.tls is None and offers_tls(conn):
            also = "if the server requires TLS (require_secure_transport=ON), " + _ADD_TLS
        elif cfg.tls is not None and cfg.tls.client_cert is None:
            also = (
                "if the user must log in with a certificate (REQUIRE X509), set "
                "source.tls.client_cert and client_key"
            )
        else:
            raise error from exc
        raise CdcError(error.message, hint=f"{error.hint}; or, {also}") from exc
    return conn


def _code(exc: BaseException) -> int:
    return int(exc.args[0]) if isinstance(exc, pymysql.err.MySQLError) and exc.args else 0


def connection_settings(cfg: SourceConfig) -> dict[str, Any]:
    """PyMySQL connection arguments for the configured server (also the binlog stream's), with
    a new TLS context from `source.tls`, or TLS turned off without it."""
    settings: dict[str, Any] = {
        "host": cfg.host,
        "port": cfg.port,
        "user": cfg.user,
        "password": cfg.password,
        "connect_timeout": cfg.connect_timeout,
        "read_timeout": cfg.read_timeout,
        "write_timeout": cfg.read_timeout,
        "charset": "utf8mb4",
    }
    if cfg.tls is None:
        settings["ssl_disabled"] = True
        return settings
    try:
        settings["ssl"] = tls.context(
            verify=cfg.tls.verify,
            verify_identity=cfg.tls.verify_identity,
            ca_file=cfg.tls.ca_file,
            client_cert=cfg.tls.client_cert,
            client_key=cfg.tls.client_key,
        )
    except ssl.SSLError as exc:
        raise tls.refusal(exc, f"connecting to {cfg.host}:{cfg.port}", _TLS_FIELDS) from exc
    except OSError as exc:
        raise ConfigError(f"{_TLS_FIELDS}: cannot read a TLS file: {exc}") from exc
    return settings


def offers_tls(conn: Connection) -> bool:
    """Whether the server said it speaks TLS when `conn` connected (also one that then failed
    to log in)."""
    return bool(getattr(conn, "server_capabilities", 0) & CLIENT.SSL)


def tls_version(conn: Connection) -> str | None:
    """The TLS version of `conn` as the server reports it (`TLSv1.3`); None when the connection
    is not encrypted."""
    rows = query(conn, "SHOW SESSION STATUS LIKE 'Ssl_version'", what="reading the TLS state")
    version = str(rows[0][1]) if rows else ""
    return version or None


def query(
    conn: Connection, sql: str, params: Sequence[Any] | None = None, what: str = "querying"
) -> list[tuple[Any, ...]]:
    """Every row `sql` returns, as tuples. Driver errors are translated (see the module)."""
    try:
        with conn.cursor() as cur:
            cur.execute(sql, None if params is None else list(params))
            return [tuple(row) for row in cur.fetchall()]
    except DRIVER_ERRORS as exc:
        raise translate_error(exc, what) from exc


class Session:
    """One ordinary connection to the source server (not the binlog stream).

    It connects on first use, and again after a failure that broke the link. The session runs
    with time_zone '+00:00', so TIMESTAMP values come back in UTC, as the binlog holds them.
    Not thread-safe.
    """

    def __init__(self, cfg: SourceConfig) -> None:
        self.cfg = cfg
        self._conn: Connection | None = None
        self._info: ServerInfo | None = None

    @property
    def address(self) -> str:
        return f"{self.cfg.host}:{self.cfg.port}"

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def connection(self) -> Connection:
        if self._conn is None:
            self._conn = connect(self.cfg, init_command="SET time_zone = '+00:00'")
        return self._conn

    def run(
        self, read: Callable[Concatenate[Connection, P], T], *args: P.args, **kw: P.kwargs
    ) -> T:
        """`read(connection, *args)`, connecting first if needed; a failure that leaves the link
        unusable closes it, so the next call connects again."""
        try:
            return read(self.connection(), *args, **kw)
        except CdcError as exc:
            if exc.transient:
                self.close()
            raise

    def query(
        self, sql: str, params: Sequence[Any] | None = None, what: str = "querying"
    ) -> list[tuple[Any, ...]]:
        """`query` on this session; `what` is completed with the server's address."""
        return self.run(query, sql, params, f"{what} from {self.address}")

    def info(self) -> ServerInfo:
        """The server's identity (asked once per session)."""
        if self._info is None:
            self._info = self.run(server_info, self.cfg.flavor)
        return self._info

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except DRIVER_ERRORS:
                log.debug("closing the connection to %s failed", self.address, exc_info=True)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the server --------------------------------------------------------------------------------


def variables(
    conn: Connection, names: Sequence[str], what: str = "reading server variables"
) -> dict[str, str]:
    """Global variables by lowercase name; a variable the server lacks is absent."""
    placeholders = ",".join(["%s"] * len(names))
    rows = query(
        conn, f"SHOW GLOBAL VARIABLES WHERE Variable_name IN ({placeholders})", names, what
    )
    return {str(name).lower(): "" if value is None else str(value) for name, value in rows}


def server_info(conn: Connection, flavor: str = "auto") -> ServerInfo:
    """The flavor (the server's, unless `flavor` names one), version, ids and GTID mode."""
    v = variables(conn, ["version", "server_id", "server_uuid", "gtid_mode"])
    version = v.get("version", "")
    detected: Flavor = "mariadb" if "mariadb" in version.lower() else "mysql"
    actual: Flavor = detected if flavor == "auto" else flavor  # type: ignore[assignment]
    return ServerInfo(
        flavor=actual,
        version=version,
        server_id=int(v.get("server_id", "0") or 0),
        server_uuid=v.get("server_uuid") or None,
        gtid_mode=actual == "mariadb" or v.get("gtid_mode", "OFF").upper() == "ON",
    )


def binlog_file_position(conn: Connection) -> tuple[str, int]:
    """The binlog file and offset the server writes next. MySQL 8.4 renamed the statement;
    older servers and MariaDB know only the old name."""
    try:
        rows = query(conn, "SHOW BINARY LOG STATUS", what="reading the binlog position")
    except CdcError as exc:
        if exc.transient:
            raise
        rows = query(conn, "SHOW MASTER STATUS", what="reading the binlog position")
    if not rows:
        raise CdcError(
            "binary logging is disabled on the source server",
            hint="start the server with log_bin enabled (and binlog_format=ROW)",
        )
    return str(rows[0][0]), int(rows[0][1])


def current_position(conn: Connection, info: ServerInfo) -> Position:
    """The server's position now: what a connector starting "from now" resumes after."""
    file, offset = binlog_file_position(conn)
    if info.flavor == "mariadb":
        text = query(conn, "SELECT @@GLOBAL.gtid_binlog_pos", what="reading the GTID position")
        gtid = str(MariadbGtidList.parse(str(text[0][0] or "")))
    elif info.gtid_mode:
        text = query(conn, "SELECT @@GLOBAL.gtid_executed", what="reading the GTID position")
        gtid = str(MysqlGtidSet.parse(str(text[0][0] or "")))
    else:
        gtid = ""
    return Position(flavor=info.flavor, gtid=gtid, file=file, offset=offset)


def binary_logs(conn: Connection, what: str = "listing the binlogs") -> list[tuple[str, int]]:
    """(name, size) of every binlog the server still has, oldest first."""
    return [(str(row[0]), int(row[1])) for row in query(conn, "SHOW BINARY LOGS", what=what)]


def event_at(conn: Connection, file: str, offset: int) -> str | None:
    """The type of the binlog event starting at `file:offset`; None at the end of the file.
    Raises PositionError when no event starts there."""
    try:
        with conn.cursor() as cur:
            cur.execute(f"SHOW BINLOG EVENTS IN %s FROM {int(offset)} LIMIT 1", (file,))
            row = cur.fetchone()
    except DRIVER_ERRORS as exc:
        if isinstance(exc, pymysql.err.MySQLError) and exc.args and exc.args[0] == _WRONG_OFFSET:
            raise PositionError(
                f"no binlog event starts at {file}:{offset}",
                hint=f"pick an offset from SHOW BINLOG EVENTS IN '{file}' (the Pos column of a "
                "Gtid event, where a transaction starts)",
            ) from None
        raise translate_error(exc, "reading the binlog events") from exc
    return None if row is None else str(row[2])


def gtid_list(conn: Connection, file: str, what: str = "reading a binlog") -> str | None:
    """The Gtid_list event of a MariaDB binlog (the GTID state when the file was started), as
    the list inside its brackets; None when the file's first events hold none."""
    for row in query(conn, "SHOW BINLOG EVENTS IN %s LIMIT 5", (file,), what):
        if str(row[2]) == "Gtid_list":
            return str(row[5]).strip().strip("[]")
    return None


def gtid_at(conn: Connection, file: str, offset: int) -> str | None:
    """MariaDB's GTID state at `file:offset` (BINLOG_GTID_POS), canonical; None if unknown."""
    rows = query(conn, "SELECT BINLOG_GTID_POS(%s, %s)", (file, offset), "reading the binlog")
    value = rows[0][0] if rows else None
    return None if value is None else str(MariadbGtidList.parse(str(value)))


def gtid_purged(conn: Connection) -> str:
    """MySQL's set of GTIDs no longer in any binlog, as the server prints it."""
    rows = query(conn, "SELECT @@GLOBAL.gtid_purged", what="reading gtid_purged")
    return str(rows[0][0] or "")


def current_user(conn: Connection, what: str = "reading the current user") -> str:
    """The account as a GRANT statement names it, e.g. `'cdc'@'%'`."""
    rows = query(conn, "SELECT CURRENT_USER()", what=what)
    user, _, host = str(rows[0][0]).rpartition("@")
    return f"'{sql_quote(user)}'@'{sql_quote(host)}'"


def sql_quote(text: str) -> str:
    """`text` ready to sit between single quotes in SQL."""
    return text.replace("\\", "\\\\").replace("'", "''")


def quote_name(name: str) -> str:
    """A MySQL identifier in backticks."""
    return "`" + name.replace("`", "``") + "`"


def grant_lines(conn: Connection, info: ServerInfo, what: str = "reading grants") -> list[str]:
    """SHOW GRANTS of the connected user, including the roles active in this session."""
    if info.flavor == "mariadb":
        # MariaDB's plain SHOW GRANTS adds the privileges of the current role.
        return [str(row[0]) for row in query(conn, "SHOW GRANTS", what=what)]
    roles = str(query(conn, "SELECT CURRENT_ROLE()", what=what)[0][0] or "NONE")
    sql = "SHOW GRANTS FOR CURRENT_USER()"
    if roles.upper() != "NONE":
        # MySQL lists a role's privileges only when asked USING it; CURRENT_ROLE() prints the
        # active roles already quoted as that clause wants them.
        sql += f" USING {roles}"
    return [str(row[0]) for row in query(conn, sql, what=what)]


# -- the catalog -------------------------------------------------------------------------------


def column_definitions(conn: Connection, schema: str, table: str) -> list[tuple[Any, ...]]:
    """Per column in table order: name, data type, column type, character set, column key,
    numeric precision, octet length (from information_schema.COLUMNS)."""
    return query(
        conn,
        "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, CHARACTER_SET_NAME, COLUMN_KEY, "
        "NUMERIC_PRECISION, CHARACTER_OCTET_LENGTH FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
        [schema, table],
        "reading the columns of a table",
    )


def json_columns(conn: Connection, schema: str, table: str) -> frozenset[str]:
    """The columns MariaDB declared JSON: it stores them as LONGTEXT with a `json_valid` CHECK,
    and the binlog shows only the LONGTEXT."""
    rows = query(
        conn,
        "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
        "WHERE CONSTRAINT_SCHEMA = %s AND TABLE_NAME = %s",
        [schema, table],
        "reading JSON column definitions",
    )
    return frozenset(name for (clause,) in rows for name in _JSON_CHECK.findall(str(clause)))


def unique_keys(conn: Connection, schema: str, table: str) -> dict[str, list[tuple[str, bool]]]:
    """Every unique key (the primary key included) by name: its columns in key order, each with
    whether it is nullable."""
    rows = query(
        conn,
        "SELECT s.INDEX_NAME, s.COLUMN_NAME, c.IS_NULLABLE FROM information_schema.STATISTICS s"
        " JOIN information_schema.COLUMNS c ON c.TABLE_SCHEMA = s.TABLE_SCHEMA"
        " AND c.TABLE_NAME = s.TABLE_NAME AND c.COLUMN_NAME = s.COLUMN_NAME"
        " WHERE s.TABLE_SCHEMA = %s AND s.TABLE_NAME = %s AND s.NON_UNIQUE = 0"
        " ORDER BY s.INDEX_NAME, s.SEQ_IN_INDEX",
        [schema, table],
        "reading the unique keys of a table",
    )
    keys: dict[str, list[tuple[str, bool]]] = {}
    for index, column, nullable in rows:
        keys.setdefault(str(index), []).append((str(column), str(nullable) == "YES"))
    return keys


def index_columns(conn: Connection, schema: str, table: str) -> list[tuple[str, ...]]:
    """The columns of every index of a table, in index order (what a lookup can use)."""
    rows = query(
        conn,
        "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS"
        " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY INDEX_NAME, SEQ_IN_INDEX",
        [schema, table],
        "reading the indexes of a table",
    )
    indexes: dict[str, list[str]] = {}
    for index, column in rows:
        indexes.setdefault(str(index), []).append(str(column))
    return [tuple(columns) for columns in indexes.values()]


def foreign_keys(
    conn: Connection, schema: str, table: str
) -> list[tuple[tuple[str, ...], str, tuple[str, ...]]]:
    """The FOREIGN KEYs of a table: (its columns, `schema.table` referenced, the referenced
    columns), columns in constraint order."""
    rows = query(
        conn,
        "SELECT CONSTRAINT_NAME, COLUMN_NAME, REFERENCED_TABLE_SCHEMA, REFERENCED_TABLE_NAME,"
        " REFERENCED_COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE"
        " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND REFERENCED_TABLE_NAME IS NOT NULL"
        " ORDER BY CONSTRAINT_NAME, ORDINAL_POSITION",
        [schema, table],
        "reading the foreign keys of a table",
    )
    keys: dict[str, tuple[list[str], str, list[str]]] = {}
    for name, column, ref_schema, ref_table, ref_column in rows:
        entry = keys.setdefault(str(name), ([], f"{ref_schema}.{ref_table}", []))
        entry[0].append(str(column))
        entry[2].append(str(ref_column))
    return [(tuple(cols), ref, tuple(refs)) for cols, ref, refs in keys.values()]


def base_tables(conn: Connection) -> list[str]:
    """Every base table the user can see, as `schema.table` (system schemas left out)."""
    rows = query(
        conn,
        "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES"
        " WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA NOT IN"
        " ('mysql', 'information_schema', 'performance_schema', 'sys')",
        what="listing tables",
    )
    return sorted(f"{schema}.{table}" for schema, table in rows)


def estimated_rows(conn: Connection, schema: str, table: str) -> int:
    """The server's estimate of the table's row count (cheap; exact for MyISAM)."""
    rows = query(
        conn,
        "SELECT TABLE_ROWS FROM information_schema.TABLES"
        " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
        [schema, table],
        "estimating the size of a table",
    )
    return int(rows[0][0] or 0) if rows else 0


@contextlib.contextmanager
def consistent_snapshot(session: Session) -> Iterator[tuple[str, int]]:
    """A read-only consistent-snapshot transaction, yielding the binlog position (file, offset)
    its snapshot corresponds to.

    MariaDB reports the snapshot's exact position (`binlog_snapshot_file/position`). MySQL has
    no such status, so the position is read just before the snapshot starts: it may be a little
    earlier than the rows, and the transactions in between are then applied again by the
    stream after the rows, which converges to the same documents.
    """
    mariadb = session.info().flavor == "mariadb"
    position = None if mariadb else session.run(binlog_file_position)
    session.query("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY", what="starting a read")
    try:
        if mariadb:
            status = dict(
                session.query(
                    "SHOW STATUS LIKE 'binlog_snapshot_%%'", what="reading the snapshot position"
                )
            )
            position = (
                str(status["Binlog_snapshot_file"]),
                int(status["Binlog_snapshot_position"]),
            )
        assert position is not None
        yield position
    finally:
        if session.connected:
            session.query("COMMIT", what="ending a read")
