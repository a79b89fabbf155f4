"""Benchmark the connector against MariaDB's own binlog decoder (issue 6, item 1).

    .venv/bin/python scripts/bench.py [--rows N] [--shape wide|narrow|both] [--txn-size K]
                                      [--ops insert|mixed] [--mode throughput|lag]
                                      [--rate R] [--duration S] [--profile [PATH]]
                                      [--es-rtt MS] [--concurrency N]

Everything runs against a throwaway MariaDB (tests/rig.py) and an in-process Elasticsearch
stand-in that stores nothing and acknowledges every bulk item (`EsStandIn(store=False)`).

Throughput mode, for each table shape: the server rotates to a fresh binlog file, the workload
is written into it (`--txn-size` row changes per transaction, values computed by the server
from each row's id), and the range from the rotation to the end of the workload is read
three ways, each in a child process of its own:

  a  `mariadb-binlog -R -v` (a remote read over TCP, like a replica's) writing to /dev/null;
  b  a bare python-mysql-replication loop from the start GTID to the end position, iterating
     every value of every row image;
  c  the connector, `Pipeline.run(until_caught_up=True)` from a checkpoint at the start of the
     workload: read, decode, map, bulk bodies built and sent to the stand-in.

With `--es-rtt MS`, c runs once more with the stand-in behind `cdc.testing.FaultProxy`
delaying each direction by MS/2 (a delay line: data in flight overlaps, so only the round trip
is added, not a bandwidth limit), and its rate is printed beside the 0 ms run with the ratio.
`--concurrency N` sets `sink.bulk.concurrency` (bulk requests in flight) for every connector
run; without it the connector's default applies.

Rows are row changes (an UPDATE is one row with two images). Wall time and CPU of b and c
cover only the measured work, not interpreter start-up; a's are the whole `mariadb-binlog`
run. Peak RSS is each child's own peak resident set (VmHWM; see `peak_rss_kb`). Ratios are
between runs of the same process on the same binlog, so they are comparable across machines
far better than the absolute rates.

Lag mode, for each shape: the connector runs as a child while a writer inserts `--rate` rows
per second for `--duration` seconds, in transactions of `--txn-size` rows. The lag of a row
is the time from the writer's COMMIT returning to the stand-in acknowledging that row's bulk
item (both clocks are this process's monotonic clock).

`--profile` adds one more connector run per shape under cProfile (every thread, merged),
writes the .pstats file and prints the top functions by cumulative and by own time. Profiled
runs are slower and are never used for the numbers in the table.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pymysql.constants import CLIENT

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from rig import MariaDB, find_binary  # noqa: E402

from cdc.config import SourceConfig, load_config  # noqa: E402
from cdc.model.checkpoint import Checkpoint  # noqa: E402
from cdc.model.position import Position  # noqa: E402
from cdc.model.versions import initial_counter  # noqa: E402
from cdc.source.mysql import connect, current_position, server_info  # noqa: E402
from cdc.state.files import FileCheckpoints  # noqa: E402
from cdc.testing import BulkOp, EsStandIn, FaultProxy  # noqa: E402

SCHEMA = "bench"
CONNECTOR_NAME = "bench"
BARE_SERVER_ID = 9001
CONNECTOR_SERVER_ID = 9002
# Statements sent per round trip while generating the workload (multi-statement packets keep
# small transactions from being bounded by round trips).
STATEMENTS_PER_TRIP = 200
# Inserts of fewer rows than this are sent as VALUES lists (see Shape.insert_sql).
SMALL_INSERT = 100
# The bench measures decoding, not the disk: no fsync per commit, and a binlog cache big
# enough that 1000-row transactions do not spill to a temporary file.
SERVER_ARGS = [
    "--innodb-flush-log-at-trx-commit=0",
    "--sync-binlog=0",
    "--innodb-buffer-pool-size=256M",
    "--binlog-cache-size=8M",
    "--max-binlog-size=1G",
]

# -- table shapes and workload -------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """A benchmark table: its DDL and the SQL that generates, changes and deletes rows."""

    name: str
    ddl: str
    """CREATE TABLE `{table}`, one column per line."""
    values: str
    """The value expressions of the row with id `{n}`: the data is a function of the id."""
    update: str
    """UPDATE of the rows with ids `{lo}`..`{hi}`; changes every row it matches."""

    @property
    def table(self) -> str:
        return f"{SCHEMA}.{self.name}"

    @property
    def column_count(self) -> int:
        body = self.ddl[self.ddl.index("(") + 1 : self.ddl.rindex(")")]
        return sum(1 for line in body.splitlines() if line.strip())

    @property
    def index(self) -> str:
        return f"bench_{self.name}"

    def create_sql(self) -> str:
        return self.ddl.format(table=self.table)

    def insert_sql(self, lo: int, hi: int) -> str:
        """Insert the rows with ids `lo`..`hi`. A few rows go as a VALUES list; more are
        selected from a SEQUENCE table, which costs the server less per row but more per
        statement."""
        if hi - lo < SMALL_INSERT:
            rows = ",".join(f"({self.values.format(n=n)})" for n in range(lo, hi + 1))
            return f"INSERT INTO {self.table} VALUES {rows}"
        return (
            f"INSERT INTO {self.table} SELECT {self.values.format(n='seq')} "
            f"FROM {SCHEMA}.seq_{lo}_to_{hi}"
        )

    def update_sql(self, lo: int, hi: int) -> str:
        return self.update.format(table=self.table, lo=lo, hi=hi)

    def delete_sql(self, lo: int, hi: int) -> str:
        return f"DELETE FROM {self.table} WHERE id BETWEEN {lo} AND {hi}"


WIDE = Shape(
    name="wide",
    ddl="""
        CREATE TABLE {table} (
          id BIGINT UNSIGNED PRIMARY KEY,
          sku VARCHAR(32) NOT NULL,
          price DECIMAL(12,2) NOT NULL,
          qty INT NOT NULL,
          weight DOUBLE NULL,
          created DATETIME(6) NOT NULL,
          status ENUM('new','paid','shipped','cancelled') NOT NULL,
          flags BIT(8) NOT NULL,
          note TEXT,
          attrs JSON,
          updated TIMESTAMP(6) NULL
        ) DEFAULT CHARSET=utf8mb4
    """,
    values="""
        {n},
        CONCAT('SKU-', LPAD({n}, 10, '0')),
        ({n} % 1000000) / 100,
        {n} % 1000,
        IF({n} % 10 = 0, NULL, {n} / 7),
        TIMESTAMP'2024-01-01 00:00:00' + INTERVAL {n} SECOND + INTERVAL ({n} % 999983) MICROSECOND,
        ELT(1 + {n} % 4, 'new', 'paid', 'shipped', 'cancelled'),
        {n} % 256,
        CONCAT('note for row ', {n}, ': ', REPEAT('lorem ipsum ', 1 + {n} % 8)),
        JSON_OBJECT('n', {n}, 'tags', JSON_ARRAY('a', 'b', {n} % 10), 'ok', {n} % 2 = 0),
        FROM_UNIXTIME(1700000000 + {n}) + INTERVAL ({n} % 999979) MICROSECOND
    """,
    update="""
        UPDATE {table} SET qty = qty + 1, price = price + 0.01,
          status = ELT(1 + qty % 4, 'new', 'paid', 'shipped', 'cancelled'),
          updated = updated + INTERVAL 1 SECOND
        WHERE id BETWEEN {lo} AND {hi}
    """,
)

NARROW = Shape(
    name="narrow",
    ddl="""
        CREATE TABLE {table} (
          id BIGINT UNSIGNED PRIMARY KEY,
          account INT NOT NULL,
          amount DECIMAL(10,2) NOT NULL,
          label VARCHAR(32) NOT NULL
        ) DEFAULT CHARSET=utf8mb4
    """,
    values="{n}, {n} % 10007, ({n} % 100000) / 100, CONCAT('label-', {n})",
    update="UPDATE {table} SET amount = amount + 1 WHERE id BETWEEN {lo} AND {hi}",
)

SHAPES = {"wide": WIDE, "narrow": NARROW}


Step = tuple[str, int, int]
"""One statement of a transaction: ("insert" | "update" | "delete", first id, last id)."""


def plan_transactions(rows: int, txn_size: int, ops: str) -> Iterator[list[Step]]:
    """The statements of each transaction of a workload of exactly `rows` row changes.

    `insert`: every change inserts a new id. `mixed`: once enough rows exist, each transaction
    is 60% inserts, 30% updates of live rows and 10% deletes of the oldest live rows; ranges
    are disjoint, so every statement changes exactly the rows it names.
    """
    next_id = 1
    oldest = 1
    done = 0
    while done < rows:
        k = min(txn_size, rows - done)
        n_upd = n_del = 0
        if ops == "mixed" and next_id - oldest >= k:
            n_upd, n_del = (k * 3) // 10, k // 10
        n_ins = k - n_upd - n_del
        txn: list[Step] = [("insert", next_id, next_id + n_ins - 1)] if n_ins else []
        if n_del:
            txn.append(("delete", oldest, oldest + n_del - 1))
            oldest += n_del
        if n_upd:
            # The most recently inserted rows, which the deletes (oldest first) have not reached.
            txn.append(("update", next_id - n_upd, next_id - 1))
        next_id += n_ins
        done += k
        yield txn


def transaction_sql(shape: Shape, txn: list[Step]) -> str:
    """One transaction as a multi-statement string, START TRANSACTION ... COMMIT."""
    sql = {"insert": shape.insert_sql, "update": shape.update_sql, "delete": shape.delete_sql}
    body = ";".join(sql[kind](lo, hi) for kind, lo, hi in txn)
    return f"START TRANSACTION;{body};COMMIT"


@dataclass
class BinlogRange:
    """The binlog written by one workload: from `start` (a transaction boundary) to `end`."""

    start: Position
    end_file: str
    end_offset: int
    rows: int
    transactions: int
    bytes: int


def binlog_status(db: MariaDB) -> tuple[str, int]:
    file, offset = db.query("SHOW MASTER STATUS")[0][:2]
    return str(file), int(offset)


def generate(db: MariaDB, shape: Shape, rows: int, txn_size: int, ops: str) -> BinlogRange:
    """Create `shape`'s table and write the workload into a binlog file of its own."""
    db.sql(f"DROP TABLE IF EXISTS {shape.table}")
    db.sql(shape.create_sql())
    db.sql("FLUSH BINARY LOGS")
    start = position_now(db)
    conn = db.connect(database=SCHEMA, client_flag=CLIENT.MULTI_STATEMENTS)
    transactions = 0
    with contextlib.closing(conn), conn.cursor() as cur:
        batch: list[str] = []
        for txn in plan_transactions(rows, txn_size, ops):
            batch.append(transaction_sql(shape, txn))
            transactions += 1
            if len(batch) >= STATEMENTS_PER_TRIP:
                _run_batch(cur, batch)
        _run_batch(cur, batch)
    end_file, end_offset = binlog_status(db)
    if end_file != start.file or start.offset is None:
        raise SystemExit(f"bench: the workload spans binlog files {start.file}..{end_file}")
    return BinlogRange(start, end_file, end_offset, rows, transactions, end_offset - start.offset)


def _run_batch(cur: Any, batch: list[str]) -> None:
    if not batch:
        return
    cur.execute(";".join(batch))
    while cur.nextset():
        pass
    batch.clear()


def source_config(db: MariaDB) -> SourceConfig:
    """The connector's source section for `db`."""
    return SourceConfig(
        host=db.host,
        port=db.port,
        user=db.user,
        password=db.password,
        server_id=CONNECTOR_SERVER_ID,
        flavor="mariadb",
    )


def position_now(db: MariaDB) -> Position:
    """The server's current position, read the way the connector reads it."""
    conn = connect(source_config(db))
    try:
        return current_position(conn, server_info(conn, "mariadb"))
    finally:
        conn.close()


# -- child processes -----------------------------------------------------------------------------


@dataclass
class Measured:
    """One run of one reader over one binlog range."""

    label: str
    rows: int
    wall: float
    cpu: float
    maxrss_kb: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.rows / self.wall if self.wall > 0 else 0.0

    @property
    def cpu_per_1k(self) -> float:
        return self.cpu / self.rows * 1000 if self.rows else 0.0


def peak_rss_kb(pid: int | str = "self") -> int:
    """Peak resident set (VmHWM) of a running process's current program, in KiB; 0 if gone.

    Not `ru_maxrss`: Linux carries the parent's peak into a child across fork and exec, so a
    small child of this 50 MB process would report at least 50 MB.
    """
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def run_child(cmd: list[str], stdout: int | None = None) -> tuple[float, float, int]:
    """Run `cmd` to completion: (wall seconds, CPU seconds, peak RSS KiB seen by polling).

    Raises SystemExit on a non-zero exit.
    """
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=stdout)
    peak = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak = max(peak, peak_rss_kb(proc.pid))
        time.sleep(0.005)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"bench: {cmd[0]} exited with {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime, peak


def child_command(kind: str, spec: dict[str, Any]) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--child", kind, json.dumps(spec)]


def measure_mariadb_binlog(db: MariaDB, rng: BinlogRange) -> Measured:
    """(a) MariaDB's C decoder reading the range from the server, rows printed as pseudo-SQL."""
    assert rng.start.offset is not None
    cmd = [
        find_binary("mariadb-binlog", "mariadb-client"),
        "--no-defaults",
        "--read-from-remote-server",
        f"--host={db.host}",
        f"--port={db.port}",
        "--user=root",
        "--verbose",
        f"--start-position={rng.start.offset}",
        f"--stop-position={rng.end_offset}",
        rng.end_file,
    ]
    wall, cpu, peak = run_child(cmd, stdout=subprocess.DEVNULL)
    return Measured("a mariadb-binlog -R -v", rng.rows, wall, cpu, peak)


def measure_bare(db: MariaDB, rng: BinlogRange, workdir: Path) -> Measured:
    """(b) A bare python-mysql-replication loop over the range."""
    spec = {
        "host": db.host,
        "port": db.port,
        "gtid": rng.start.gtid,
        "end_file": rng.end_file,
        "end_offset": rng.end_offset,
        "result": str(workdir / "bare-result.json"),
    }
    run_child(child_command("bare", spec))
    result = json.loads((workdir / "bare-result.json").read_text())
    if result["rows"] != rng.rows:
        raise SystemExit(f"bench: the library loop read {result['rows']} rows, not {rng.rows}")
    return Measured(
        "b python-mysql-replication",
        result["rows"],
        result["wall"],
        result["cpu"],
        result["peak_rss_kb"],
    )


def write_config(
    workdir: Path, db: MariaDB, es_url: str, shapes: list[Shape], concurrency: int | None = None
) -> Path:
    """A connector config with the project's defaults for batching and checkpoints (and
    `concurrency` bulk requests in flight, when given)."""
    sink: dict[str, Any] = {"urls": [es_url]}
    if concurrency is not None:
        sink["bulk"] = {"concurrency": concurrency}
    data = {
        "name": CONNECTOR_NAME,
        "source": source_config(db).model_dump(exclude_unset=True),
        "sink": sink,
        "checkpoint": {"file": {"path": str(workdir)}},
        "tables": [{"table": s.table, "index": s.index} for s in shapes],
    }
    path = workdir / "bench.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def start_checkpoint(workdir: Path, db: MariaDB, position: Position) -> None:
    """Point the connector at `position`, as if it had applied everything before it."""
    conn = connect(source_config(db))
    try:
        info = server_info(conn, "mariadb")
    finally:
        conn.close()
    store = FileCheckpoints(workdir, CONNECTOR_NAME)
    store.save(Checkpoint(position, initial_counter(), info.identity).stamped())


def measure_connector(
    db: MariaDB,
    shape: Shape,
    rng: BinlogRange,
    workdir: Path,
    profile: Path | None = None,
    rtt_ms: float = 0.0,
    concurrency: int | None = None,
) -> Measured:
    """(c) The connector from the start of the range until caught up, into the stand-in
    (behind a proxy adding `rtt_ms` to every round trip, when given)."""
    run_dir = Path(tempfile.mkdtemp(prefix="connector-", dir=workdir))
    with EsStandIn(store=False) as standin, contextlib.ExitStack() as stack:
        url = standin.url
        if rtt_ms > 0:
            proxy = stack.enter_context(FaultProxy(*standin.address))
            proxy.latency(rtt_ms / 2000)
            url = f"http://{proxy.address[0]}:{proxy.port}"
        config = write_config(run_dir, db, url, [shape], concurrency)
        start_checkpoint(run_dir, db, rng.start)
        spec = {
            "config": str(config),
            "until_caught_up": True,
            "profile": str(profile) if profile else None,
            "result": str(run_dir / "result.json"),
        }
        run_child(child_command("connector", spec))
        items = standin.items
    result = json.loads((run_dir / "result.json").read_text())
    acked = items.get("created", 0) + items.get("deleted", 0)
    if result["changes"] != rng.rows or acked != rng.rows:
        raise SystemExit(
            f"bench: the connector read {result['changes']} row changes and the stand-in "
            f"acknowledged {acked} items, expected {rng.rows}"
        )
    return Measured(
        f"c connector, {rtt_ms:g} ms RTT" if rtt_ms > 0 else "c connector end to end",
        result["changes"],
        result["wall"],
        result["cpu"],
        result["peak_rss_kb"],
        {"requests": result["requests"], "threads": result["threads"]},
    )


# -- child entry points --------------------------------------------------------------------------


def child_bare(spec: dict[str, Any]) -> None:
    from pymysqlreplication import BinLogStreamReader
    from pymysqlreplication.event import XidEvent
    from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

    started, cpu_started = time.perf_counter(), time.process_time()
    reader = BinLogStreamReader(
        connection_settings={
            "host": spec["host"],
            "port": spec["port"],
            "user": MariaDB.user,
            "password": MariaDB.password,
            "charset": "utf8mb4",
        },
        server_id=BARE_SERVER_ID,
        is_mariadb=True,
        auto_position=spec["gtid"],
        blocking=True,
        resume_stream=True,
        only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent, XidEvent],
        only_schemas=[SCHEMA],
    )
    rows = values = 0
    end = (spec["end_file"], spec["end_offset"])
    try:
        for event in reader:
            if isinstance(event, XidEvent):
                if (reader.log_file, reader.log_pos) >= end:
                    break
                continue
            for row in event.rows:
                rows += 1
                for image in ("values", "before_values", "after_values"):
                    got = row.get(image)
                    if got is not None:
                        for value in got.values():
                            values += value is not None
    finally:
        reader.close()
    _write_result(
        spec,
        rows=rows,
        values=values,
        wall=time.perf_counter() - started,
        cpu=time.process_time() - cpu_started,
    )


def child_connector(spec: dict[str, Any]) -> None:
    from cdc.cli.common import setup_logging
    from cdc.engine.pipeline import Pipeline
    from cdc.sink.elastic import ElasticSink
    from cdc.state.backends import open_stores

    setup_logging("text", "WARNING")
    cfg = load_config(Path(spec["config"]))
    sink = ElasticSink(cfg.sink)
    stores = open_stores(cfg)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    profiler = _ThreadProfiler() if spec.get("profile") else None
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        with profiler if profiler is not None else contextlib.nullcontext():
            stats = Pipeline(cfg, sink, stores, stop=stop).run(spec["until_caught_up"])
    finally:
        sink.close()
        stores.close()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    threads = profiler.dump(Path(spec["profile"])) if profiler is not None else []
    _write_result(
        spec,
        changes=stats.changes,
        actions=stats.actions,
        transactions=stats.transactions,
        requests=sink.requests,
        wall=wall,
        cpu=cpu,
        threads=threads,
    )


def _write_result(spec: dict[str, Any], **result: Any) -> None:
    result["peak_rss_kb"] = peak_rss_kb()
    Path(spec["result"]).write_text(json.dumps(result))


# Where a thread blocks rather than works; a wall-clock profile counts these as time spent.
_WAITS = frozenset(
    {
        "<method 'acquire' of '_thread.lock' objects>",
        "<method 'acquire' of '_thread.RLock' objects>",
        "<built-in method time.sleep>",
    }
)


class _ThreadProfiler:
    """cProfile over the calling thread and every thread started while it is active.

    cProfile only sees the thread that enabled it, and the connector decodes the binlog in a
    reader thread, so each thread gets a profiler of its own. Times are wall clock (a CPU-time
    timer costs a system call per function call here); `dump` says how much of each thread's
    time was spent blocked, so idle helper threads can be told from busy ones.
    """

    def __init__(self) -> None:
        self._main = cProfile.Profile()
        self._threads: list[tuple[str, cProfile.Profile]] = []
        self._lock = threading.Lock()
        self._original_run: Callable[[threading.Thread], None] = threading.Thread.run

    def __enter__(self) -> _ThreadProfiler:
        original, threads, lock = self._original_run, self._threads, self._lock

        def profiled_run(thread: threading.Thread) -> None:
            profile = cProfile.Profile()
            profile.enable()
            try:
                original(thread)
            finally:
                profile.disable()
                with lock:
                    threads.append((thread.name, profile))

        threading.Thread.run = profiled_run  # type: ignore[method-assign, assignment]
        self._main.enable()
        return self

    def __exit__(self, *exc: object) -> None:
        self._main.disable()
        threading.Thread.run = self._original_run  # type: ignore[method-assign, assignment]

    def dump(self, path: Path) -> list[dict[str, Any]]:
        """Write every finished thread's profile merged to `path`, and each thread's to
        `<stem>.<thread>.pstats` beside it; one summary per thread."""
        with self._lock:
            profiles = [("MainThread", self._main), *self._threads]
        merged = pstats.Stats(self._main)
        summaries = []
        for name, profile in profiles:
            stats = pstats.Stats(profile)
            if profile is not self._main:
                merged.add(profile)
            profiled = stats.get_stats_profile()
            waiting = sum(
                profiled.func_profiles[f].tottime for f in _WAITS & profiled.func_profiles.keys()
            )
            file = path.with_name(f"{path.stem}.{thread_file_name(name)}.pstats")
            stats.dump_stats(file)
            summaries.append(
                {
                    "thread": name,
                    "file": str(file),
                    "seconds": profiled.total_tt,
                    "waiting": waiting,
                }
            )
        merged.dump_stats(path)
        return summaries


def thread_file_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


# -- lag mode ------------------------------------------------------------------------------------


@dataclass
class LagResult:
    shape: str
    written: int
    acked: int
    write_seconds: float
    lags: list[float]
    connector: Measured


def measure_lag(
    db: MariaDB, shape: Shape, rate: float, duration: float, txn_size: int, workdir: Path
) -> LagResult:
    """Steady writes at `rate` rows/s while the connector streams them to the stand-in."""
    db.sql(f"DROP TABLE IF EXISTS {shape.table}")
    db.sql(shape.create_sql())
    run_dir = Path(tempfile.mkdtemp(prefix="lag-", dir=workdir))
    acked_at: dict[str, float] = {}

    def on_item(op: BulkOp) -> bool:
        # The stand-in has no acknowledgement hook; a fail_items predicate that never fails
        # an item sees every item while its response is being built, which is close enough.
        acked_at[op.doc_id] = time.monotonic()
        return False

    with EsStandIn(store=False) as standin:
        standin.fail_items(on_item)
        config = write_config(run_dir, db, standin.url, [shape])
        start_checkpoint(run_dir, db, position_now(db))
        spec = {
            "config": str(config),
            "until_caught_up": False,
            "profile": None,
            "result": str(run_dir / "result.json"),
        }
        proc = subprocess.Popen(child_command("connector", spec))
        try:
            conn = db.connect(database=SCHEMA)
            with contextlib.closing(conn), conn.cursor() as cur:
                # Warm-up: the connector is streaming once its first row is acknowledged.
                cur.execute(shape.insert_sql(1, 1))
                _wait_for(lambda: "1" in acked_at, 60, "the connector to start streaming")
                committed, seconds = _steady_writes(cur, shape, 2, rate, duration, txn_size)
            last = str(max(committed))
            _wait_for(lambda: last in acked_at, 120, "the connector to catch up")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait()
    result = json.loads((run_dir / "result.json").read_text())
    lags = sorted(acked_at[str(i)] - t for i, t in committed.items() if str(i) in acked_at)
    connector = Measured(
        "connector", result["changes"], result["wall"], result["cpu"], result["peak_rss_kb"]
    )
    return LagResult(shape.name, len(committed), len(lags), seconds, lags, connector)


def _steady_writes(
    cur: Any, shape: Shape, first_id: int, rate: float, duration: float, txn_size: int
) -> tuple[dict[int, float], float]:
    """Insert transactions of `txn_size` rows on a fixed schedule; the commit time of each id.

    A writer that falls behind its schedule writes back to back without sleeping, so the
    achieved rate shows when the server or this process could not keep up.
    """
    committed: dict[int, float] = {}
    total = int(rate * duration)
    started = time.monotonic()
    next_id = first_id
    for n in range(0, total, txn_size):
        due = started + n / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        k = min(txn_size, total - n)
        cur.execute(shape.insert_sql(next_id, next_id + k - 1))
        now = time.monotonic()
        for i in range(next_id, next_id + k):
            committed[i] = now
        next_id += k
    return committed, time.monotonic() - started


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


# -- reporting -----------------------------------------------------------------------------------


def print_throughput(
    shape: Shape, rng: BinlogRange, runs: list[Measured], ops: str, txn_size: int
) -> None:
    a, b, c = runs
    print()
    print(
        f"{shape.name} table ({shape.column_count} columns): {rng.rows:,} row changes "
        f"({ops}), {rng.transactions:,} transactions of up to {txn_size} rows, "
        f"binlog {rng.bytes / 1e6:.1f} MB"
    )
    header = (
        f"  {'reader':<30}{'rows/s':>10}{'wall s':>9}{'CPU s/1k rows':>15}{'CPU/wall':>10}"
        f"{'peak RSS MB':>13}"
    )
    print(header)
    print("  " + "-" * (len(header) - 2))
    for m in runs:
        print(
            f"  {m.label:<30}{m.rate:>10,.0f}{m.wall:>9.2f}{m.cpu_per_1k:>15.4f}"
            f"{m.cpu / m.wall:>10.0%}{m.maxrss_kb / 1024:>13.1f}"
        )
    print(
        f"  c/a = {c.rate / a.rate:.3f}   c/b = {c.rate / b.rate:.2f}   "
        f"(b/a = {b.rate / a.rate:.3f}; c sent {c.extra['requests']} bulk requests)"
    )


def print_rtt(zero: Measured, far: Measured, rtt_ms: float) -> None:
    print(
        f"  with a {rtt_ms:g} ms round trip to Elasticsearch: {far.rate:,.0f} rows/s against "
        f"{zero.rate:,.0f} at 0 ms = {far.rate / zero.rate:.2f}x "
        f"({far.extra['requests']} bulk requests, peak RSS {far.maxrss_kb / 1024:.1f} MB)"
    )


def print_lag(r: LagResult, rate: float, txn_size: int) -> None:
    def pct(q: float) -> float:
        return r.lags[min(len(r.lags) - 1, int(q * len(r.lags)))] * 1000

    print()
    print(
        f"{r.shape} table: target {rate:,.0f} rows/s in transactions of {txn_size} row(s); "
        f"wrote {r.written:,} rows in {r.write_seconds:.1f} s = "
        f"{r.written / r.write_seconds:,.0f} rows/s achieved"
    )
    missing = r.written - r.acked
    print(
        f"  commit -> ack lag: p50 {pct(0.50):.0f} ms   p99 {pct(0.99):.0f} ms   "
        f"max {r.lags[-1] * 1000:.0f} ms   ({r.acked:,} rows acknowledged"
        + (f", {missing:,} MISSING)" if missing else ")")
    )
    c = r.connector
    print(
        f"  connector: {c.cpu:.1f} CPU s over {c.wall:.1f} s "
        f"({c.cpu / c.wall * 100:.0f}% of a core), {c.cpu_per_1k:.4f} CPU s/1k rows, "
        f"peak RSS {c.maxrss_kb / 1024:.1f} MB"
    )


def print_profile(path: Path, run: Measured) -> None:
    """Per thread: how busy it was; for the busy ones, the top 25 functions by cumulative and
    by own time (wall clock; blocked time shows up as lock `acquire` and `sleep`)."""
    print(f"\n--- connector profile {path} (profiled run: {run.wall:.1f} s) ---")
    busy = []
    for t in run.extra["threads"]:
        working = t["seconds"] - t["waiting"]
        print(
            f"  thread {t['thread']:<22} {t['seconds']:7.1f} s profiled, "
            f"{t['waiting']:7.1f} s blocked, {working:7.1f} s working"
        )
        if working > 0.05 * run.wall:
            busy.append(t)
    for t in busy:
        for key in ("cumulative", "tottime"):
            print(f"\n--- thread {t['thread']}: top 25 by {key} ---")
            stats = pstats.Stats(t["file"], stream=sys.stdout)
            stats.strip_dirs().sort_stats(key).print_stats(25)


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rows", type=int, default=300_000, help="row changes per shape (throughput)")
    p.add_argument("--shape", choices=["wide", "narrow", "both"], default="both")
    p.add_argument(
        "--txn-size",
        type=int,
        default=None,
        help="row changes per transaction (default 1000 for throughput, 10 for lag)",
    )
    p.add_argument(
        "--ops",
        choices=["insert", "mixed"],
        default="insert",
        help="throughput workload: inserts only, or 60/30/10 insert/update/delete",
    )
    p.add_argument("--mode", choices=["throughput", "lag"], default="throughput")
    p.add_argument("--rate", type=float, default=5000, help="lag mode: rows written per second")
    p.add_argument("--duration", type=float, default=30, help="lag mode: seconds of writing")
    p.add_argument(
        "--profile",
        nargs="?",
        const="bench-connector.pstats",
        default=None,
        metavar="PATH",
        help="also profile the connector (throughput mode); "
        "writes PATH, with the shape inserted when several shapes run",
    )
    p.add_argument(
        "--es-rtt",
        type=float,
        default=0.0,
        metavar="MS",
        help="throughput mode: also run the connector with this round trip to Elasticsearch",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=None,
        metavar="N",
        help="sink.bulk.concurrency of every connector run (default: the connector's)",
    )
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.txn_size is None:
        args.txn_size = 1000 if args.mode == "throughput" else 10
    if args.rows < 1 or args.txn_size < 1 or args.rate <= 0 or args.duration <= 0:
        p.error("--rows, --txn-size, --rate and --duration must be positive")
    if args.es_rtt < 0 or (args.concurrency is not None and args.concurrency < 1):
        p.error("--es-rtt must not be negative and --concurrency must be positive")
    return args


def load_average() -> str:
    # Other work on the machine skews every rate; the load average shows when it did.
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min)"


def profile_path(base: str, shape: Shape, several: bool) -> Path:
    path = Path(base)
    return path.with_name(f"{path.stem}-{shape.name}{path.suffix}") if several else path


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.child:
        kind, spec = args.child
        {"bare": child_bare, "connector": child_connector}[kind](json.loads(spec))
        return
    shapes = [WIDE, NARROW] if args.shape == "both" else [SHAPES[args.shape]]
    started = time.perf_counter()
    with MariaDB(extra_args=SERVER_ARGS) as db, tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        workdir = Path(tmp)
        db.start()
        db.sql(f"CREATE DATABASE {SCHEMA}")
        print(
            f"MariaDB {db.variable('version')} on port {db.port}; "
            f"{os.cpu_count()} CPUs; Python {sys.version.split()[0]}; {load_average()}"
        )
        for shape in shapes:
            if args.mode == "lag":
                result = measure_lag(db, shape, args.rate, args.duration, args.txn_size, workdir)
                print_lag(result, args.rate, args.txn_size)
                continue
            t = time.perf_counter()
            rng = generate(db, shape, args.rows, args.txn_size, args.ops)
            print(f"\n[{shape.name}: workload written in {time.perf_counter() - t:.1f} s]")
            runs = [
                measure_mariadb_binlog(db, rng),
                measure_bare(db, rng, workdir),
                measure_connector(db, shape, rng, workdir, concurrency=args.concurrency),
            ]
            print_throughput(shape, rng, runs, args.ops, args.txn_size)
            if args.es_rtt:
                far = measure_connector(
                    db, shape, rng, workdir, rtt_ms=args.es_rtt, concurrency=args.concurrency
                )
                print_rtt(runs[2], far, args.es_rtt)
            if args.profile:
                path = profile_path(args.profile, shape, len(shapes) > 1)
                run = measure_connector(
                    db, shape, rng, workdir, profile=path.resolve(), concurrency=args.concurrency
                )
                print_profile(path, run)
            sys.stdout.flush()
    print(f"\n[bench finished in {time.perf_counter() - started:.0f} s; {load_average()}]")


if __name__ == "__main__":
    main(sys.argv[1:])
