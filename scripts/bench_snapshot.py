"""Snapshot throughput: rows/s of `cdc snapshot` against the fast ES-API stand-in.

    .venv/bin/python scripts/bench_snapshot.py [--rows N] [--chunk-size K]
                                               [--chunks-in-flight N] [--profile PATH]

Measured in one run, on a throwaway MariaDB:
  (a) baseline: reading the table in primary-key chunks with RowReader only (no mapping, no
      Elasticsearch) — the bound the source sets;
  (b) the snapshot end to end: consistent chunk reads, mapping, versioned bulk requests sent to
      an EsStandIn that acknowledges every item (store=False), progress recorded in a file.
The stand-in runs in a child process of its own, as a cluster would be elsewhere: in this
process its request parsing would compete with the snapshot for the interpreter lock.
Prints rows/s for both and the ratio b/a. `--profile PATH` writes a cProfile of (b)'s threads.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import pstats
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from rig import MariaDB  # noqa: E402

from cdc.config import ConnectorConfig  # noqa: E402
from cdc.engine.pipeline import Pipeline  # noqa: E402
from cdc.sink.elastic import ElasticSink  # noqa: E402
from cdc.source.rows import RowReader  # noqa: E402
from cdc.state.files import open_files  # noqa: E402

DDL = """CREATE TABLE wide (
  id INT PRIMARY KEY, name VARCHAR(64) NOT NULL, price DECIMAL(12,2) NOT NULL,
  created DATETIME(6) NOT NULL, status ENUM('new','paid','sent') NOT NULL, flags BIT(8),
  qty INT NOT NULL, note TEXT, attrs JSON, score DOUBLE, code CHAR(8)
)"""


@contextlib.contextmanager
def standin_process() -> Iterator[str]:
    """An EsStandIn(store=False) in a child process; yields its URL."""
    code = (
        "import sys, threading\n"
        "from cdc.testing import EsStandIn\n"
        "s = EsStandIn(store=False).start()\n"
        "print(s.url, flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        proc.kill()
        proc.wait()


@dataclass
class SnapshotResult:
    rows: int
    select_rate: float
    """(a): rows/s of the bare chunked SELECT."""
    select_cpu_per_1k: float
    snapshot_rate: float
    """(b): rows/s of the snapshot end to end."""
    snapshot_cpu_per_1k: float
    peak_rss_mb: float
    """Of this process, which ran (a) and (b)."""

    @property
    def ratio(self) -> float:
        return self.snapshot_rate / self.select_rate


def measure(
    rows: int,
    chunk_size: int = 5000,
    chunks_in_flight: int | None = None,
    concurrency: int | None = None,
    profile: str | None = None,
) -> SnapshotResult:
    """(a) and (b) of the module docstring on a fresh table of `rows` rows."""
    snapshot: dict[str, object] = {"mode": "initial", "chunk_size": chunk_size}
    if chunks_in_flight is not None:
        snapshot["chunks_in_flight"] = chunks_in_flight
    bulk: dict[str, object] = {"max_actions": 5000}
    if concurrency is not None:
        bulk["concurrency"] = concurrency

    with MariaDB() as db, standin_process() as url, tempfile.TemporaryDirectory() as tmp:
        db.start()
        db.sql("CREATE DATABASE bench")
        db.sql(DDL, db="bench")
        started = time.monotonic()
        db.sql(
            "INSERT INTO wide SELECT seq, CONCAT('product ', seq), seq / 100, NOW(6),"
            " ELT(1 + seq % 3, 'new', 'paid', 'sent'), seq % 256, seq % 50,"
            " REPEAT('x', 40), CONCAT('{\"k\": ', seq, '}'), seq / 7, LPAD(seq, 8, '0')"
            f" FROM seq_1_to_{rows}",
            db="bench",
        )
        print(f"generated {rows:,} rows in {time.monotonic() - started:.1f} s")
        cfg = ConnectorConfig.model_validate(
            {
                "name": "bench",
                "source": {
                    "port": db.port,
                    "user": "cdc",
                    "password": "cdc",
                    "server_id": 77,
                    "heartbeat_interval": 0.5,
                    "read_timeout": 30,
                },
                "sink": {"urls": [url], "bulk": bulk},
                "checkpoint": {"file": {"path": tmp}},
                "metrics": {"enabled": False},
                "snapshot": snapshot,
                "tables": [{"table": "bench.wide", "index": "wide", "json_columns": ["attrs"]}],
            }
        )

        reader = RowReader(cfg.source)
        cpu0, t0 = time.process_time(), time.monotonic()
        after, read = None, 0
        while True:
            chunk = reader.fetch_chunk("bench", "wide", ("id",), after, chunk_size)
            read += len(chunk)
            if len(chunk) < chunk_size:
                break
            after = (chunk[-1]["id"],)
        baseline_s, baseline_cpu = time.monotonic() - t0, time.process_time() - cpu0
        reader.close()

        sink = ElasticSink(cfg.sink)
        stores = open_files(tmp, "bench")
        stop = threading.Event()
        profiles: list[cProfile.Profile] = []
        original_run = threading.Thread.run
        if profile:

            def profiled_run(thread: threading.Thread) -> None:
                one = cProfile.Profile()
                profiles.append(one)
                one.enable()
                try:
                    original_run(thread)
                finally:
                    one.disable()

            threading.Thread.run = profiled_run  # type: ignore[method-assign, assignment]
            profiles.append(cProfile.Profile())
            profiles[-1].enable()
        cpu0, t0 = time.process_time(), time.monotonic()
        stats = Pipeline(cfg, sink, stores, stop=stop).run(until_caught_up=True)
        snapshot_s, snapshot_cpu = time.monotonic() - t0, time.process_time() - cpu0
        if profile:
            threading.Thread.run = original_run  # type: ignore[method-assign]
            profiles[0].disable()
            merged = pstats.Stats(profiles[0])
            for one in profiles[1:]:
                with contextlib.suppress(TypeError):
                    merged.add(one)
            merged.dump_stats(profile)
        sink.close()
        assert stats.snapshot_rows == rows, stats

    return SnapshotResult(
        rows=rows,
        select_rate=read / baseline_s,
        select_cpu_per_1k=1000 * baseline_cpu / read,
        snapshot_rate=rows / snapshot_s,
        snapshot_cpu_per_1k=1000 * snapshot_cpu / rows,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )


def print_result(r: SnapshotResult, chunk_size: int) -> None:
    print(f"{'':34} {'rows/s':>10} {'CPU s/1k rows':>14}")
    print(f"{'(a) chunked SELECT only':34} {r.select_rate:>10,.0f} {r.select_cpu_per_1k:>14.3f}")
    print(
        f"{'(b) snapshot end to end':34} {r.snapshot_rate:>10,.0f} {r.snapshot_cpu_per_1k:>14.3f}"
    )
    print(f"ratio b/a: {r.ratio:.2f}   peak RSS: {r.peak_rss_mb:.0f} MB   chunk size: {chunk_size}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--chunk-size", type=int, default=5000)
    parser.add_argument("--chunks-in-flight", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--profile", default=None, metavar="PATH")
    args = parser.parse_args()
    result = measure(
        args.rows, args.chunk_size, args.chunks_in_flight, args.concurrency, args.profile
    )
    print_result(result, args.chunk_size)


if __name__ == "__main__":
    main()
