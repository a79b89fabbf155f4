"""Every figure of the performance targets, measured in one run, with the target beside it.

    scripts/bench.sh --mode targets [--rows N]

Runs, on throwaway servers (see scripts/bench.py and scripts/bench_snapshot.py for how each
figure is measured):
  1. throughput of the wide and the narrow table (`--rows` inserts in 1000-row transactions):
     c/a, the connector against `mariadb-binlog`;
  2. the wide table again with a 100 ms round trip to Elasticsearch (`--es-rtt 100`): its rate
     against the 0 ms run's;
  3. the wide table in one-row transactions (40,000 of them): c/b, the connector against a bare
     python-mysql-replication loop;
  4. commit-to-acknowledge lag at 5,000 rows/s in 10-row transactions for 30 s: p99;
  5. a snapshot of 300,000 wide rows against a bare chunked SELECT of them;
  6. the peak RSS of every connector run above.
Then one table: each figure, its target, and whether this run met it. Takes about 2 minutes on
2 cores. Each ratio compares runs made minutes apart on the same machine; the absolute rates
vary far more between runs than the ratios do.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))

import bench  # noqa: E402
import bench_snapshot  # noqa: E402
from rig import MariaDB  # noqa: E402


@dataclass
class Figure:
    name: str
    value: float
    target: float
    unit: str = ""
    at_most: bool = False
    """The target is an upper bound (lag, memory) rather than a lower one."""

    @property
    def met(self) -> bool:
        return self.value <= self.target if self.at_most else self.value >= self.target

    def row(self) -> str:
        sign = "≤" if self.at_most else "≥"
        value = f"{self.value:,.0f}" if self.value >= 10 else f"{self.value:.3f}"
        target = f"{self.target:,.0f}" if self.target >= 10 else f"{self.target:g}"
        return (
            f"  {self.name:<46}{value + self.unit:>12}   {sign} {target + self.unit:<9}"
            f"{'met' if self.met else 'MISSED'}"
        )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=300_000, help="inserts per table shape")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    figures: list[Figure] = []
    peaks: list[float] = []
    with (
        MariaDB(extra_args=bench.SERVER_ARGS) as db,
        tempfile.TemporaryDirectory(prefix="bench-") as tmp,
    ):
        workdir = Path(tmp)
        db.start()
        db.sql(f"CREATE DATABASE {bench.SCHEMA}")
        print(
            f"MariaDB {db.variable('version')}; {os.cpu_count()} CPUs; "
            f"Python {sys.version.split()[0]}; {bench.load_average()}"
        )
        for shape in (bench.WIDE, bench.NARROW):
            rng = bench.generate(db, shape, args.rows, 1000, "insert")
            runs = [
                bench.measure_mariadb_binlog(db, rng),
                bench.measure_bare(db, rng, workdir),
                bench.measure_connector(db, shape, rng, workdir),
            ]
            bench.print_throughput(shape, rng, runs, "insert", 1000)
            a, _, c = runs
            peaks.append(c.maxrss_kb / 1024)
            figures.append(
                Figure(
                    f"{shape.name} table c/a",
                    c.rate / a.rate,
                    0.25 if shape is bench.WIDE else 0.10,
                )
            )
            if shape is bench.WIDE:
                far = bench.measure_connector(db, shape, rng, workdir, rtt_ms=100)
                bench.print_rtt(c, far, 100)
                peaks.append(far.maxrss_kb / 1024)
                figures.append(
                    Figure("100 ms round trip: rate / 0 ms rate", far.rate / c.rate, 0.8)
                )
            sys.stdout.flush()

        rng = bench.generate(db, bench.WIDE, 40_000, 1, "insert")
        runs = [
            bench.measure_mariadb_binlog(db, rng),
            bench.measure_bare(db, rng, workdir),
            bench.measure_connector(db, bench.WIDE, rng, workdir),
        ]
        bench.print_throughput(bench.WIDE, rng, runs, "insert", 1)
        _, b, c = runs
        peaks.append(c.maxrss_kb / 1024)
        figures.append(Figure("one-row transactions c/b", c.rate / b.rate, 3))
        sys.stdout.flush()

        lag = bench.measure_lag(db, bench.WIDE, 5000, 30, 10, workdir)
        bench.print_lag(lag, 5000, 10)
        peaks.append(lag.connector.maxrss_kb / 1024)
        p99 = lag.lags[min(len(lag.lags) - 1, int(0.99 * len(lag.lags)))] * 1000
        figures.append(
            Figure("lag p99 at 5,000 rows/s, 10-row transactions", p99, 300, " ms", True)
        )
        sys.stdout.flush()

    print()
    snapshot = bench_snapshot.measure(300_000)
    bench_snapshot.print_result(snapshot, 5000)
    peaks.append(snapshot.peak_rss_mb)
    figures.append(Figure("snapshot / bare chunked SELECT", snapshot.ratio, 0.6))
    figures.append(Figure("peak RSS of any connector run", max(peaks), 150, " MB", True))

    print(f"\nperformance targets (one run; {bench.load_average()}):")
    for figure in figures:
        print(figure.row())
    met = sum(f.met for f in figures)
    print(f"{met} of {len(figures)} met; finished in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
