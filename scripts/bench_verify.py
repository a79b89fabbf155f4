"""Verification throughput and memory: `cdc verify` of a large table against the ES-API stand-in.

    .venv/bin/python scripts/bench_verify.py [--rows N] [--small-rows M] [--chunk-size K]

Measured in one run, on a throwaway MariaDB (1 GB buffer pool) and an in-process `EsStandIn`
that stores the documents:
  (a) baseline: reading the table in primary-key chunks with RowReader only (no mapping, no
      Elasticsearch), the bound the source sets;
  (b) the snapshot that fills the index, end to end (for scale: copying vs checking);
  (c) `cdc verify --json` as an operator runs it, in a child process: every row compared with
      its document (`_mget`), then one scroll over the index for extra documents (each id
      looked up in MySQL), on an index that equals the table (it must report so and exit 0).
Then the same (c) on a table of `--small-rows` rows: peak RSS that does not grow with the
table is what "memory stays constant" means. Prints rows/s, ratios c/a and c/b, and the peak
RSS of each verify child (VmHWM, polled).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))

from bench import peak_rss_kb  # noqa: E402
from rig import MariaDB  # noqa: E402

from cdc.config import ConnectorConfig  # noqa: E402
from cdc.engine.pipeline import Pipeline  # noqa: E402
from cdc.sink.elastic import ElasticSink  # noqa: E402
from cdc.source.rows import RowReader  # noqa: E402
from cdc.state.files import open_files  # noqa: E402
from cdc.testing import EsStandIn  # noqa: E402

DDL = """CREATE TABLE {name} (
  id INT PRIMARY KEY, name VARCHAR(64) NOT NULL, price DECIMAL(12,2) NOT NULL,
  created DATETIME(6) NOT NULL, status ENUM('new','paid','sent') NOT NULL, flags BIT(8),
  qty INT NOT NULL, note TEXT, attrs JSON, score DOUBLE, code CHAR(8)
)"""


def fill(db: MariaDB, name: str, rows: int) -> None:
    db.sql(DDL.format(name=name), db="bench")
    db.sql(
        f"INSERT INTO {name} SELECT seq, CONCAT('product ', seq), seq / 100, NOW(6),"
        " ELT(1 + seq % 3, 'new', 'paid', 'sent'), seq % 256, seq % 50,"
        " REPEAT('x', 40), CONCAT('{\"k\": ', seq, '}'), seq / 7, LPAD(seq, 8, '0')"
        f" FROM seq_1_to_{rows}",
        db="bench",
    )


def config_data(db: MariaDB, url: str, workdir: Path, table: str, chunk: int) -> dict[str, object]:
    return {
        "name": f"bench-{table}",
        "source": {
            "port": db.port,
            "user": "cdc",
            "password": "cdc",
            "server_id": 78,
            "heartbeat_interval": 0.5,
            "read_timeout": 60,
        },
        "sink": {"urls": [url], "bulk": {"max_actions": 5000}, "request_timeout": 120},
        "checkpoint": {"file": {"path": str(workdir)}},
        "metrics": {"enabled": False},
        "log_format": "text",
        "snapshot": {"mode": "initial", "chunk_size": chunk},
        "tables": [{"table": f"bench.{table}", "index": table, "json_columns": ["attrs"]}],
    }


def snapshot(data: dict[str, object], workdir: Path, rows: int) -> float:
    """Fill the index with the connector's snapshot; returns its wall seconds."""
    cfg = ConnectorConfig.model_validate(data)
    sink = ElasticSink(cfg.sink)
    stores = open_files(str(workdir), cfg.name)
    started = time.monotonic()
    stats = Pipeline(cfg, sink, stores, stop=threading.Event()).run(until_caught_up=True)
    seconds = time.monotonic() - started
    sink.close()
    assert stats.snapshot_rows == rows, stats
    return seconds


def baseline(data: dict[str, object], table: str, chunk: int) -> tuple[int, float]:
    cfg = ConnectorConfig.model_validate(data)
    reader = RowReader(cfg.source)
    started = time.monotonic()
    after, read = None, 0
    while True:
        rows = reader.fetch_chunk("bench", table, ("id",), after, chunk)
        read += len(rows)
        if len(rows) < chunk:
            break
        after = (rows[-1]["id"],)
    reader.close()
    return read, time.monotonic() - started


def verify(config: Path, table: str, rows: int) -> tuple[float, int]:
    """`cdc verify --json` in a child: (wall seconds, peak RSS KiB). Exits unless it reports
    the index equal with every row checked."""
    cmd = [sys.executable, "-m", "cdc", "verify", "--json", "--config", str(config)]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, peak_rss_kb(proc.pid))
        time.sleep(0.01)
    seconds = time.monotonic() - started
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"cdc verify exited with {proc.returncode}: {err.decode()[-2000:]}")
    found = orjson.loads(out)["indices"][table]
    assert found["checked"] == rows and not any(found[k] for k in ("missing", "different", "extra"))
    return seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--small-rows", type=int, default=100_000)
    parser.add_argument("--chunk-size", type=int, default=2000)
    args = parser.parse_args()

    # A buffer pool that holds the table, as a production server's holds its hot data (the
    # test servers' 64 MB would make every key lookup of the extras pass a page read).
    server = MariaDB(extra_args=["--innodb-buffer-pool-size=1G"])
    with server as db, EsStandIn() as standin, tempfile.TemporaryDirectory() as tmp:
        db.start()
        standin.start()
        workdir = Path(tmp)
        db.sql("CREATE DATABASE bench")
        results = {}
        for table, rows in (("big", args.rows), ("small", args.small_rows)):
            started = time.monotonic()
            fill(db, table, rows)
            print(f"{table}: generated {rows:,} rows in {time.monotonic() - started:.1f} s")
            data = config_data(db, standin.url, workdir, table, args.chunk_size)
            config = workdir / f"{table}.yaml"
            config.write_text(yaml.safe_dump(data))
            copy_s = snapshot(data, workdir, rows)
            print(f"{table}: snapshot of {rows:,} rows in {copy_s:.1f} s")
            read, read_s = baseline(data, table, args.chunk_size)
            verify_s, peak = verify(config, table, rows)
            print(f"{table}: cdc verify of {rows:,} rows in {verify_s:.1f} s")
            results[table] = (rows, read / read_s, rows / copy_s, rows / verify_s, peak)

    print()
    print(f"{'':36} {'rows':>10} {'rows/s':>10} {'peak RSS':>10}")
    for table, (rows, a, b, c, peak) in results.items():
        print(f"{table + ': (a) chunked SELECT only':36} {rows:>10,} {a:>10,.0f}")
        print(f"{table + ': (b) snapshot (copy)':36} {rows:>10,} {b:>10,.0f}")
        print(f"{table + ': (c) cdc verify':36} {rows:>10,} {c:>10,.0f} {peak / 1024:>7.0f} MB")
        print(f"{table + ': ratio c/a, c/b':36} {'':>10} {c / a:>10.2f} {c / b:>10.2f}")
    big, small = results["big"][4], results["small"][4]
    print(f"peak RSS of verify, {args.rows:,} vs {args.small_rows:,} rows: {big / small:.2f}x")


if __name__ == "__main__":
    main()
