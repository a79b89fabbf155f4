"""Running the real connector from tests: configs, in-process runs and `cdc run` subprocesses."""

from __future__ import annotations

import ctypes
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from cdc.config import ConnectorConfig, load_config
from cdc.engine.loop import RunStats
from cdc.engine.pipeline import Pipeline
from cdc.model.checkpoint import Checkpoint
from cdc.sink.elastic import ElasticSink
from cdc.state.backends import open_stores

_counter = iter(range(10_000, 1_000_000))


def write_config(
    path: Path,
    *,
    port: int,
    es_url: str,
    redis_url: str | None = None,
    tables: list[dict[str, Any]],
    name: str = "test",
    host: str = "127.0.0.1",
    **sections: Any,
) -> Path:
    """A connector config for the rig's servers; `sections` override top-level keys."""
    source = {
        "host": host,
        "port": port,
        "user": "cdc",
        "password": "cdc",
        "server_id": next(_counter),
        "heartbeat_interval": 0.5,
        "read_timeout": 5,
        "connect_timeout": 3,
    }
    source.update(sections.pop("source", {}))
    checkpoint: dict[str, Any] = (
        {"redis": {"url": redis_url}} if redis_url else {"file": {"path": str(path.parent)}}
    )
    checkpoint.update({"interval_ms": 200})
    checkpoint.update(sections.pop("checkpoint", {}))
    sink = {"urls": [es_url], "bulk": {"flush_interval_ms": 50}, "max_backoff": 2}
    sink.update(sections.pop("sink", {}))
    sections.setdefault("metrics", {"host": "127.0.0.1", "port": 0})
    # Tests start from "now" unless they test snapshots.
    sections.setdefault("snapshot", {"mode": "never"})
    data = {
        "name": name,
        "source": source,
        "sink": sink,
        "checkpoint": checkpoint,
        "tables": tables,
        **sections,
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_until_caught_up(config: Path | ConnectorConfig, timeout: float = 60) -> RunStats:
    """Run the pipeline in this process until it has applied everything the server has."""
    cfg = load_config(config) if isinstance(config, Path) else config
    sink = ElasticSink(cfg.sink)
    stores = open_stores(cfg)
    stop = threading.Event()
    timer = threading.Timer(timeout, stop.set)
    timer.start()
    try:
        stats = Pipeline(cfg, sink, stores, stop=stop).run(until_caught_up=True)
    finally:
        timer.cancel()
        sink.close()
        stores.close()
    if stop.is_set():
        raise AssertionError(f"the connector did not catch up within {timeout} s")
    return stats


def stored_checkpoint(config: Path) -> Checkpoint | None:
    with open_stores(load_config(config)) as stores:
        return stores.checkpoints.load()


def save_checkpoint(config: Path, checkpoint: Checkpoint) -> None:
    with open_stores(load_config(config)) as stores:
        stores.checkpoints.save(checkpoint)


def _die_with_parent() -> None:
    """Runs in the child before exec: a connector outlives no killed test run."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class CdcProcess:
    """`cdc run --config PATH` as a real child process, with its log kept in a file."""

    def __init__(self, config: Path, *args: str) -> None:
        self.config = config
        self.log_path = config.with_suffix(f".{time.monotonic_ns()}.log")
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cdc", "run", "--config", str(config), *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=_die_with_parent,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.proc.kill()

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()

    def __enter__(self) -> CdcProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait()


def wait_for(predicate: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def writer_table_ddl(table: str = "items") -> str:
    """CREATE TABLE for a table of the shape `RandomWriter` writes."""
    return (
        f"CREATE TABLE {table} (id INT PRIMARY KEY, name VARCHAR(50) NOT NULL,"
        " qty INT NOT NULL, price DECIMAL(10,2) NOT NULL)"
    )


def writer_rows(mariadb: Any, db: str, table: str = "items") -> dict[str, dict[str, object]]:
    """The rows of a `RandomWriter` table, by id, as a plain mapping's documents hold them:
    read with SQL of their own, independent of the connector's mapping."""
    rows = mariadb.query(f"SELECT id, name, qty, price FROM {table}", db=db)
    return {str(r[0]): {"id": r[0], "name": r[1], "qty": r[2], "price": str(r[3])} for r in rows}


def wait_until_equal(
    docs: Callable[[], dict[str, Any]],
    rows: Callable[[], dict[str, Any]],
    timeout: float,
    context: Callable[[], str] = lambda: "",
) -> None:
    """Wait until the index's documents equal the rows; otherwise fail with how many differ,
    three of them, and `context()` (logs, a status) to tell why."""
    try:
        wait_for(lambda: docs() == rows(), timeout, "the index to equal MySQL")
    except AssertionError:
        found, wanted = docs(), rows()
        wrong = [k for k in set(found) | set(wanted) if found.get(k) != wanted.get(k)]
        sample = [(k, found.get(k), wanted.get(k)) for k in wrong[:3]]
        raise AssertionError(f"{len(wrong)} differ, e.g. {sample}\n{context()}") from None


class RandomWriter(threading.Thread):
    """Random inserts, updates (some changing the primary key) and deletes until stopped, in
    transactions of 1-5 statements, on tables shaped `(id INT PRIMARY KEY, name, qty, price)`."""

    def __init__(
        self,
        mariadb: Any,
        db: str,
        seed: int,
        tables: tuple[str, ...] = ("items",),
        pause: float = 0.002,
        limit: int | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.mariadb = mariadb
        self.db = db
        self.tables = tables
        self.pause = pause
        self.limit = limit
        self.statements = 0
        self.rng = random.Random(seed)
        self.stop_event = threading.Event()
        self.transactions = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn = self.mariadb.connect(database=self.db, autocommit=False)
            next_id = 1
            with conn.cursor() as cur:
                while not self.stop_event.is_set():
                    if self.limit is not None and self.statements >= self.limit:
                        break
                    for _ in range(self.rng.randint(1, 5)):
                        table = self.rng.choice(self.tables)
                        roll = self.rng.random()
                        target = self.rng.randint(1, max(1, next_id))
                        if roll < 0.4 or next_id < 20:
                            cur.execute(
                                f"INSERT INTO {table} VALUES (%s, %s, %s, %s)",
                                (next_id, f"n{next_id}", 0, Decimal("1.00")),
                            )
                            next_id += 1
                        elif roll < 0.8:
                            cur.execute(
                                f"UPDATE {table} SET qty = qty + 1 WHERE id = %s", (target,)
                            )
                        elif roll < 0.9:
                            cur.execute(
                                f"UPDATE IGNORE {table} SET id = %s WHERE id = %s",
                                (next_id + 500_000, target),
                            )
                            next_id += 1
                        else:
                            cur.execute(f"DELETE FROM {table} WHERE id = %s", (target,))
                        self.statements += 1
                    conn.commit()
                    self.transactions += 1
                    if self.pause:
                        time.sleep(self.pause)
            conn.close()
        except BaseException as exc:
            self.error = exc

    def finish(self) -> int:
        self.stop_event.set()
        self.join(timeout=30)
        assert self.error is None, self.error
        return self.transactions
