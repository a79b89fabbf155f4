"""Secrets stay secret: the connector runs with distinctive passwords for MySQL, Redis and
Elasticsearch through every path an operator uses, and nothing it writes contains them.

Every path is exercised with the secrets in use (the MySQL user, the Redis server and, on the
failed-login paths, the Elasticsearch stand-in all check them): `cdc run` (until caught up, and
a long run whose status, health and `/metrics` page are read while it streams), `cdc status`,
`health`, `check`, `position show/export`, `dlq list/replay` after a document was rejected,
`verify --json`, `snapshot`, `init`, logs as text and as JSON, failed logins to each server,
configs that do not validate, and secrets given as environment variables and as `*_FILE`s
through the image's entrypoint. Everything written is collected: command output, logs, the
heartbeat, checkpoint, snapshot progress and dead letters in Redis, the files of a file store
and of exports, the documents in the index. None of it may contain a secret, its base64 forms
(at any alignment, so a secret inside a larger base64 blob counts) or the basic-auth token.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from harness import CdcProcess, wait_for, write_config
from rig import MariaDB, Osmem, Redis, free_port
from typer.testing import CliRunner

from cdc.cli.app import app
from cdc.config import load_config
from cdc.state.backends import open_stores

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "docker" / "cdc-entrypoint.sh"

MYSQL_USER = "sekrit_user"
ES_USER = "es_writer"
MYSQL_PASSWORD = "Mysql-S3cret-7f2c91"
REDIS_PASSWORD = "Redis-S3cret-4b8e10"
ES_PASSWORD = "Es-S3cret-9d3a55"
ES_API_KEY = "EsKey-S3cret-1c7e42"
# A mistyped password is nearly the password: the wrong ones must not show either.
WRONG_MYSQL_PASSWORD = "Mysql-Wr0ng-5e6f77"
WRONG_REDIS_PASSWORD = "Redis-Wr0ng-2a9c33"

SECRETS = {
    "MySQL password": MYSQL_PASSWORD,
    "Redis password": REDIS_PASSWORD,
    "Elasticsearch password": ES_PASSWORD,
    "Elasticsearch API key": ES_API_KEY,
    "wrong MySQL password": WRONG_MYSQL_PASSWORD,
    "wrong Redis password": WRONG_REDIS_PASSWORD,
}

ITEMS_DDL = "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(50) NOT NULL, price VARCHAR(20))"
# `price` is text in MySQL and an integer in the index: 'abc' is rejected and parked.
MAPPINGS = {"properties": {"price": {"type": "integer"}}}
HOOK = {"transform": "opaque_hook:hook"}


# -- what may not appear -------------------------------------------------------------------------


def _base64_cores(raw: bytes) -> list[str]:
    """The base64 characters that depend on `raw` alone, for each of the three alignments it
    can have inside a longer encoded value, in the standard and URL-safe alphabets."""
    cores = []
    for skip in range(3):
        encoded = base64.b64encode(b"\0" * skip + raw).decode()
        # Character i encodes bits [6i, 6i + 6); keep those inside raw's bits.
        start, end = -(-8 * skip // 6), 8 * (skip + len(raw)) // 6
        core = encoded[start:end]
        cores += [core, core.replace("+", "-").replace("/", "_")]
    return cores


def _forms() -> list[tuple[str, str]]:
    """(description, text) of every spelling of a secret that counts as a leak."""
    forms: list[tuple[str, str]] = []
    for name, secret in SECRETS.items():
        forms.append((name, secret))
        forms += [(f"{name} in base64", core) for core in _base64_cores(secret.encode())]
    for user, secret in ((ES_USER, ES_PASSWORD), (MYSQL_USER, MYSQL_PASSWORD)):
        token = base64.b64encode(f"{user}:{secret}".encode()).decode()
        forms.append((f"basic-auth token of {user}", token))
    return list(dict.fromkeys(forms))


FORMS = _forms()


def _masked(text: str) -> str:
    for name, form in FORMS:
        text = text.replace(form, f"<{name}>")
    return text


@dataclass
class Exposure:
    """Everything the connector wrote or answered during a test, as (where, text)."""

    env: dict[str, str]
    items: list[tuple[str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, where: str, text: str | bytes) -> None:
        if isinstance(text, bytes):
            text = text.decode(errors="replace")
        with self._lock:
            self.items.append((where, text))

    def cdc(
        self,
        *args: str,
        config: Path,
        via_entrypoint: bool = False,
        timeout: float = 60,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `cdc ARGS --config CONFIG` without a terminal and keep what it printed."""
        command = ["sh", str(ENTRYPOINT)] if via_entrypoint else [sys.executable, "-m", "cdc"]
        result = subprocess.run(
            [*command, *args, "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            env=env or self.env,
            check=False,
        )
        shown = f"`cdc {' '.join(args)}` with {config.name}"
        self.add(f"{shown} (stdout)", result.stdout)
        self.add(f"{shown} (stderr)", result.stderr)
        return result

    def cli(self, *args: str, config: Path) -> subprocess.CompletedProcess[str]:
        """Run `cdc ARGS --config CONFIG` in this process and keep what it printed."""
        result = CliRunner().invoke(app, [*args, "--config", str(config)], env=self.env)
        shown = f"`cdc {' '.join(args)}` with {config.name}"
        self.add(f"{shown} (stdout)", result.stdout)
        self.add(f"{shown} (stderr)", result.stderr)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            self.add(f"{shown} (exception)", repr(result.exception))
        return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)

    def add_tree(self, root: Path, skip: Path | None = None) -> int:
        """Every file under `root` (but not under `skip`); returns how many."""
        count = 0
        for path in sorted(root.rglob("*")):
            if path.is_file() and (skip is None or skip not in path.parents):
                self.add(str(path), path.read_bytes())
                count += 1
        return count

    def add_redis(self, client: redis.Redis) -> list[str]:
        """Every key of the Redis database, with its value and time to live; returns the keys."""
        keys = sorted(k.decode() for k in client.scan_iter("*"))
        for key in keys:
            kind = client.type(key).decode()  # type: ignore[union-attr]
            value: Any
            if kind == "string":
                value = client.get(key)
            elif kind == "hash":
                value = client.hgetall(key)
            elif kind == "stream":
                value = client.xrange(key)
            elif kind == "list":
                value = client.lrange(key, 0, -1)
            elif kind == "set":
                value = client.smembers(key)
            else:
                value = client.zrange(key, 0, -1, withscores=True)
            self.add(f"Redis {kind} {key} (ttl {client.pttl(key)} ms)", _text(value))
        return keys

    def assert_clean(self) -> None:
        hits = []
        for where, text in self.items:
            for name, form in FORMS:
                at = text.find(form)
                if at >= 0:
                    snippet = _masked(text[max(0, at - 120) : at + len(form) + 120])
                    hits.append(f"the {name} appears in {where}: ...{snippet}...")
        assert not hits, f"{len(hits)} leak(s):\n" + "\n".join(hits)


def _text(value: Any) -> str:
    """Redis values as text, nested bytes decoded (so JSON inside is searched as written)."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_text(k)}: {_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple | set):
        return "[" + ", ".join(_text(v) for v in value) + "]"
    return str(value)


def _clean_env() -> dict[str, str]:
    """This process's environment without anything the entrypoint or a config could read."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MYSQL_", "ES_", "REDIS_", "CDC_TEST_", "CDC_CONFIG"))
    }


# -- servers that check the secrets ---------------------------------------------------------------


@pytest.fixture(scope="module")
def secret_user(mariadb: MariaDB) -> Iterator[str]:
    """A replication user whose password is MYSQL_PASSWORD (the rig's `cdc` user's grants)."""
    for host in ("%", "localhost"):
        account = f"'{MYSQL_USER}'@'{host}'"
        mariadb.sql(f"DROP USER IF EXISTS {account}")
        mariadb.sql(f"CREATE USER {account} IDENTIFIED BY '{MYSQL_PASSWORD}'")
        mariadb.sql(f"GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO {account}")
    yield MYSQL_USER
    mariadb.start()
    for host in ("%", "localhost"):
        mariadb.sql(f"DROP USER IF EXISTS '{MYSQL_USER}'@'{host}'")


@dataclass
class LockedRedis:
    """A private Redis that requires REDIS_PASSWORD."""

    server: Redis

    def url(self, password: str | None = REDIS_PASSWORD, db: int = 0) -> str:
        auth = f":{password}@" if password is not None else ""
        return f"redis://{auth}{self.server.host}:{self.server.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(
            host=self.server.host,
            port=self.server.port,
            db=db,
            password=REDIS_PASSWORD,
            socket_timeout=5,
        )


@pytest.fixture
def locked_redis(make_redis: Callable[..., Redis]) -> LockedRedis:
    server = make_redis()
    # Set after the start: the rig's readiness probe does not authenticate.
    with server.client() as client:
        client.config_set("requirepass", REDIS_PASSWORD)
    locked = LockedRedis(server)
    with locked.client() as client:
        assert client.ping()
    return locked


class RefusingEs:
    """An HTTP server answering every request 401 as Elasticsearch does for bad credentials,
    keeping the Authorization headers it was sent."""

    def __init__(self) -> None:
        self.authorizations: list[str] = []
        refusing = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _refuse(self) -> None:
                refusing.authorizations.append(self.headers.get("Authorization", ""))
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                reason = f"unable to authenticate user [{ES_USER}] for REST request [{self.path}]"
                error = {"type": "security_exception", "reason": reason}
                body = json.dumps(
                    {"error": {"root_cause": [error], **error}, "status": 401}
                ).encode()
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="security" charset="UTF-8"')
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _refuse

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def refusing_es() -> Iterator[RefusingEs]:
    server = RefusingEs()
    yield server
    server.close()


# -- configs ----------------------------------------------------------------------------------


@pytest.fixture
def items(mariadb: MariaDB, fresh_db: str) -> str:
    """`items` in a fresh database with one good row and one the index rejects."""
    mariadb.sql(ITEMS_DDL, db=fresh_db)
    mariadb.sql("INSERT INTO items VALUES (1, 'one', '10'), (2, 'two', 'abc')", db=fresh_db)
    return fresh_db


def _config(
    path: Path,
    mariadb: MariaDB,
    db: str,
    index: str,
    *,
    es_url: str,
    redis_url: str | None,
    source: dict[str, Any],
    sink: dict[str, Any] | None = None,
    name: str | None = None,
    mapping: dict[str, Any] | None = None,
    **sections: Any,
) -> Path:
    sections.setdefault("snapshot", {"mode": "initial"})
    return write_config(
        path,
        port=mariadb.port,
        es_url=es_url,
        redis_url=redis_url,
        tables=[
            {"table": f"{db}.items", "index": index, "index_mappings": MAPPINGS, **(mapping or {})}
        ],
        name=name or path.stem,
        source={"user": MYSQL_USER, **source},
        sink=sink or {},
        **sections,
    )


def _metrics_port(log: str) -> int | None:
    found = re.search(r"metrics on http://[\d.]+:(\d+)/metrics", log)
    return int(found.group(1)) if found else None


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


# -- the tests ----------------------------------------------------------------------------------


def test_every_path_with_secrets_from_the_environment_leaves_no_trace(
    mariadb: MariaDB,
    osmem: Osmem,
    secret_user: str,
    locked_redis: LockedRedis,
    items: str,
    es_index: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {
        "CDC_TEST_MYSQL_PASSWORD": MYSQL_PASSWORD,
        "CDC_TEST_REDIS_PASSWORD": REDIS_PASSWORD,
        "CDC_TEST_ES_PASSWORD": ES_PASSWORD,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    seen = Exposure({**_clean_env(), **env, "PYTHONUNBUFFERED": "1"})
    config = _config(
        tmp_path / "env.yaml",
        mariadb,
        items,
        es_index,
        es_url=osmem.url,
        redis_url=locked_redis.url("${CDC_TEST_REDIS_PASSWORD}"),
        source={"password": "${CDC_TEST_MYSQL_PASSWORD}"},
        sink={"username": ES_USER, "password": "${CDC_TEST_ES_PASSWORD}"},
        log_format="text",
    )
    cfg = load_config(config)
    assert cfg.source.password == MYSQL_PASSWORD and cfg.sink.password == ES_PASSWORD

    checked = seen.cdc("check", config=config)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    before = seen.cdc("status", config=config)
    assert before.returncode == 0, before.stderr
    first = seen.cdc("run", "--until-caught-up", config=config)
    assert first.returncode == 0, first.stderr
    assert "parked" in first.stderr

    # A long run: status, health, position and /metrics while it streams, then a stop.
    with CdcProcess(config) as proc, open_stores(cfg) as stores:

        def streaming() -> bool:
            beat = stores.heartbeats.read()
            return beat is not None and beat.running and _metrics_port(proc.log()) is not None

        wait_for(streaming, what="the connector to run")
        mariadb.sql("INSERT INTO items VALUES (3, 'three', '30'), (4, 'four', 'xyz')", db=items)
        wait_for(lambda: stores.letters.size() == 2, what="the second dead letter")
        port = _metrics_port(proc.log())
        assert port is not None
        seen.add("/metrics while running", _metrics(port))
        during = [
            seen.cdc("health", config=config),
            seen.cdc("status", config=config),
            seen.cdc("status", "--json", config=config),
            seen.cdc("position", "show", config=config),
            seen.cdc("dlq", "list", config=config),
        ]
        assert [r.returncode for r in during] == [0] * len(during), [r.stderr for r in during]
        with locked_redis.client() as client:
            seen.add_redis(client)
        proc.terminate()
        assert proc.wait() == 0, proc.log()
    seen.add(f"log of the long `cdc run` ({proc.log_path})", proc.log())

    exported = tmp_path / "exported" / "position.json"
    reads = {
        "status": ("status",),
        "status --json": ("status", "--json"),
        "health": ("health",),
        "position show": ("position", "show"),
        "position show --json": ("position", "show", "--json"),
        "position export": ("position", "export", str(exported)),
        "dlq list": ("dlq", "list"),
        "dlq list --json": ("dlq", "list", "--json"),
    }
    with ThreadPoolExecutor(4) as pool:
        done = pool.map(lambda args: seen.cdc(*args, config=config), reads.values())
        after = dict(zip(reads, done, strict=True))
    # Then, one after the other, the commands that write.
    after["dlq replay"] = seen.cdc("dlq", "replay", "--yes", config=config)
    after["verify --json"] = seen.cdc("verify", "--json", config=config)
    after["snapshot --all"] = seen.cdc("snapshot", "--all", config=config)
    codes = {name: result.returncode for name, result in after.items()}
    # Health says stopped; the rejected rows are still rejected, so replay and verify fail.
    assert codes == {
        **dict.fromkeys(after, 0),
        "health": 1,
        "dlq replay": 1,
        "verify --json": 1,
    }, {name: r.stdout + r.stderr for name, r in after.items()}
    assert "still rejected 2" in after["dlq replay"].stdout
    assert exported.exists()

    # `cdc init` reads the MySQL password from the environment and names only the variable;
    # a password in --redis-url is written as ${REDIS_PASSWORD}.
    written = tmp_path / "init.yaml"
    init = subprocess.run(
        [
            *(sys.executable, "-m", "cdc", "init", "--tables", f"{items}.*"),
            *("--user", MYSQL_USER, "--port", str(mariadb.port), "--es-url", osmem.url),
            *("--redis-url", locked_redis.url(), "--output", str(written)),
        ],
        capture_output=True,
        text=True,
        env={**seen.env, "MYSQL_PASSWORD": MYSQL_PASSWORD},
        timeout=60,
        check=False,
    )
    seen.add("`cdc init` (stdout)", init.stdout)
    seen.add("`cdc init` (stderr)", init.stderr)
    assert init.returncode == 0, init.stderr
    assert "next: export MYSQL_PASSWORD=... REDIS_PASSWORD=... and run" in init.stderr
    secrets = {"MYSQL_PASSWORD": MYSQL_PASSWORD, "REDIS_PASSWORD": REDIS_PASSWORD}
    from_init = load_config(written, secrets)
    assert from_init.checkpoint.redis is not None
    assert from_init.checkpoint.redis.url == locked_redis.url()
    assert from_init.source.password == MYSQL_PASSWORD

    with locked_redis.client() as client:
        keys = seen.add_redis(client)
    assert {f"cdc:{config.stem}:{kind}" for kind in ("checkpoint", "heartbeat", "dlq")} <= set(
        keys
    ), keys
    seen.add(f"index {es_index}", json.dumps(osmem.all_docs(es_index)))
    assert seen.add_tree(tmp_path) >= 3
    seen.assert_clean()


def test_failed_logins_and_json_logs_leave_no_trace(
    mariadb: MariaDB,
    osmem: Osmem,
    secret_user: str,
    locked_redis: LockedRedis,
    refusing_es: RefusingEs,
    items: str,
    es_index: str,
    tmp_path: Path,
) -> None:
    seen = Exposure({**_clean_env(), "PYTHONUNBUFFERED": "1"})
    # These configs hold the secrets as they are (the other tests use references): not scanned.
    configs = tmp_path / "configs"
    configs.mkdir()

    def config(
        name: str,
        *,
        mysql: str = MYSQL_PASSWORD,
        redis_url: str | None = None,
        es_url: str = osmem.url,
        sink: dict[str, Any] | None = None,
        connector: str | None = None,
        index: str = es_index,
        log_format: str = "json",
        mapping: dict[str, Any] | None = None,
    ) -> Path:
        return _config(
            configs / f"{name}.yaml",
            mariadb,
            items,
            index,
            es_url=es_url,
            redis_url=redis_url or locked_redis.url(),
            source={"password": mysql},
            sink=sink or {"api_key": ES_API_KEY},
            name=connector,
            mapping=mapping,
            log_format=log_format,
        )

    good = config("api_key")
    # Named as the good one: `status` then measures the lag of its checkpoint on the server.
    wrong_mysql = config("wrong_mysql", mysql=WRONG_MYSQL_PASSWORD, connector="api_key")
    wrong_redis = config("wrong_redis", redis_url=locked_redis.url(WRONG_REDIS_PASSWORD))
    no_redis_password = config("no_redis_password", redis_url=locked_redis.url(None))
    redis_down = config(
        "redis_down", redis_url=f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0"
    )
    basic = {"username": ES_USER, "password": ES_PASSWORD}
    es_refuses_basic = config("es_refuses_basic", es_url=refusing_es.url, sink=basic)
    es_refuses_key = config("es_refuses_key", es_url=refusing_es.url)
    # A bug: a transform hook putting an object into the document stops the connector with a
    # traceback in its log (the one path that prints one).
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "opaque_hook.py").write_text(
        "class Opaque:\n    pass\n\n\n"
        "def hook(document, row):\n    document['opaque'] = Opaque()\n    return document\n"
    )
    hook_env = {**seen.env, "PYTHONPATH": str(hooks)}
    crashes = [
        config(f"crash_{fmt}", index=f"{es_index}_{fmt}", log_format=fmt, mapping=HOOK)
        for fmt in ("json", "text")
    ]

    first = seen.cdc("run", "--until-caught-up", config=good)
    assert first.returncode == 0, first.stderr
    assert all(json.loads(line)["level"] for line in first.stderr.splitlines())

    def expect(
        args: tuple[str, ...], cfg: Path, code: int, says: str, env: dict[str, str] | None = None
    ) -> Callable[[], tuple[str, str | None]]:
        def run() -> tuple[str, str | None]:
            result = seen.cdc(*args, config=cfg, timeout=90, env=env)
            output = result.stdout + result.stderr
            what = f"`cdc {' '.join(args)}` with {cfg.name}"
            if result.returncode != code or says.lower() not in output.lower():
                return what, f"exit {result.returncode}, wanted {code} saying {says!r}:\n{output}"
            return what, None

        return run

    status, check, run = ("status",), ("check",), ("run", "--until-caught-up")
    cases = [
        expect(check, good, 0, "passed"),
        expect(("status", "--json"), good, 0, '"running": false'),
        expect(("dlq", "list", "--json"), good, 0, "mapper_parsing_exception"),
        expect(check, wrong_mysql, 1, "access denied"),
        expect(run, wrong_mysql, 1, "access denied"),
        expect(status, wrong_mysql, 0, "access denied"),
        expect(("verify",), wrong_mysql, 1, "access denied"),
        expect(check, wrong_redis, 1, "invalid username-password pair"),
        expect(run, wrong_redis, 1, "invalid username-password pair"),
        expect(status, wrong_redis, 1, "invalid username-password pair"),
        expect(("health",), wrong_redis, 1, "invalid username-password pair"),
        expect(("dlq", "list"), wrong_redis, 1, "invalid username-password pair"),
        expect(check, no_redis_password, 1, "authentication required"),
        expect(check, redis_down, 1, "connection refused"),
        expect(("health",), redis_down, 1, "connection refused"),
        expect(check, es_refuses_basic, 1, "HTTP 401"),
        expect(run, es_refuses_basic, 1, "HTTP 401"),
        expect(check, es_refuses_key, 1, "HTTP 401"),
        expect(run, es_refuses_key, 1, "HTTP 401"),
        *(expect(run, crash, 1, "Traceback", hook_env) for crash in crashes),
    ]
    try:
        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(lambda case: case(), cases))
    finally:
        for fmt in ("json", "text"):
            osmem.delete_index(f"{es_index}_{fmt}")
    problems = [f"{what}: {problem}" for what, problem in outcomes if problem]
    assert not problems, "\n\n".join(problems)

    # The refusing server was sent the credentials, so they did go through these paths.
    token = base64.b64encode(f"{ES_USER}:{ES_PASSWORD}".encode()).decode()
    assert set(refusing_es.authorizations) == {f"Basic {token}", f"ApiKey {ES_API_KEY}"}

    with locked_redis.client() as client:
        seen.add_redis(client)
    seen.add(f"index {es_index}", json.dumps(osmem.all_docs(es_index)))
    seen.add_tree(tmp_path, skip=configs)
    seen.assert_clean()


def test_secrets_from_files_through_the_entrypoint_leave_no_trace(
    mariadb: MariaDB,
    osmem: Osmem,
    secret_user: str,
    locked_redis: LockedRedis,
    items: str,
    es_index: str,
    tmp_path: Path,
) -> None:
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    files = {
        "MYSQL_PASSWORD": MYSQL_PASSWORD,
        "ES_PASSWORD": ES_PASSWORD,
        "ES_API_KEY": ES_API_KEY,
        "REDIS_URL": locked_redis.url(),
    }
    env = {**_clean_env(), "PYTHONUNBUFFERED": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for name, value in files.items():
        path = secrets_dir / name.lower()
        path.write_text(value + "\n")  # as `echo` writes it; the entrypoint drops the newline
        env[f"{name}_FILE"] = str(path)
    seen = Exposure(env)
    state = tmp_path / "state"
    state.mkdir()
    file_store = _config(
        tmp_path / "file_store.yaml",
        mariadb,
        items,
        es_index,
        es_url=osmem.url,
        redis_url=None,
        source={"password": "${MYSQL_PASSWORD}"},
        sink={"username": ES_USER, "password": "${ES_PASSWORD}"},
        checkpoint={"file": {"path": str(state)}},
    )
    in_redis = _config(
        tmp_path / "redis_store.yaml",
        mariadb,
        items,
        f"{es_index}_key",
        es_url=osmem.url,
        redis_url="${REDIS_URL}",
        source={"password": "${MYSQL_PASSWORD}"},
        sink={"api_key": "${ES_API_KEY}"},
        log_format="json",
    )
    try:

        def commands(cfg: Path) -> dict[tuple[str, str], subprocess.CompletedProcess[str]]:
            return {
                (cfg.stem, " ".join(args)): seen.cdc(*args, config=cfg, via_entrypoint=True)
                for args in (
                    ("check",),
                    ("run", "--until-caught-up"),
                    ("status",),
                    ("health",),
                    ("position", "show"),
                    ("position", "export", str(tmp_path / f"{cfg.stem}.position.json")),
                    ("dlq", "list", "--json"),
                    ("dlq", "replay", "--yes"),
                    ("verify", "--json"),
                )
            }

        # The two connectors share nothing but the table: side by side.
        with ThreadPoolExecutor(2) as pool:
            results = {
                k: v for part in pool.map(commands, (file_store, in_redis)) for k, v in part.items()
            }
    finally:
        osmem.delete_index(f"{es_index}_key")
    codes = {key: result.returncode for key, result in results.items()}
    # Health says stopped; the rejected row is still rejected, so replay and verify fail.
    failing = {"health", "dlq replay --yes", "verify --json"}
    assert codes == {key: 1 if key[1] in failing else 0 for key in results}, {
        key: r.stdout + r.stderr for key, r in results.items()
    }
    assert "parked" in results[("file_store", "run --until-caught-up")].stderr
    assert "still rejected 1" in results[("redis_store", "dlq replay --yes")].stdout

    assert seen.add_tree(state) >= 2  # the checkpoint, heartbeat and dead letters
    with locked_redis.client() as client:
        seen.add_redis(client)
    seen.add(f"index {es_index}", json.dumps(osmem.all_docs(es_index)))
    seen.add_tree(tmp_path, skip=secrets_dir)
    seen.assert_clean()


def test_configs_that_do_not_validate_or_hold_secrets_in_urls_leave_no_trace(
    mariadb: MariaDB, osmem: Osmem, secret_user: str, items: str, es_index: str, tmp_path: Path
) -> None:
    seen = Exposure({**_clean_env(), "PYTHONUNBUFFERED": "1"})
    redis_port = free_port()
    # These configs hold the secrets as they are, to be echoed if anything does: not scanned.
    configs = tmp_path / "configs"
    configs.mkdir()

    def config(
        name: str,
        redis_url: str | None = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{redis_port}/0",
        **overrides: Any,
    ) -> Path:
        overrides.setdefault("source", {"password": MYSQL_PASSWORD})
        return _config(
            configs / f"{name}.yaml",
            mariadb,
            items,
            es_index,
            es_url=osmem.url,
            redis_url=redis_url,
            **overrides,
        )

    invalid = [
        config(
            "url_scheme",
            checkpoint={"redis": {"url": f"http://:{REDIS_PASSWORD}@127.0.0.1:{redis_port}/0"}},
        ),
        config("sink_url", sink={"urls": [f"ftp://{ES_USER}:{ES_PASSWORD}@127.0.0.1:9"]}),
        config("password_type", source={"password": [MYSQL_PASSWORD]}),
        config("api_key_type", sink={"api_key": [ES_API_KEY]}),
        config("both_auths", sink={"api_key": ES_API_KEY, "password": ES_PASSWORD}),
        config(
            "sentinel_password_type",
            checkpoint={
                "redis": {
                    "url": f"redis://:{REDIS_PASSWORD}@/0",
                    "sentinels": ["127.0.0.1:1"],
                    "master": "m",
                    "sentinel_password": [REDIS_PASSWORD],
                }
            },
        ),
        # A `${` inside a password or a URL's password: what follows it is the secret.
        config("reference_in_password", source={"password": f"x${{{MYSQL_PASSWORD}"}),
        config(
            "reference_in_url",
            checkpoint={"redis": {"url": f"redis://:x${{{REDIS_PASSWORD}@127.0.0.1:1/0"}},
        ),
    ]
    # YAML that does not parse, on a password's line.
    valid = config("yaml_base").read_text()
    assert f"password: {MYSQL_PASSWORD}\n" in valid
    for name, line in [
        ("yaml_colon", f"password: {MYSQL_PASSWORD}: x"),
        ("yaml_quote", f'password: "{MYSQL_PASSWORD}'),
        ("yaml_at", f"password: @{MYSQL_PASSWORD}"),
        ("yaml_escape", f'password: "\\q{MYSQL_PASSWORD}"'),
    ]:
        broken = configs / f"{name}.yaml"
        broken.write_text(valid.replace(f"password: {MYSQL_PASSWORD}", line, 1))
        invalid.append(broken)
    # Credentials inside the Elasticsearch URL are refused (they would not be sent), with the
    # URL masked in the message.
    in_url = config(
        "es_url_credentials",
        sink={"urls": [osmem.url.replace("://", f"://{ES_USER}:{ES_PASSWORD}@")]},
        redis_url=None,
        checkpoint={"file": {"path": str(tmp_path / "state")}},
    )
    # A config that does not load stops every command the same way before it does anything:
    # those run in this process, which is quicker than a process each.
    commands = [("check",), ("run",), ("status",), ("dlq", "list"), ("position", "show")]
    jobs = [(args, cfg, 2) for cfg in invalid for args in commands]
    jobs += [(("health",), cfg, 1) for cfg in invalid]
    results = [seen.cli(*args, config=cfg) for args, cfg, _ in jobs]
    jobs += [(("check",), in_url, 2), (("run", "--until-caught-up"), in_url, 2)]
    results += [seen.cdc(*args, config=in_url) for args, _, _ in jobs[-2:]]
    wrong = [
        f"`cdc {' '.join(args)}` with {cfg.name}: exit {result.returncode}, wanted {code}\n"
        + _masked(result.stdout + result.stderr)
        for (args, cfg, code), result in zip(jobs, results, strict=True)
        if result.returncode != code
    ]
    assert not wrong, "\n\n".join(wrong)
    # The problems are still reported, naming the field.
    assert "checkpoint.redis.url" in results[0].stdout + results[0].stderr
    seen.add_tree(tmp_path, skip=configs)
    seen.assert_clean()


def test_the_leak_detector_finds_every_form() -> None:
    """The scan itself: a secret, its base64 at any offset and the basic-auth token are found,
    and the failure names where and masks every form it quotes."""
    seen = Exposure({})
    token = base64.b64encode(f"{ES_USER}:{ES_PASSWORD}".encode()).decode()
    seen.add("plain", f"password={MYSQL_PASSWORD}")
    seen.add("header", f"Authorization: Basic {token}")
    for prefix in ("", "x", "xy"):
        blob = base64.b64encode(f"{prefix}{REDIS_PASSWORD}tail".encode()).decode()
        seen.add(f"blob {prefix!r}", blob)
    seen.add("api key header", f"authorization: ApiKey {ES_API_KEY}")
    with pytest.raises(AssertionError) as failure:
        seen.assert_clean()
    message = str(failure.value)

    for where in ("plain", "header", "blob ''", "blob 'x'", "blob 'xy'", "api key header"):
        assert f"appears in {where}:" in message
    assert "the MySQL password appears in plain: ...password=<MySQL password>..." in message
    assert f"the basic-auth token of {ES_USER} appears in header:" in message
    assert "the Redis password in base64 appears in blob 'xy':" in message
    assert not [form for _, form in FORMS if form in message]
    clean = Exposure({})
    clean.add("fine", f"user {MYSQL_USER} on {ES_USER}: access denied (using password: YES)")
    clean.assert_clean()
