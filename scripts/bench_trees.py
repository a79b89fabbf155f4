"""Denormalized documents: how fast a change reaches every document it affects, and what
building documents from several tables costs against a plain one-table mapping.

    .venv/bin/python scripts/bench_trees.py [--posts N] [--changes M]
    scripts/bench.sh --mode trees [...]          # the same, after scripts/setup.sh

On a throwaway MariaDB and an in-process `EsStandIn` that stores the documents:

1. Rename: the blog example (posts with comments, author and tags; configs/blog.yaml) with
   one user who wrote `--posts` posts. The connector runs; the user is renamed in one
   UPDATE; the time from that commit until every one of those posts in the index holds the
   new name, and the bulk items it took.
2. Child-heavy throughput: `--changes` comment inserts, updates and deletes (transactions of
   10) are written once; then, from the same binlog start, (a) a plain mapping of the
   comments table (each change one document) and (b) the posts tree (each change rebuilds its
   post from MySQL) each run until caught up. Prints changes/s of both and b/a.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))

from rig import MariaDB  # noqa: E402

from cdc.config import ConnectorConfig  # noqa: E402
from cdc.engine.pipeline import Pipeline  # noqa: E402
from cdc.model.checkpoint import Checkpoint  # noqa: E402
from cdc.model.versions import initial_counter  # noqa: E402
from cdc.sink.elastic import ElasticSink  # noqa: E402
from cdc.source import mysql  # noqa: E402
from cdc.source.rows import RowReader  # noqa: E402
from cdc.state.files import open_files  # noqa: E402
from cdc.testing import EsStandIn  # noqa: E402

SCHEMA = [
    "CREATE TABLE users (id INT PRIMARY KEY, name VARCHAR(100) NOT NULL)",
    "CREATE TABLE posts (id INT PRIMARY KEY, author_id INT NULL, title VARCHAR(200),"
    " body TEXT, published_at DATETIME(6), KEY (author_id))",
    "CREATE TABLE comments (id INT PRIMARY KEY, post_id INT NOT NULL, body VARCHAR(400),"
    " created_at DATETIME(6) NOT NULL, KEY (post_id))",
    "CREATE TABLE tags (id INT PRIMARY KEY, name VARCHAR(50) NOT NULL)",
    "CREATE TABLE post_tags (id INT PRIMARY KEY AUTO_INCREMENT, post_id INT NOT NULL,"
    " tag_id INT NOT NULL, KEY (post_id), KEY (tag_id))",
]
TREE: dict[str, Any] = {
    "table": "bench.posts",
    "index": "posts",
    "children": [
        {
            "table": "bench.comments",
            "field": "comments",
            "join": {"post_id": "id"},
            "include": ["id", "body", "created_at"],
            "order_by": "created_at",
        },
        {
            "table": "bench.users",
            "field": "author",
            "relationship": "one_to_one",
            "join": {"id": "author_id"},
            "include": ["id", "name"],
        },
        {
            "table": "bench.tags",
            "field": "tags",
            "through": {
                "table": "bench.post_tags",
                "join": {"post_id": "id"},
                "to": {"tag_id": "id"},
            },
            "include": ["name"],
        },
    ],
}
PLAIN: dict[str, Any] = {"table": "bench.comments", "index": "comments"}


def fill(db: MariaDB, posts: int, others: int) -> None:
    """User 1 wrote `posts` posts; `others` more posts by 99 other users; 3 comments and 2
    tags per post."""
    for ddl in SCHEMA:
        db.sql(ddl, db="bench")
    total = posts + others
    db.sql("INSERT INTO users SELECT seq, CONCAT('user ', seq) FROM seq_1_to_100", db="bench")
    db.sql(
        "INSERT INTO posts SELECT seq, IF(seq <= %s, 1, 2 + seq %% 99), CONCAT('post ', seq),"
        f" REPEAT('text ', 20), NOW(6) FROM seq_1_to_{total}",
        [posts],
        db="bench",
    )
    db.sql(
        "INSERT INTO comments SELECT seq, 1 + (seq - 1) DIV 3, CONCAT('comment ', seq),"
        f" NOW(6) + INTERVAL seq SECOND FROM seq_1_to_{3 * total}",
        db="bench",
    )
    db.sql("INSERT INTO tags SELECT seq, CONCAT('tag ', seq) FROM seq_1_to_50", db="bench")
    db.sql(
        "INSERT INTO post_tags (post_id, tag_id) SELECT 1 + (seq - 1) DIV 2, 1 + seq % 50"
        f" FROM seq_1_to_{2 * total}",
        db="bench",
    )


def config(db: MariaDB, url: str, workdir: Path, name: str, tables: list[Any]) -> ConnectorConfig:
    return ConnectorConfig.model_validate(
        {
            "name": name,
            "source": {
                "port": db.port,
                "user": "cdc",
                "password": "cdc",
                "server_id": 79,
                "heartbeat_interval": 0.5,
                "read_timeout": 60,
            },
            "sink": {"urls": [url], "request_timeout": 120},
            "checkpoint": {"file": {"path": str(workdir)}, "interval_ms": 100},
            "metrics": {"enabled": False},
            "snapshot": {"mode": "initial"},
            "tables": tables,
        }
    )


class Running:
    """A connector streaming on a thread until closed."""

    def __init__(self, cfg: ConnectorConfig, workdir: Path) -> None:
        self.sink = ElasticSink(cfg.sink)
        self.stop = threading.Event()
        self.pipeline = Pipeline(cfg, self.sink, open_files(str(workdir), cfg.name), stop=self.stop)
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.pipeline.run()
        except BaseException as exc:
            self.failure = exc
            raise

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)
        self.sink.close()


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out waiting for {what}")
        time.sleep(0.01)


def rename(db: MariaDB, url: str, standin: EsStandIn, workdir: Path, posts: int) -> dict[str, Any]:
    cfg = config(db, url, workdir, "rename", [TREE])
    total = len(db.query("SELECT id FROM posts", db="bench"))
    running = Running(cfg, workdir)
    ids = [str(n) for n in range(1, posts + 1)]
    try:
        wait_for(
            lambda: running.failure is not None or running.pipeline.stats.snapshot_rows >= total,
            600,
            "the snapshot",
        )
        if running.failure is not None:
            raise SystemExit(f"bench: the connector failed: {running.failure}")
        wait_for(lambda: running.pipeline.snapshots.quiet(), 60, "the snapshot to finish")
        time.sleep(1.0)
        before = standin.items.get("updated", 0)
        started = time.monotonic()
        db.sql("UPDATE users SET name = 'renamed' WHERE id = 1", db="bench")

        def done() -> bool:
            docs = running.sink.mget("posts", ids)
            return all((d.get("author") or {}).get("name") == "renamed" for d in docs.values())

        wait_for(done, 120, "every post of the renamed user")
        seconds = time.monotonic() - started
        items = standin.items.get("updated", 0) - before
    finally:
        running.close()
    return {"seconds": seconds, "items": items}


def workload(db: MariaDB, changes: int, posts: int) -> None:
    """`changes` comment inserts, updates, moves and deletes, 10 per transaction."""
    rng = random.Random(11)
    conn = db.connect(database="bench", autocommit=False)
    next_id = 10_000_000
    live: list[int] = [r[0] for r in db.query("SELECT id FROM comments", db="bench")]
    with conn.cursor() as cur:
        for start in range(0, changes, 10):
            for _ in range(min(10, changes - start)):
                roll = rng.random()
                if roll < 0.4 or not live:
                    next_id += 1
                    cur.execute(
                        "INSERT INTO comments VALUES (%s, %s, 'new comment', NOW(6))",
                        (next_id, rng.randint(1, posts)),
                    )
                    live.append(next_id)
                elif roll < 0.8:
                    cur.execute(
                        "UPDATE comments SET body = CONCAT(body, '!') WHERE id = %s",
                        (rng.choice(live),),
                    )
                elif roll < 0.9:
                    cur.execute(
                        "UPDATE comments SET post_id = %s WHERE id = %s",
                        (rng.randint(1, posts), rng.choice(live)),
                    )
                else:
                    victim = live.pop(rng.randrange(len(live)))
                    cur.execute("DELETE FROM comments WHERE id = %s", (victim,))
            conn.commit()
    conn.close()


def catch_up(cfg: ConnectorConfig, workdir: Path, start: Checkpoint) -> tuple[float, int]:
    """Stream from `start` until caught up; (wall seconds, row changes read)."""
    stores = open_files(str(workdir), cfg.name)
    stores.checkpoints.save(start.stamped())
    sink = ElasticSink(cfg.sink)
    started = time.monotonic()
    stats = Pipeline(cfg, sink, stores, stop=threading.Event()).run(until_caught_up=True)
    seconds = time.monotonic() - started
    sink.close()
    return seconds, stats.changes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=1000, help="posts of the renamed user")
    parser.add_argument("--others", type=int, default=20_000, help="posts of other users")
    parser.add_argument("--changes", type=int, default=30_000, help="comment changes streamed")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")

    server = MariaDB(extra_args=["--innodb-buffer-pool-size=512M"])
    with server as db, tempfile.TemporaryDirectory() as tmp:
        db.start()
        workdir = Path(tmp)
        db.sql("CREATE DATABASE bench")
        fill(db, args.posts, args.others)
        total = args.posts + args.others
        print(f"{total:,} posts ({args.posts:,} by the renamed user), {3 * total:,} comments")

        with EsStandIn() as standin:
            standin.start()
            result = rename(db, standin.url, standin, workdir / "rename", args.posts)
        print(
            f"rename of a user with {args.posts:,} posts: every document updated "
            f"{result['seconds'] * 1000:.0f} ms after the commit ({result['items']:,} documents)"
        )

        source = config(db, "http://x", workdir, "p", [PLAIN]).source
        with RowReader(source) as reader:
            position = reader.position()
        conn = mysql.connect(source)
        try:
            identity = mysql.server_info(conn).identity
        finally:
            conn.close()
        start = Checkpoint(position, initial_counter(), identity)
        started = time.monotonic()
        workload(db, args.changes, total)
        print(f"wrote {args.changes:,} comment changes in {time.monotonic() - started:.1f} s")
        rates = {}
        for label, tables in (("a plain comments mapping", [PLAIN]), ("b posts tree", [TREE])):
            with EsStandIn(store=False) as standin:
                standin.start()
                run_dir = workdir / label[0]
                run_dir.mkdir()
                cfg = config(db, standin.url, run_dir, f"run-{label[0]}", tables)
                cfg = cfg.model_copy(
                    update={"snapshot": cfg.snapshot.model_copy(update={"mode": "never"})}
                )
                seconds, changes = catch_up(cfg, run_dir, start)
            if changes != args.changes:
                raise SystemExit(f"bench: {label} read {changes} changes, expected {args.changes}")
            rates[label] = changes / seconds
            print(
                f"({label}) {changes:,} changes in {seconds:.1f} s: {rates[label]:,.0f} changes/s"
            )
        a, b = rates.values()
        print(f"ratio b/a (tree vs plain, same changes): {b / a:.2f}")


if __name__ == "__main__":
    main()
