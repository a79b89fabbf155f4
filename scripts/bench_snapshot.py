"""Snapshot throughput: rows/s of `cdc snapshot` against the fast ES-API stand-in.

    .venv/bin/python scripts/bench_snapshot.py [--rows N] [--chunk-size K]

Measured in one run, on a throwaway MariaDB:
  (a) baseline: reading the table in primary-key chunks with RowReader only (no mapping, no
      Elasticsearch) — the bound the source sets;
  (b) the snapshot end to end: consistent chunk reads, mapping, versioned bulk requests sent to
      an EsStandIn that acknowledges every item (store=False), progress recorded in a file.
Prints rows/s for both and the ratio b/a.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from rig import MariaDB  # noqa: E402

from cdc.config import ConnectorConfig  # noqa: E402
from cdc.engine.pipeline import Pipeline  # noqa: E402
from cdc.sink.elastic import ElasticSink  # noqa: E402
from cdc.source.rows import RowReader  # noqa: E402
from cdc.state.files import open_files  # noqa: E402
from cdc.testing import EsStandIn  # noqa: E402

DDL = """CREATE TABLE wide (
  id INT PRIMARY KEY, name VARCHAR(64) NOT NULL, price DECIMAL(12,2) NOT NULL,
  created DATETIME(6) NOT NULL, status ENUM('new','paid','sent') NOT NULL, flags BIT(8),
  qty INT NOT NULL, note TEXT, attrs JSON, score DOUBLE, code CHAR(8)
)"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--chunk-size", type=int, default=5000)
    args = parser.parse_args()

    with MariaDB() as db, EsStandIn(store=False) as standin, tempfile.TemporaryDirectory() as tmp:
        db.start()
        standin.start()
        db.sql("CREATE DATABASE bench")
        db.sql(DDL, db="bench")
        started = time.monotonic()
        db.sql(
            "INSERT INTO wide SELECT seq, CONCAT('product ', seq), seq / 100, NOW(6),"
            " ELT(1 + seq % 3, 'new', 'paid', 'sent'), seq % 256, seq % 50,"
            " REPEAT('x', 40), CONCAT('{\"k\": ', seq, '}'), seq / 7, LPAD(seq, 8, '0')"
            f" FROM seq_1_to_{args.rows}",
            db="bench",
        )
        print(f"generated {args.rows:,} rows in {time.monotonic() - started:.1f} s")
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
                "sink": {"urls": [standin.url], "bulk": {"max_actions": 5000}},
                "checkpoint": {"file": {"path": tmp}},
                "metrics": {"enabled": False},
                "snapshot": {"mode": "initial", "chunk_size": args.chunk_size},
                "tables": [{"table": "bench.wide", "index": "wide", "json_columns": ["attrs"]}],
            }
        )

        reader = RowReader(cfg.source)
        cpu0, t0 = time.process_time(), time.monotonic()
        after, read = None, 0
        while True:
            rows = reader.fetch_chunk("bench", "wide", ("id",), after, args.chunk_size)
            read += len(rows)
            if len(rows) < args.chunk_size:
                break
            after = (rows[-1]["id"],)
        baseline_s, baseline_cpu = time.monotonic() - t0, time.process_time() - cpu0
        reader.close()

        sink = ElasticSink(cfg.sink)
        stores = open_files(tmp, "bench")
        stop = threading.Event()
        cpu0, t0 = time.process_time(), time.monotonic()
        stats = Pipeline(cfg, sink, stores, stop=stop).run(until_caught_up=True)
        snapshot_s, snapshot_cpu = time.monotonic() - t0, time.process_time() - cpu0
        sink.close()
        assert stats.snapshot_rows == args.rows, stats

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    a, b = read / baseline_s, args.rows / snapshot_s
    print(f"{'':34} {'rows/s':>10} {'CPU s/1k rows':>14}")
    print(f"{'(a) chunked SELECT only':34} {a:>10,.0f} {1000 * baseline_cpu / read:>14.3f}")
    print(f"{'(b) snapshot end to end':34} {b:>10,.0f} {1000 * snapshot_cpu / args.rows:>14.3f}")
    print(f"ratio b/a: {b / a:.2f}   peak RSS: {peak:.0f} MB   chunk size: {args.chunk_size}")


if __name__ == "__main__":
    main()
