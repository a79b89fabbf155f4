"""Throwaway servers for integration tests: MariaDB, Redis, Redis Sentinel and osmem-server.

Each server runs as a child process on a free port of 127.0.0.1, with its data, socket and log
in its own temporary directory. A server can be stopped gracefully (`stop`, SIGTERM), killed
(`kill`, SIGKILL) and started again on the same port and data directory (`start`, `restart`),
so tests can cut a link and bring it back. `close` kills the process and removes the directory;
it also runs at interpreter exit, and a small watchdog process kills the server and removes the
directory if the test process itself dies without running `atexit` (SIGKILL, CI timeout).

A missing server binary raises `BinaryMissing`; a server that does not become ready raises
`RigError` carrying the tail of its log.

MariaDB and Redis can serve TLS (`tls=ServerTls(...)`, certificates from `certs.Pki`): the rig's
own connections then use TLS without verifying the certificate (it tells its server by the
data directory or process id), so a server with an expired or unknown certificate starts too.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import pymysql
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

LOCALHOST = "127.0.0.1"

# Debian keeps mariadbd in /usr/sbin, which is not on a non-root user's PATH.
_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin")

# The watchdog outlives the test process only long enough to clean up after it: it exits as
# soon as the server exits (a normal stop or restart), and kills the server and removes its
# directory when the owning process disappears.
_WATCHDOG = """
while kill -0 "$1" 2>/dev/null; do
  kill -0 "$2" 2>/dev/null || exit 0
  sleep 1
done
kill -9 "$2" 2>/dev/null
rm -rf "$3"
"""


@dataclass(frozen=True)
class ServerTls:
    """A server's TLS setup (PEM files): its certificate and key, and the CA whose client
    certificates it accepts. With `client_cert` and `client_key` (signed by `ca`), Redis
    requires a client certificate and the rig presents that one; MariaDB asks for client
    certificates per user (`REQUIRE X509`) and needs none for the rig."""

    cert: Path
    key: Path
    ca: Path
    client_cert: Path | None = None
    client_key: Path | None = None


def _unverified_context(tls: ServerTls) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if tls.client_cert is not None:
        context.load_cert_chain(tls.client_cert, tls.client_key)
    return context


class RigError(RuntimeError):
    """A test server could not be started or stopped, or answered unexpectedly."""


class BinaryMissing(RigError):
    """The server's program is not installed on this machine."""


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        port: int = sock.getsockname()[1]
        return port


def find_binary(name: str, package: str) -> str:
    """Absolute path of `name` on PATH or in the sbin directories; BinaryMissing otherwise."""
    path = os.environ.get("PATH", "") + os.pathsep + os.pathsep.join(_SBIN_DIRS)
    found = shutil.which(name, path=path)
    if found is None:
        raise BinaryMissing(f"{name} is not installed (apt-get install {package})")
    return found


class Server:
    """A server process on a fixed port with a private temporary directory.

    Subclasses give the command line and the readiness check; everything about processes,
    ports, logs and cleanup lives here.
    """

    name = "server"
    startup_timeout = 60.0
    stop_timeout = 60.0

    def __init__(self, port: int | None = None) -> None:
        self.host = LOCALHOST
        self.port = port or free_port()
        # A caller-chosen port, or one a client already knows, must never change.
        self._port_fixed = port is not None
        self.dir = Path(tempfile.mkdtemp(prefix=f"rig-{self.name}-"))
        self.log_path = self.dir / f"{self.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self._prepared = False
        self._initialised = False
        self._closed = False
        atexit.register(self.close)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} {self.host}:{self.port} {state} {self.dir}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        """True while the server process is alive (it may not accept connections yet)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id of the running server, None when stopped."""
        return self._proc.pid if self.running and self._proc is not None else None

    def command(self) -> list[str]:
        """The server's command line."""
        raise NotImplementedError

    def prepare(self) -> None:
        """One-time work before the first start (e.g. creating a data directory)."""

    def answers(self) -> bool:
        """True if this server's process, not some other on the port, serves requests now."""
        raise NotImplementedError

    def after_first_start(self) -> None:
        """One-time work once the server first answers (e.g. creating users)."""

    def start(self) -> Self:
        """Start the server if it is not running and wait until it answers.

        The first start picks another free port if the chosen one was taken meanwhile; later
        starts reuse the port and the data directory. Raises RigError with the log tail.
        """
        if self._closed:
            raise RigError(f"{self!r} is closed")
        if self.running:
            return self
        if not self._prepared:
            self.prepare()
            self._prepared = True
        for attempt in range(3):
            try:
                self._launch()
                break
            except RigError:
                if attempt == 2 or self._port_fixed or not self._port_taken():
                    raise
                self.port = free_port()
        self._port_fixed = True
        if not self._initialised:
            self.after_first_start()
            self._initialised = True
        return self

    def stop(self) -> None:
        """Stop gracefully (SIGTERM) and wait; RigError if it has not exited in time."""
        if not self.running:
            self._reap()
            return
        assert self._proc is not None
        self._proc.terminate()
        try:
            self._proc.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RigError(
                f"{self.name} ignored SIGTERM for {self.stop_timeout} s and was killed\n"
                + self.log_tail()
            ) from None
        self._reap()

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash or an OOM kill would."""
        if self.running:
            assert self._proc is not None
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait()
        self._reap()

    def restart(self) -> Self:
        """Stop gracefully, then start again on the same port and data directory."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Kill the server and delete its directory; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
        atexit.unregister(self.close)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server log, headed by its path, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return f"(no log at {self.log_path})"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- last {lines} lines of {self.log_path} ---\n{tail}"

    def new_log_text(self) -> str:
        """What the server logged since it was last launched."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def _launch(self) -> None:
        cmd = self.command()
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            # A session of its own keeps a terminal's Ctrl-C from killing servers before the
            # fixtures' teardown runs.
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                start_new_session=True,
            )
        owner, server = str(os.getpid()), str(self._proc.pid)
        self._watchdog = subprocess.Popen(
            ["/bin/sh", "-c", _WATCHDOG, "rig-watchdog", owner, server, str(self.dir)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        if not self._wait_ready():
            if self.running:
                reason = f"did not answer within {self.startup_timeout} s"
            else:
                reason = "exited during startup"
            self.kill()
            raise RigError(
                f"{self.name} on port {self.port} {reason}\n"
                f"command: {' '.join(cmd)}\n{self.log_tail()}"
            )

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline and self.running:
            if self.answers():
                return True
            time.sleep(0.05)
        return False

    def _port_taken(self) -> bool:
        text = self.new_log_text().lower()
        return "address already in use" in text or "already have another" in text

    def _reap(self) -> None:
        if self._proc is not None:
            self._proc.wait()
            self._proc = None
        if self._watchdog is not None:
            self._watchdog.kill()
            self._watchdog.wait()
            self._watchdog = None


class MariaDB(Server):
    """A MariaDB server with the binlog set up as the connector needs it.

    ROW format, FULL row image and FULL row metadata, server id 1, utf8mb4. `extra_args` are
    appended to the mariadbd command line and win over the defaults (e.g.
    `["--binlog-format=STATEMENT"]`). Root has no password; the replication user is
    `cdc`/`cdc` on `%` and `localhost` with REPLICATION SLAVE, REPLICATION CLIENT and SELECT.
    With `tls` the server offers TLS with that certificate (add `--require-secure-transport=ON`
    to refuse anything else), and `connect` uses TLS.
    """

    name = "mariadb"
    user = "cdc"
    password = "cdc"

    def __init__(
        self,
        extra_args: Sequence[str] = (),
        port: int | None = None,
        tls: ServerTls | None = None,
    ) -> None:
        self._mariadbd = find_binary("mariadbd", "mariadb-server")
        self._install_db = find_binary("mariadb-install-db", "mariadb-server")
        self.extra_args = list(extra_args)
        self.tls = tls
        super().__init__(port)
        self.datadir = self.dir / "data"
        self.socket = self.dir / "mysqld.sock"

    @property
    def url(self) -> str:
        """`mysql://cdc:cdc@127.0.0.1:<port>`, the replication user's address."""
        return f"mysql://{self.user}:{self.password}@{self.host}:{self.port}"

    def _user_args(self) -> list[str]:
        # mariadbd refuses to run as root unless told to; as another user the flag is moot.
        return ["--user=root"] if os.geteuid() == 0 else []

    def prepare(self) -> None:
        (self.dir / "tmp").mkdir(exist_ok=True)
        cmd = [
            self._install_db,
            "--no-defaults",
            "--auth-root-authentication-method=normal",
            f"--datadir={self.datadir}",
            "--skip-test-db",
            "--skip-name-resolve",
            *self._user_args(),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RigError(
                f"mariadb-install-db failed (exit {result.returncode})\n"
                f"command: {' '.join(cmd)}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )

    def command(self) -> list[str]:
        return [
            self._mariadbd,
            "--no-defaults",
            *self._user_args(),
            f"--datadir={self.datadir}",
            f"--port={self.port}",
            f"--socket={self.socket}",
            f"--pid-file={self.dir / 'mysqld.pid'}",
            f"--tmpdir={self.dir / 'tmp'}",
            f"--bind-address={self.host}",
            "--skip-name-resolve",
            "--server-id=1",
            "--log-bin=mysql-bin",
            "--binlog-format=ROW",
            "--binlog-row-image=FULL",
            "--binlog-row-metadata=FULL",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
            "--innodb-buffer-pool-size=64M",
            *self._tls_args(),
            *self.extra_args,
        ]

    def _tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        return [
            f"--ssl-cert={self.tls.cert}",
            f"--ssl-key={self.tls.key}",
            f"--ssl-ca={self.tls.ca}",
        ]

    def answers(self) -> bool:
        try:
            conn = self.connect(connect_timeout=1, read_timeout=2)
            with contextlib.closing(conn), conn.cursor() as cur:
                cur.execute("SELECT @@datadir")
                row = cur.fetchone()
        except pymysql.err.MySQLError:
            return False
        return row is not None and Path(row[0]).resolve() == self.datadir.resolve()

    def after_first_start(self) -> None:
        for host in ("%", "localhost"):
            account = f"'{self.user}'@'{host}'"
            self.sql(f"CREATE USER {account} IDENTIFIED BY '{self.password}'")
            self.sql(f"GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO {account}")

    def connect(self, **kwargs: Any) -> pymysql.connections.Connection[Any]:
        """A PyMySQL connection, as root with autocommit unless `kwargs` say otherwise."""
        settings: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": "root",
            "password": "",
            "autocommit": True,
            "charset": "utf8mb4",
            "connect_timeout": 5,
        }
        if self.tls is not None:
            settings["ssl"] = _unverified_context(self.tls)
        settings.update(kwargs)
        return pymysql.connect(**settings)

    def sql(self, stmt: str, params: Any = None, db: str | None = None) -> int:
        """Run one statement as root (autocommit) and return the affected row count."""
        with contextlib.closing(self.connect(database=db)) as conn, conn.cursor() as cur:
            return int(cur.execute(stmt, params))

    def query(self, stmt: str, params: Any = None, db: str | None = None) -> list[tuple[Any, ...]]:
        """Run one statement as root and return all result rows as tuples."""
        with contextlib.closing(self.connect(database=db)) as conn, conn.cursor() as cur:
            cur.execute(stmt, params)
            return list(cur.fetchall())

    def variable(self, name: str) -> str:
        """The global value of a server variable, as text."""
        rows = self.query("SHOW GLOBAL VARIABLES LIKE %s", (name,))
        if not rows:
            raise RigError(f"mariadb has no variable {name!r}")
        return str(rows[0][1])

    def binary_logs(self) -> list[str]:
        """Names of the binlog files the server still has, oldest first."""
        return [row[0] for row in self.query("SHOW BINARY LOGS")]

    def purge_binary_logs_to_current(self) -> str:
        """Rotate the binlog and delete every file before the new one; returns its name.

        Any position recorded before the call then names purged history. Raises if the server
        keeps an old file, as it does while a replica is still reading one.
        """
        self.sql("FLUSH BINARY LOGS")
        current = str(self.query("SHOW MASTER STATUS")[0][0])
        # MariaDB silently keeps a rotated file until a background thread has written its
        # binlog checkpoint, so the purge is repeated until it took effect. PURGE ... TO names
        # the file exactly; BEFORE NOW() would also keep a file rotated within the same second.
        deadline = time.monotonic() + 10
        while True:
            self.sql(f"PURGE BINARY LOGS TO '{current}'")
            left = self.binary_logs()
            if left == [current]:
                return current
            if time.monotonic() > deadline:
                raise RigError(f"PURGE BINARY LOGS TO {current!r} kept {left} for 10 s")
            time.sleep(0.05)


class Redis(Server):
    """A Redis server without persistence, or with an append-only file when `appendonly`.

    Without `appendonly` a restart starts empty; with it, data survives `stop`, `kill` and
    `restart`. With `tls`, `port` is a TLS port and there is no plain one (`rediss://`).
    """

    name = "redis"
    startup_timeout = 20.0

    def __init__(
        self,
        appendonly: bool = False,
        extra_args: Sequence[str] = (),
        port: int | None = None,
        tls: ServerTls | None = None,
    ) -> None:
        self._binary = find_binary("redis-server", "redis-server")
        self.appendonly = appendonly
        self.extra_args = list(extra_args)
        self.tls = tls
        super().__init__(port)

    @property
    def url(self) -> str:
        """`redis://127.0.0.1:<port>` (database 0), `rediss://` with TLS."""
        scheme = "redis" if self.tls is None else "rediss"
        return f"{scheme}://{self.host}:{self.port}"

    def _port_args(self) -> list[str]:
        if self.tls is None:
            return ["--port", str(self.port)]
        required = self.tls.client_cert is not None
        return [
            "--port",
            "0",
            "--tls-port",
            str(self.port),
            "--tls-cert-file",
            str(self.tls.cert),
            "--tls-key-file",
            str(self.tls.key),
            "--tls-ca-cert-file",
            str(self.tls.ca),
            "--tls-auth-clients",
            "yes" if required else "no",
        ]

    def _tls_settings(self) -> dict[str, Any]:
        """redis-py arguments of the rig's own connections: TLS, not verified."""
        if self.tls is None:
            return {}
        settings: dict[str, Any] = {"ssl": True, "ssl_cert_reqs": "none"}
        if self.tls.client_cert is not None:
            settings.update(ssl_certfile=self.tls.client_cert, ssl_keyfile=self.tls.client_key)
        return settings

    def command(self) -> list[str]:
        return [
            self._binary,
            *self._port_args(),
            "--bind",
            self.host,
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            # Redis writes the AOF before it replies, so a killed process keeps every
            # acknowledged write without paying for an fsync per command.
            "--appendfsync",
            "no",
            "--daemonize",
            "no",
            *self.extra_args,
        ]

    def answers(self) -> bool:
        # One quick try: redis-py's default retries would spend seconds on a silent port.
        probe = redis.Redis(
            host=self.host,
            port=self.port,
            socket_timeout=1,
            socket_connect_timeout=1,
            retry=Retry(NoBackoff(), 0),
            **self._tls_settings(),
        )
        try:
            with probe:
                return bool(probe.info("server")["process_id"] == self.pid)
        except (redis.exceptions.RedisError, OSError):
            return False

    def client(self, db: int = 0) -> redis.Redis:
        """A redis-py client for database `db`, returning str values."""
        return redis.Redis(
            host=self.host,
            port=self.port,
            db=db,
            decode_responses=True,
            socket_timeout=5,
            **self._tls_settings(),
        )


class Sentinel(Server):
    """A Redis Sentinel watching one master as `master_name`, quick to act: a master is down
    after 1 s of silence, and a failover is given up after 3 s. Quorum 1, so one Sentinel can
    fail over on its own. With `password`, the Sentinel itself asks for it (`requirepass`);
    `auth_pass` is the monitored master's password.

    Sentinel rewrites its config file as it learns replicas and other Sentinels; the file stays
    in the server's directory, so a restart keeps what it learnt.
    """

    name = "sentinel"
    startup_timeout = 20.0
    master_name = "cdc"

    def __init__(
        self,
        master_port: int,
        password: str | None = None,
        auth_pass: str | None = None,
        port: int | None = None,
    ) -> None:
        self._binary = find_binary("redis-sentinel", "redis-sentinel")
        self.master_port = master_port
        self.password = password
        self.auth_pass = auth_pass
        super().__init__(port)
        self.config_path = self.dir / "sentinel.conf"

    @property
    def address(self) -> str:
        """`127.0.0.1:<port>`, as `checkpoint.redis.sentinels` lists it."""
        return f"{self.host}:{self.port}"

    def prepare(self) -> None:
        name = self.master_name
        lines = [
            f"port {self.port}",
            f"bind {self.host}",
            f"dir {self.dir}",
            f"sentinel monitor {name} {self.host} {self.master_port} 1",
            f"sentinel down-after-milliseconds {name} 1000",
            f"sentinel failover-timeout {name} 3000",
            f"sentinel parallel-syncs {name} 1",
        ]
        if self.auth_pass is not None:
            lines.append(f"sentinel auth-pass {name} {self.auth_pass}")
        if self.password is not None:
            lines.append(f"requirepass {self.password}")
        self.config_path.write_text("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        return [self._binary, str(self.config_path), "--daemonize", "no"]

    def answers(self) -> bool:
        probe = redis.Redis(
            host=self.host,
            port=self.port,
            password=self.password,
            socket_timeout=1,
            socket_connect_timeout=1,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            with probe:
                return bool(probe.info("server")["process_id"] == self.pid)
        except (redis.exceptions.RedisError, OSError):
            return False

    def client(self) -> redis.Redis:
        """A redis-py client of this Sentinel (for SENTINEL commands), returning str values."""
        return redis.Redis(
            host=self.host,
            port=self.port,
            password=self.password,
            decode_responses=True,
            socket_timeout=5,
        )

    def master_address(self) -> tuple[str, int]:
        """The address this Sentinel gives for the master now."""
        with self.client() as client:
            host, port = client.execute_command(
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
            )
        return str(host), int(port)

    def replicas(self) -> list[dict[str, Any]]:
        """The replicas this Sentinel knows of the master, as SENTINEL REPLICAS gives them."""
        with self.client() as client:
            found: list[dict[str, Any]] = client.sentinel_slaves(self.master_name)
        return found

    def failover(self) -> None:
        """Promote a replica now, as if the master had failed (SENTINEL FAILOVER)."""
        with self.client() as client:
            client.execute_command("SENTINEL", "FAILOVER", self.master_name)


class Osmem(Server):
    """An osmem-server: an in-memory OpenSearch-compatible server. Data does not survive a stop.

    Helpers read the index the way a test wants to compare it; a missing index reads as empty.
    """

    name = "osmem"
    startup_timeout = 30.0
    page_size = 1000

    def __init__(self, port: int | None = None) -> None:
        try:
            import osmem_server

            self._binary = str(osmem_server.resolve_binary())
        except (ImportError, RuntimeError) as exc:
            raise BinaryMissing(
                f"osmem-server is not available ({exc}); pip install -e '.[test]'"
            ) from exc
        super().__init__(port)

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>`."""
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [self._binary, "--addr", f"{self.host}:{self.port}", "--no-stdin-watch", "--no-ja"]

    def answers(self) -> bool:
        # osmem prints one JSON line with its URL once it listens; the log is this process's.
        for line in self.new_log_text().splitlines():
            with contextlib.suppress(ValueError, TypeError):
                if "url" in json.loads(line):
                    return True
        return False

    def request(
        self, method: str, path: str, body: Any = None, ok: Sequence[int] = (200, 201)
    ) -> tuple[int, Any]:
        """Send one JSON request; returns (status, decoded body). RigError if status not in `ok`."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, text = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read()
        decoded = json.loads(text) if text else None
        if status not in ok:
            raise RigError(f"osmem {method} {path}: HTTP {status}: {decoded}")
        return status, decoded

    def get_doc(self, index: str, doc_id: str) -> dict[str, Any] | None:
        """The stored document (`_source`, `_version`, ...); None if it or its index is missing."""
        path = f"/{_quote(index)}/_doc/{_quote(doc_id)}"
        status, body = self.request("GET", path, ok=(200, 404))
        return body if status == 200 and body.get("found") else None

    def refresh(self, index: str) -> None:
        """Make every write to `index` visible to search; a missing index is fine."""
        self.request("POST", f"/{_quote(index)}/_refresh", ok=(200, 404))

    def all_docs(self, index: str) -> dict[str, Any]:
        """Every document of `index` as {id: source}, after a refresh."""
        return {hit["_id"]: hit["_source"] for hit in self._hits(index)}

    def versions(self, index: str) -> dict[str, int]:
        """Every document of `index` as {id: version}, after a refresh."""
        return {hit["_id"]: hit["_version"] for hit in self._hits(index)}

    def count(self, index: str) -> int:
        """Number of documents in `index` after a refresh; 0 if the index is missing."""
        self.refresh(index)
        status, body = self.request("GET", f"/{_quote(index)}/_count", ok=(200, 404))
        return int(body["count"]) if status == 200 else 0

    def delete_index(self, index: str) -> None:
        """Delete `index` (or every index behind the alias `index`); a missing one is fine."""
        status, body = self.request("GET", f"/_alias/{_quote(index)}", ok=(200, 404))
        names = sorted(body) if status == 200 and isinstance(body, dict) else [index]
        for name in names:
            self.request("DELETE", f"/{_quote(name)}", ok=(200, 404))

    def _hits(self, index: str) -> Iterator[dict[str, Any]]:
        # Paging by search_after on _id has no result-window limit and needs no scroll state.
        self.refresh(index)
        query: dict[str, Any] = {"size": self.page_size, "version": True, "sort": [{"_id": "asc"}]}
        while True:
            status, body = self.request("POST", f"/{_quote(index)}/_search", query, ok=(200, 404))
            if status == 404:
                return
            hits = body["hits"]["hits"]
            yield from hits
            if len(hits) < self.page_size:
                return
            query["search_after"] = hits[-1]["sort"]


def _quote(part: str) -> str:
    return urllib.parse.quote(part, safe="")
