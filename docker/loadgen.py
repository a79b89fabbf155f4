"""Demo load generator: a steady trickle of row changes in `shop.customers` for the connector.

Each tick inserts, updates, soft-deletes (`is_deleted = 1`) or deletes a few rows, each change in
its own transaction, and keeps the table at most `--max-rows` live rows. Runs until SIGTERM or
SIGINT, or for `--duration` seconds; prints what it did every 10 seconds and when it stops.

Every option also reads an environment variable (LOADGEN_HOST, LOADGEN_PORT, ...); the
defaults match docker/compose.yaml and docker/mysql-init.sql. Needs only PyMySQL, which the
connector image has: `python /loadgen.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from types import FrameType
from typing import Any

import pymysql

TIERS = ("free", "pro", "enterprise")
COUNTRIES = ("DE", "FR", "GB", "IN", "JP", "NL", "US")


def parse_args(argv: list[str]) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=env("LOADGEN_HOST", "mysql"))
    parser.add_argument("--port", type=int, default=int(env("LOADGEN_PORT", "3306")))
    parser.add_argument("--user", default=env("LOADGEN_USER", "app"))
    parser.add_argument("--password", default=env("LOADGEN_PASSWORD", "app-demo-password"))
    parser.add_argument("--database", default=env("LOADGEN_DATABASE", "shop"))
    parser.add_argument(
        "--rate",
        type=float,
        default=float(env("LOADGEN_RATE", "5")),
        help="row changes per second",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=float(env("LOADGEN_DURATION", "0")),
        help="seconds to run; 0 runs until stopped",
    )
    parser.add_argument("--max-rows", type=int, default=int(env("LOADGEN_MAX_ROWS", "500")))
    parser.add_argument(
        "--seed", type=int, default=None, help="random seed, for a repeatable sequence"
    )
    args = parser.parse_args(argv)
    if args.rate <= 0:
        parser.error("--rate must be positive")
    return args


def connect(args: argparse.Namespace, stop: threading.Event) -> pymysql.Connection[Any]:
    """A connection to the demo database; waits up to a minute for the server to come up."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return pymysql.connect(
                host=args.host,
                port=args.port,
                user=args.user,
                password=args.password,
                database=args.database,
                autocommit=True,
                charset="utf8mb4",
                connect_timeout=5,
            )
        except pymysql.err.OperationalError as exc:
            if time.monotonic() > deadline or stop.is_set():
                raise
            print(f"loadgen: waiting for {args.host}:{args.port}: {exc}", file=sys.stderr)
            stop.wait(2)


def live_ids(cur: Any) -> list[int]:
    cur.execute("SELECT id FROM customers WHERE is_deleted = 0")
    return [int(row[0]) for row in cur.fetchall()]


def change_once(cur: Any, rng: random.Random, max_rows: int, serial: int) -> str:
    """Make one row change and return its kind."""
    ids = live_ids(cur)
    roll = rng.random()
    if not ids or (roll < 0.5 and len(ids) < max_rows):
        attributes = {"country": rng.choice(COUNTRIES), "newsletter": rng.random() < 0.5}
        cur.execute(
            "INSERT INTO customers (email, name, tier, balance, attributes, internal_note) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (
                f"user-{uuid.uuid4().hex[:12]}@example.com",
                f"Customer {serial}",
                rng.choice(TIERS),
                f"{rng.uniform(0, 5000):.2f}",
                json.dumps(attributes),
                "not for the index",
            ),
        )
        return "insert"
    target = rng.choice(ids)
    if roll < 0.8:
        cur.execute(
            "UPDATE customers SET tier = %s, balance = balance + %s WHERE id = %s",
            (rng.choice(TIERS), f"{rng.uniform(-50, 50):.2f}", target),
        )
        return "update"
    if roll < 0.9:
        cur.execute("UPDATE customers SET is_deleted = 1 WHERE id = %s", (target,))
        return "soft-delete"
    cur.execute("DELETE FROM customers WHERE id = %s", (target,))
    return "delete"


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    rng = random.Random(args.seed)
    done: Counter[str] = Counter()
    conn = connect(args, stop)
    started = time.monotonic()
    last_report = started
    interval = 1 / args.rate
    next_at = started
    try:
        with conn.cursor() as cur:
            while not stop.is_set():
                now = time.monotonic()
                if args.duration and now - started >= args.duration:
                    break
                if stop.wait(max(0.0, next_at - now)):
                    break
                next_at += interval
                done[change_once(cur, rng, args.max_rows, sum(done.values()))] += 1
                if time.monotonic() - last_report >= 10:
                    last_report = time.monotonic()
                    print(f"loadgen: {dict(done)}", flush=True)
    finally:
        conn.close()
    elapsed = time.monotonic() - started
    print(f"loadgen: stopped after {elapsed:.1f} s: {dict(done)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
