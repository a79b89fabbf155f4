"""Denormalized documents: one document built from several tables (`children` in a mapping).

Each test compares the whole index with documents built here, independently of the
connector, by plain SELECTs and formatting of their own: same ids, equal documents, no extras.
Random workloads change every table of the tree (inserts, updates, deletes, rows moved to
another parent, primary-key changes, rows deleted and inserted again with the same id) while
the connector runs, is killed with SIGKILL and starts again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from harness import CdcProcess, run_until_caught_up, stored_checkpoint, wait_for, write_config
from rig import MariaDB, Osmem

from cdc.model.lag import reached
from cdc.model.position import Position

Doc = dict[str, Any]
Docs = dict[str, Doc]

# --- values formatted as the spec says, without the connector's converters -----------------


def _dt(value: dt.datetime | None) -> str | None:
    """DATETIME as ISO 8601 in UTC: microseconds only when non-zero, as `isoformat` does."""
    return None if value is None else value.isoformat() + "Z"


def _dec(value: Decimal | None) -> str | None:
    """DECIMAL as exact fixed-point text keeping the scale ("12.50")."""
    return None if value is None else format(value, "f")


def _select(mariadb: MariaDB, db: str, *statements: str) -> list[list[tuple[Any, ...]]]:
    """Run SELECTs in one consistent snapshot; their rows, statement by statement."""
    conn = mariadb.connect(database=db, autocommit=False)
    with contextlib.closing(conn), conn.cursor() as cur:
        cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        results = []
        for statement in statements:
            cur.execute(statement)
            results.append(list(cur.fetchall()))
        conn.rollback()
    return results


# --- comparing a whole index ----------------------------------------------------------------


def _id_key(doc_id: str) -> tuple[int, str]:
    return (len(doc_id), doc_id)


def _short(value: Any, limit: int = 400) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _differences(actual: Docs, expected: Docs, limit: int = 8) -> str | None:
    """None when equal; otherwise a report naming missing, extra and differing ids and fields."""
    if actual == expected:
        return None
    missing = sorted(set(expected) - set(actual), key=_id_key)
    extra = sorted(set(actual) - set(expected), key=_id_key)
    different = [
        doc_id
        for doc_id in sorted(set(expected) & set(actual), key=_id_key)
        if actual[doc_id] != expected[doc_id]
    ]
    lines = [
        f"the index ({len(actual)} documents) differs from MySQL ({len(expected)} documents): "
        f"{len(missing)} missing, {len(extra)} extra, {len(different)} different"
    ]
    if missing:
        lines.append(f"missing ids: {missing[:20]}{' …' if len(missing) > 20 else ''}")
    if extra:
        lines.append(f"extra ids: {extra[:20]}{' …' if len(extra) > 20 else ''}")
    for doc_id in different[:limit]:
        want, got = expected[doc_id], actual[doc_id]
        fields = sorted(
            name for name in set(want) | set(got) if want.get(name, ...) != got.get(name, ...)
        )
        lines.append(f"id {doc_id}: fields {fields}")
        for name in fields[:4]:
            lines.append(f"    {name}: expected {_short(want.get(name, '<absent>'))}")
            lines.append(f"    {name}:   actual {_short(got.get(name, '<absent>'))}")
    if len(different) > limit:
        lines.append(f"… and {len(different) - limit} more different documents")
    return "\n".join(lines)


def _assert_index_equals(osmem: Osmem, index: str, build: Callable[[], Docs]) -> None:
    expected = build()
    report = _differences(osmem.all_docs(index), expected)
    assert report is None, report


def _wait_index_equals(
    osmem: Osmem, index: str, build: Callable[[], Docs], timeout: float = 30
) -> None:
    """Wait for the index to equal `build()`; on timeout, fail with the differences."""
    with contextlib.suppress(AssertionError):
        wait_for(
            lambda: _differences(osmem.all_docs(index), build()) is None,
            timeout=timeout,
            what="the index to equal MySQL",
        )
    _assert_index_equals(osmem, index, build)


def _properties(osmem: Osmem, index: str) -> dict[str, Any]:
    """The field mappings of the index (behind `index` if it is an alias)."""
    _, body = osmem.request("GET", f"/{index}/_mapping")
    (mapping,) = body.values()
    properties: dict[str, Any] = mapping["mappings"].get("properties", {})
    return properties


def _caught_up(mariadb: MariaDB, config: Path) -> bool:
    checkpoint = stored_checkpoint(config)
    if checkpoint is None:
        return False
    gtid = mariadb.query("SELECT @@GLOBAL.gtid_binlog_pos")[0][0]
    return reached(checkpoint.position, Position("mariadb", gtid))


# --- blog: posts with comments, an author and tags -------------------------------------------

BLOG_DDL = (
    "CREATE TABLE posts (id INT PRIMARY KEY, author_id INT NULL, title VARCHAR(100),"
    " published_at DATETIME NULL, KEY (author_id))",
    "CREATE TABLE users (id INT PRIMARY KEY, name VARCHAR(100))",
    "CREATE TABLE comments (id INT PRIMARY KEY, post_id INT NOT NULL, body VARCHAR(200),"
    " created_at DATETIME(6) NOT NULL, KEY (post_id))",
    "CREATE TABLE tags (id INT PRIMARY KEY, name VARCHAR(50))",
    "CREATE TABLE post_tags (id INT PRIMARY KEY AUTO_INCREMENT, post_id INT NOT NULL,"
    " tag_id INT NOT NULL, KEY (post_id), KEY (tag_id))",
)


def _create_blog(mariadb: MariaDB, db: str) -> None:
    for ddl in BLOG_DDL:
        mariadb.sql(ddl, db=db)


def _blog_mapping(db: str, index: str) -> dict[str, Any]:
    """The mapping of the spec, word for word (with the test's database for `blog`)."""
    return {
        "table": f"{db}.posts",
        "index": index,
        "children": [
            {
                "table": f"{db}.comments",
                "field": "comments",
                "join": {"post_id": "id"},
                "include": ["id", "body", "created_at"],
                "order_by": "created_at",
            },
            {
                "table": f"{db}.users",
                "field": "author",
                "relationship": "one_to_one",
                "join": {"id": "author_id"},
                "include": ["id", "name"],
            },
            {
                "table": f"{db}.tags",
                "field": "tags",
                "through": {
                    "table": f"{db}.post_tags",
                    "join": {"post_id": "id"},
                    "to": {"tag_id": "id"},
                },
                "include": ["name"],
            },
        ],
    }


def _expected_posts(
    mariadb: MariaDB,
    db: str,
    *,
    tags: bool = True,
    comment_order: str = "c.created_at, c.id",
) -> Docs:
    """Every post's document, from plain SELECTs."""
    statements = [
        "SELECT id, author_id, title, published_at FROM posts",
        "SELECT id, name FROM users",
        f"SELECT c.id, c.post_id, c.body, c.created_at FROM comments c ORDER BY {comment_order}",
    ]
    if tags:
        statements.append(
            "SELECT pt.post_id, t.name FROM post_tags pt JOIN tags t ON t.id = pt.tag_id"
            " ORDER BY t.id, pt.id"
        )
    results = _select(mariadb, db, *statements)
    posts, users, comment_rows = results[0], results[1], results[2]
    authors = {uid: {"id": uid, "name": name} for uid, name in users}
    comments: dict[int, list[Doc]] = defaultdict(list)
    for cid, post_id, body, created_at in comment_rows:
        comments[post_id].append({"id": cid, "body": body, "created_at": _dt(created_at)})
    post_tags: dict[int, list[Doc]] = defaultdict(list)
    for post_id, name in results[3] if tags else []:
        post_tags[post_id].append({"name": name})
    docs: Docs = {}
    for pid, author_id, title, published_at in posts:
        doc: Doc = {
            "id": pid,
            "author_id": author_id,
            "title": title,
            "published_at": _dt(published_at),
            "comments": comments.get(pid, []),
            "author": authors.get(author_id) if author_id is not None else None,
        }
        if tags:
            doc["tags"] = post_tags.get(pid, [])
        docs[str(pid)] = doc
    return docs


BASE_TIME = dt.datetime(2024, 1, 2, 3, 4, 5)
WORDS = ("alpha", "beta", "gamma", "delta", "héllo", "naïve 🚀", "zeta", "omega")


class _Workload:
    """Random transactions of 1-5 statements on one database's tables, seeded.

    Row choices come from the tables as they are (read inside the transaction), so every
    statement hits rows that exist, and the run is the same for the same seed. Deleted ids are
    remembered so that rows come back with the same id.
    """

    def __init__(self, mariadb: MariaDB, db: str, seed: int) -> None:
        self.rng = random.Random(seed)
        self.conn = mariadb.connect(database=db, autocommit=False)
        self.cur = self.conn.cursor()
        self.next_id = 10_000
        self.gone: dict[str, list[int]] = defaultdict(list)
        self.transactions = 0
        self.statements = 0
        self.counts: dict[str, int] = defaultdict(int)

    def close(self) -> None:
        self.cur.close()
        self.conn.close()

    def ids(self, table: str, where: str = "", params: Sequence[Any] = ()) -> list[int]:
        self.cur.execute(f"SELECT id FROM {table} {where} ORDER BY id", tuple(params))
        return [row[0] for row in self.cur.fetchall()]

    def pick(self, table: str, where: str = "", params: Sequence[Any] = ()) -> int | None:
        ids = self.ids(table, where, params)
        return self.rng.choice(ids) if ids else None

    def new_id(self, table: str) -> int:
        """An id not in `table`: one deleted earlier (a row coming back) or a fresh one."""
        gone = self.gone[table]
        if gone and self.rng.random() < 0.4:
            candidate = gone.pop(self.rng.randrange(len(gone)))
            if not self.ids(table, "WHERE id = %s", (candidate,)):
                return candidate
        self.next_id += 1
        while self.ids(table, "WHERE id = %s", (self.next_id,)):  # taken by AUTO_INCREMENT
            self.next_id += 1
        return self.next_id

    def execute(self, op: str, statement: str, params: Sequence[Any] = ()) -> int:
        self.counts[op] += 1
        self.statements += 1
        return int(self.cur.execute(statement, tuple(params)))

    def delete(self, op: str, table: str, row_id: int) -> None:
        self.execute(op, f"DELETE FROM {table} WHERE id = %s", (row_id,))
        self.gone[table].append(row_id)

    def change_pk(self, op: str, table: str, row_id: int) -> int:
        new = self.new_id(table)
        self.execute(op, f"UPDATE {table} SET id = %s WHERE id = %s", (new, row_id))
        self.gone[table].append(row_id)
        return new

    def transaction(self, operations: Sequence[tuple[float, Callable[[], None]]]) -> None:
        total = sum(weight for weight, _ in operations)
        for _ in range(self.rng.randint(1, 5)):
            roll = self.rng.uniform(0, total)
            for weight, operation in operations:
                roll -= weight
                if roll <= 0:
                    operation()
                    break
        self.conn.commit()
        self.transactions += 1

    def word(self) -> str:
        return f"{self.rng.choice(WORDS)} {self.rng.randint(1, 999)}"

    def moment(self, spread: int = 30) -> dt.datetime:
        # Few distinct values, so that order_by columns tie and the primary key decides.
        return BASE_TIME + dt.timedelta(
            seconds=self.rng.randint(0, spread),
            microseconds=self.rng.choice((0, 0, 123456, 500000, 999999)),
        )


class _BlogWorkload(_Workload):
    """Every kind of change the spec names, on posts, users, comments, tags and post_tags."""

    def author(self) -> int | None:
        roll = self.rng.random()
        if roll < 0.1:
            return None
        if roll < 0.15:
            return 999_999  # a user that does not exist
        return self.pick("users")

    def seed_rows(
        self, posts: int = 30, users: int = 8, comments: int = 80, tags: int = 10
    ) -> None:
        for uid in range(1, users + 1):
            self.execute("seed", "INSERT INTO users VALUES (%s, %s)", (uid, f"user {uid}"))
        for tid in range(1, tags + 1):
            self.execute("seed", "INSERT INTO tags VALUES (%s, %s)", (tid, f"tag {tid}"))
        for pid in range(1, posts + 1):
            published = None if pid % 5 == 0 else self.moment(100_000)
            self.execute(
                "seed",
                "INSERT INTO posts VALUES (%s, %s, %s, %s)",
                (pid, self.author(), f"post {pid}", published),
            )
        for cid in range(1, comments + 1):
            self.execute(
                "seed",
                "INSERT INTO comments VALUES (%s, %s, %s, %s)",
                (cid, self.rng.randint(1, posts - 3), self.word(), self.moment()),
            )
        for _ in range(posts * 2):
            self.execute(
                "seed",
                "INSERT INTO post_tags (post_id, tag_id) VALUES (%s, %s)",
                (self.rng.randint(1, posts), self.rng.randint(1, tags)),
            )
        self.conn.commit()

    # posts

    def insert_post(self) -> None:
        published = None if self.rng.random() < 0.2 else self.moment(100_000)
        self.execute(
            "insert post",
            "INSERT INTO posts VALUES (%s, %s, %s, %s)",
            (self.new_id("posts"), self.author(), self.word(), published),
        )

    def update_post(self) -> None:
        pid = self.pick("posts")
        if pid is None:
            return
        column, value = self.rng.choice(
            [
                ("title", self.word()),
                ("published_at", None if self.rng.random() < 0.3 else self.moment(100_000)),
                ("author_id", self.author()),
            ]
        )
        self.execute(
            f"update post {column}", f"UPDATE posts SET {column} = %s WHERE id = %s", (value, pid)
        )

    def delete_post(self) -> None:
        pid = self.pick("posts")
        if pid is not None:
            self.delete("delete post", "posts", pid)

    def change_post_pk(self) -> None:
        pid = self.pick("posts")
        if pid is None:
            return
        new = self.change_pk("post pk change", "posts", pid)
        if self.rng.random() < 0.5:  # as a cascade would: the children follow their post
            self.execute(
                "comments follow post pk",
                "UPDATE comments SET post_id = %s WHERE post_id = %s",
                (new, pid),
            )
            self.execute(
                "links follow post pk",
                "UPDATE post_tags SET post_id = %s WHERE post_id = %s",
                (new, pid),
            )

    # users

    def insert_user(self) -> None:
        self.execute(
            "insert user", "INSERT INTO users VALUES (%s, %s)", (self.new_id("users"), self.word())
        )

    def rename_user(self) -> None:
        # Mostly the user with the most posts: one row change, many documents.
        self.cur.execute(
            "SELECT u.id FROM users u JOIN posts p ON p.author_id = u.id GROUP BY u.id"
            " ORDER BY COUNT(*) DESC, u.id LIMIT 1"
        )
        row = self.cur.fetchone()
        uid = row[0] if row and self.rng.random() < 0.7 else self.pick("users")
        if uid is not None:
            self.execute(
                "rename user", "UPDATE users SET name = %s WHERE id = %s", (self.word(), uid)
            )

    def delete_user(self) -> None:
        uid = self.pick("users")
        if uid is not None and len(self.ids("users")) > 3:
            self.delete("delete user", "users", uid)

    def change_user_pk(self) -> None:
        uid = self.pick("users")
        if uid is None:
            return
        new = self.change_pk("user pk change", "users", uid)
        if self.rng.random() < 0.5:
            self.execute(
                "posts follow user pk",
                "UPDATE posts SET author_id = %s WHERE author_id = %s",
                (new, uid),
            )

    # comments

    def comment_post(self) -> int:
        pid = self.pick("posts")
        if pid is None or self.rng.random() < 0.05:
            return 888_888  # a post that does not exist (yet)
        return pid

    def insert_comment(self) -> None:
        self.execute(
            "insert comment",
            "INSERT INTO comments VALUES (%s, %s, %s, %s)",
            (self.new_id("comments"), self.comment_post(), self.word(), self.moment()),
        )

    def update_comment(self) -> None:
        cid = self.pick("comments")
        if cid is None:
            return
        if self.rng.random() < 0.5:
            self.execute(
                "update comment body",
                "UPDATE comments SET body = %s WHERE id = %s",
                (self.word(), cid),
            )
        else:
            self.execute(
                "update comment created_at",
                "UPDATE comments SET created_at = %s WHERE id = %s",
                (self.moment(), cid),
            )

    def move_comment(self) -> None:
        cid = self.pick("comments")
        if cid is not None:
            self.execute(
                "move comment",
                "UPDATE comments SET post_id = %s WHERE id = %s",
                (self.comment_post(), cid),
            )

    def delete_comment(self) -> None:
        cid = self.pick("comments")
        if cid is not None:
            self.delete("delete comment", "comments", cid)

    def delete_last_comment(self) -> None:
        self.cur.execute(
            "SELECT MIN(c.id) FROM comments c JOIN posts p ON p.id = c.post_id"
            " GROUP BY c.post_id HAVING COUNT(*) = 1 ORDER BY 1"
        )
        only = [row[0] for row in self.cur.fetchall()]
        if only:
            self.delete("delete last comment", "comments", self.rng.choice(only))
            return
        pid = self.pick("posts", "WHERE id IN (SELECT post_id FROM comments)")
        if pid is not None:
            self.execute(
                "delete every comment of a post", "DELETE FROM comments WHERE post_id = %s", (pid,)
            )

    def change_comment_pk(self) -> None:
        cid = self.pick("comments")
        if cid is not None:
            self.change_pk("comment pk change", "comments", cid)

    # tags and post_tags

    def insert_tag(self) -> None:
        self.execute(
            "insert tag", "INSERT INTO tags VALUES (%s, %s)", (self.new_id("tags"), self.word())
        )

    def rename_tag(self) -> None:
        tid = self.pick("tags")
        if tid is not None:
            self.execute(
                "rename tag", "UPDATE tags SET name = %s WHERE id = %s", (self.word(), tid)
            )

    def delete_tag(self) -> None:
        tid = self.pick("tags")
        if tid is not None and len(self.ids("tags")) > 3:
            self.delete("delete tag", "tags", tid)

    def change_tag_pk(self) -> None:
        tid = self.pick("tags")
        if tid is None:
            return
        new = self.change_pk("tag pk change", "tags", tid)
        if self.rng.random() < 0.5:
            self.execute(
                "links follow tag pk",
                "UPDATE post_tags SET tag_id = %s WHERE tag_id = %s",
                (new, tid),
            )

    def link(self, pid: int) -> None:
        tid = self.pick("tags")
        if tid is None:
            return
        if self.rng.random() < 0.3:
            self.execute(
                "insert link, explicit id",
                "INSERT INTO post_tags VALUES (%s, %s, %s)",
                (self.new_id("post_tags"), pid, tid),
            )
        else:
            self.execute(
                "insert link",
                "INSERT INTO post_tags (post_id, tag_id) VALUES (%s, %s)",
                (pid, tid),
            )

    def retag(self) -> None:
        pid = self.pick("posts")
        if pid is None:
            return
        self.execute("retag: unlink all", "DELETE FROM post_tags WHERE post_id = %s", (pid,))
        for _ in range(self.rng.randint(0, 3)):
            self.link(pid)

    def tag_post(self) -> None:
        pid = self.pick("posts")
        if pid is not None:
            self.link(pid)

    def untag(self) -> None:
        lid = self.pick("post_tags")
        if lid is not None:
            self.delete("delete link", "post_tags", lid)

    def repoint_link(self) -> None:
        lid, tid = self.pick("post_tags"), self.pick("tags")
        if lid is None or tid is None:
            return
        if self.rng.random() < 0.5:
            self.execute(
                "link to another tag", "UPDATE post_tags SET tag_id = %s WHERE id = %s", (tid, lid)
            )
        else:
            self.execute(
                "link to another post",
                "UPDATE post_tags SET post_id = %s WHERE id = %s",
                (self.comment_post(), lid),
            )

    def change_link_pk(self) -> None:
        lid = self.pick("post_tags")
        if lid is not None:
            self.change_pk("link pk change", "post_tags", lid)

    def step(self) -> None:
        self.transaction(
            [
                (4, self.insert_post),
                (5, self.update_post),
                (2, self.delete_post),
                (2, self.change_post_pk),
                (2, self.insert_user),
                (4, self.rename_user),
                (1, self.delete_user),
                (1.5, self.change_user_pk),
                (8, self.insert_comment),
                (4, self.update_comment),
                (4, self.move_comment),
                (2, self.delete_comment),
                (2, self.delete_last_comment),
                (1.5, self.change_comment_pk),
                (1, self.insert_tag),
                (2, self.rename_tag),
                (0.5, self.delete_tag),
                (1, self.change_tag_pk),
                (3, self.retag),
                (3, self.tag_post),
                (2, self.untag),
                (2, self.repoint_link),
                (1, self.change_link_pk),
            ]
        )


def test_a_random_workload_on_five_tables_with_kills_keeps_every_post_document_right(
    mariadb: MariaDB, osmem: Osmem, fresh_db: str, es_index: str, redis_url: str, tmp_path: Path
) -> None:
    db = fresh_db
    _create_blog(mariadb, db)
    work = _BlogWorkload(mariadb, db, seed=20240102)
    work.seed_rows()
    for _ in range(20):  # history before the first start, copied by the snapshot
        work.step()
    config = write_config(
        tmp_path / "c.yaml",
        port=mariadb.port,
        es_url=osmem.url,
        redis_url=redis_url,
        tables=[_blog_mapping(db, es_index)],
        name=db,
        snapshot={"mode": "initial", "chunk_size": 10},
        sink={"bulk": {"flush_interval_ms": 50, "max_actions": 50}},
    )

    def expected() -> Docs:
        return _expected_posts(mariadb, db)

    def progressed(since: Any) -> Callable[[], bool]:
        def check() -> bool:
            now = stored_checkpoint(config)
            return now is not None and (since is None or now.position != since.position)

        return check

    transactions, kills = 360, 0
    kill_at = {110: 30, 230: 30}  # after this many transactions: kill, and stay down for so many
    proc = CdcProcess(config)
    try:
        wait_for(lambda: osmem.count(es_index) > 0, 60, "the first documents")
        n = 0
        while n < transactions:
            work.step()
            n += 1
            time.sleep(0.01)
            if n in kill_at:
                proc.kill()
                proc.wait()
                kills += 1
                assert proc.proc.returncode == -9, proc.log()
                before = stored_checkpoint(config)
                for _ in range(kill_at[n]):  # changes while the connector is down
                    work.step()
                    n += 1
                proc = CdcProcess(config)
                for _ in range(20):
                    work.step()
                    n += 1
                    time.sleep(0.01)
                wait_for(progressed(before), 60, "the restarted connector to make progress")
        work.close()
        wait_for(lambda: _caught_up(mariadb, config), 60, "the connector to catch up")
        _wait_index_equals(osmem, es_index, expected)
        assert proc.proc.poll() is None, proc.log()
        proc.terminate()
        assert proc.wait(timeout=20) == 0, proc.log()
    finally:
        if proc.proc.poll() is None:
            proc.kill()
        proc.wait()

    docs = osmem.all_docs(es_index)
    print(
        f"\nblog: {work.transactions} transactions, {work.statements} statements, {kills} kill -9;"
        f" {len(docs)} posts, {sum(len(d['comments']) for d in docs.values())} comments,"
        f" {sum(len(d['tags']) for d in docs.values())} tags in documents\n"
        + ", ".join(f"{op} {count}" for op, count in sorted(work.counts.items()))
    )
    assert kills >= 2
    assert work.transactions >= 300
    # The workload did what it says, and the documents show it.
    for op in (
        "move comment",
        "delete last comment",
        "rename user",
        "retag: unlink all",
        "post pk change",
        "comment pk change",
        "user pk change",
        "tag pk change",
    ):
        assert work.counts[op] > 0, op
    assert any(d["comments"] == [] for d in docs.values())
    assert any(len(d["comments"]) > 2 for d in docs.values())
    assert any(d["author"] is None for d in docs.values())
    assert any(d["author"] is not None for d in docs.values())
    assert any(len(d["tags"]) > 1 for d in docs.values())
    # Arrays are mapped `nested` by default (so a query on two fields matches one element).
    properties = _properties(osmem, es_index)
    assert properties["comments"]["type"] == "nested", properties
    assert properties["tags"]["type"] == "nested", properties
    assert properties.get("author", {}).get("type") != "nested", properties


# --- shop: orders with lines, each line with its product (three levels) ----------------------

SHOP_DDL = (
    "CREATE TABLE orders (id INT PRIMARY KEY, customer VARCHAR(100), placed_at DATETIME)",
    "CREATE TABLE order_lines (id INT PRIMARY KEY, order_id INT NOT NULL,"
    " product_id INT NOT NULL, qty INT, KEY (order_id), KEY (product_id))",
    "CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(100), price DECIMAL(10,2))",
)


def _shop_mapping(db: str, index: str) -> dict[str, Any]:
    return {
        "table": f"{db}.orders",
        "index": index,
        "children": [
            {
                "table": f"{db}.order_lines",
                "field": "lines",
                "join": {"order_id": "id"},
                "exclude": ["order_id"],
                "order_by": "id",
                "nested": False,
                "children": [
                    {
                        "table": f"{db}.products",
                        "field": "product",
                        "relationship": "one_to_one",
                        "join": {"id": "product_id"},
                        "rename": {"name": "title"},
                    }
                ],
            }
        ],
    }


def _expected_orders(mariadb: MariaDB, db: str) -> Docs:
    orders, lines, products = _select(
        mariadb,
        db,
        "SELECT id, customer, placed_at FROM orders",
        "SELECT id, order_id, product_id, qty FROM order_lines ORDER BY id",
        "SELECT id, name, price FROM products",
    )
    by_id = {pid: {"id": pid, "title": name, "price": _dec(price)} for pid, name, price in products}
    order_lines: dict[int, list[Doc]] = defaultdict(list)
    for lid, order_id, product_id, qty in lines:
        order_lines[order_id].append(
            {"id": lid, "product_id": product_id, "qty": qty, "product": by_id.get(product_id)}
        )
    return {
        str(oid): {
            "id": oid,
            "customer": customer,
            "placed_at": _dt(placed_at),
            "lines": order_lines.get(oid, []),
        }
        for oid, customer, placed_at in orders
    }


class _ShopWorkload(_Workload):
    def price(self) -> Decimal:
        return Decimal(self.rng.randint(0, 10_000)) / 100

    def seed_rows(self) -> None:
        for pid in range(1, 7):
            self.execute(
                "seed",
                "INSERT INTO products VALUES (%s, %s, %s)",
                (pid, f"product {pid}", self.price()),
            )
        for oid in range(1, 26):
            self.execute(
                "seed",
                "INSERT INTO orders VALUES (%s, %s, %s)",
                (oid, f"customer {oid % 7}", None if oid % 9 == 0 else self.moment(100_000)),
            )
        for lid in range(1, 81):
            self.execute(
                "seed",
                "INSERT INTO order_lines VALUES (%s, %s, %s, %s)",
                (lid, self.rng.randint(1, 22), self.rng.randint(1, 6), self.rng.randint(1, 9)),
            )
        self.conn.commit()

    def line_order(self) -> int:
        oid = self.pick("orders")
        return 777_777 if oid is None or self.rng.random() < 0.05 else oid

    def line_product(self) -> int:
        pid = self.pick("products")
        return 666_666 if pid is None or self.rng.random() < 0.05 else pid

    def insert_order(self) -> None:
        self.execute(
            "insert order",
            "INSERT INTO orders VALUES (%s, %s, %s)",
            (self.new_id("orders"), self.word(), self.moment(100_000)),
        )

    def update_order(self) -> None:
        oid = self.pick("orders")
        if oid is not None:
            self.execute(
                "update order",
                "UPDATE orders SET customer = %s, placed_at = %s WHERE id = %s",
                (self.word(), None if self.rng.random() < 0.2 else self.moment(100_000), oid),
            )

    def delete_order(self) -> None:
        oid = self.pick("orders")
        if oid is not None:
            self.delete("delete order", "orders", oid)

    def change_order_pk(self) -> None:
        oid = self.pick("orders")
        if oid is None:
            return
        new = self.change_pk("order pk change", "orders", oid)
        if self.rng.random() < 0.5:
            self.execute(
                "lines follow order pk",
                "UPDATE order_lines SET order_id = %s WHERE order_id = %s",
                (new, oid),
            )

    def insert_line(self) -> None:
        self.execute(
            "insert line",
            "INSERT INTO order_lines VALUES (%s, %s, %s, %s)",
            (self.new_id("order_lines"), self.line_order(), self.line_product(), 1),
        )

    def update_line(self) -> None:
        lid = self.pick("order_lines")
        if lid is None:
            return
        if self.rng.random() < 0.6:
            self.execute(
                "update line qty", "UPDATE order_lines SET qty = qty + 1 WHERE id = %s", (lid,)
            )
        else:
            self.execute(
                "line to another product",
                "UPDATE order_lines SET product_id = %s WHERE id = %s",
                (self.line_product(), lid),
            )

    def move_line(self) -> None:
        lid = self.pick("order_lines")
        if lid is not None:
            self.execute(
                "move line",
                "UPDATE order_lines SET order_id = %s WHERE id = %s",
                (self.line_order(), lid),
            )

    def delete_line(self) -> None:
        lid = self.pick("order_lines")
        if lid is not None:
            self.delete("delete line", "order_lines", lid)

    def change_line_pk(self) -> None:
        lid = self.pick("order_lines")
        if lid is not None:  # the line's place in its order follows its new id
            self.change_pk("line pk change", "order_lines", lid)

    def insert_product(self) -> None:
        self.execute(
            "insert product",
            "INSERT INTO products VALUES (%s, %s, %s)",
            (self.new_id("products"), self.word(), self.price()),
        )

    def rename_product(self) -> None:
        self.cur.execute(
            "SELECT product_id FROM order_lines GROUP BY product_id"
            " ORDER BY COUNT(*) DESC, product_id LIMIT 1"
        )
        row = self.cur.fetchone()
        pid = row[0] if row and self.rng.random() < 0.7 else self.pick("products")
        if pid is not None:
            self.execute(
                "rename product",
                "UPDATE products SET name = %s, price = %s WHERE id = %s",
                (self.word(), self.price(), pid),
            )

    def delete_product(self) -> None:
        pid = self.pick("products")
        if pid is not None and len(self.ids("products")) > 3:
            self.delete("delete product", "products", pid)

    def change_product_pk(self) -> None:
        pid = self.pick("products")
        if pid is None:
            return
        new = self.change_pk("product pk change", "products", pid)
        if self.rng.random() < 0.5:
            self.execute(
                "lines follow product pk",
                "UPDATE order_lines SET product_id = %s WHERE product_id = %s",
                (new, pid),
            )

    def step(self) -> None:
        self.transaction(
            [
                (3, self.insert_order),
                (3, self.update_order),
                (1.5, self.delete_order),
                (1.5, self.change_order_pk),
                (8, self.insert_line),
                (5, self.update_line),
                (5, self.move_line),
                (3, self.delete_line),
                (1.5, self.change_line_pk),
                (1, self.insert_product),
                (4, self.rename_product),
                (0.7, self.delete_product),
                (1, self.change_product_pk),
            ]
        )


def test_a_three_level_tree_stays_right_under_a_random_workload(
    mariadb: MariaDB, osmem: Osmem, fresh_db: str, es_index: str, redis_url: str, tmp_path: Path
) -> None:
    db = fresh_db
    for ddl in SHOP_DDL:
        mariadb.sql(ddl, db=db)
    work = _ShopWorkload(mariadb, db, seed=77)
    work.seed_rows()
    config = write_config(
        tmp_path / "c.yaml",
        port=mariadb.port,
        es_url=osmem.url,
        redis_url=redis_url,
        tables=[_shop_mapping(db, es_index)],
        name=db,
        snapshot={"mode": "initial", "chunk_size": 7},
    )

    def expected() -> Docs:
        return _expected_orders(mariadb, db)

    run_until_caught_up(config)  # the snapshot
    _assert_index_equals(osmem, es_index, expected)
    for _ in range(4):
        for _ in range(75):
            work.step()
        run_until_caught_up(config)
        _assert_index_equals(osmem, es_index, expected)
    work.close()

    docs = osmem.all_docs(es_index)
    print(
        f"\nshop: {work.transactions} transactions, {work.statements} statements; "
        + ", ".join(f"{op} {count}" for op, count in sorted(work.counts.items()))
    )
    for op in ("move line", "rename product", "product pk change", "line pk change"):
        assert work.counts[op] > 0, op
    lines = [line for doc in docs.values() for line in doc["lines"]]
    assert any(line["product"] is None for line in lines)
    assert sum(line["product"] is not None for line in lines) > 20
    assert any(doc["lines"] == [] for doc in docs.values())
    assert _properties(osmem, es_index).get("lines", {}).get("type") != "nested"


# --- the join from a FOREIGN KEY ---------------------------------------------------------------


def test_a_foreign_key_gives_the_join_when_the_mapping_has_none(
    mariadb: MariaDB, osmem: Osmem, fresh_db: str, es_index: str, tmp_path: Path
) -> None:
    db = fresh_db
    mariadb.sql("CREATE TABLE users (id INT PRIMARY KEY, name VARCHAR(100)) ENGINE=InnoDB", db=db)
    mariadb.sql(
        "CREATE TABLE posts (id INT PRIMARY KEY, author_id INT NULL, title VARCHAR(100),"
        " published_at DATETIME NULL, KEY (author_id),"
        " FOREIGN KEY (author_id) REFERENCES users (id)) ENGINE=InnoDB",
        db=db,
    )
    mariadb.sql(
        "CREATE TABLE comments (id INT PRIMARY KEY, post_id INT NOT NULL, body VARCHAR(200),"
        " created_at DATETIME(6) NOT NULL, KEY (post_id),"
        " FOREIGN KEY (post_id) REFERENCES posts (id)) ENGINE=InnoDB",
        db=db,
    )
    mariadb.sql("INSERT INTO users VALUES (1, 'ann'), (2, 'bob'), (3, 'cid')", db=db)
    mariadb.sql(
        "INSERT INTO posts VALUES (1, 1, 'one', '2024-01-02 03:04:05'), (2, 1, 'two', NULL),"
        " (3, NULL, 'three', '2024-03-04 05:06:07'), (4, 2, 'four', NULL)",
        db=db,
    )
    mariadb.sql(
        "INSERT INTO comments VALUES (1, 1, 'first', '2024-01-02 03:04:05.123456'),"
        " (2, 1, 'second', '2024-01-02 03:04:05'), (3, 1, 'tie', '2024-01-02 03:04:05'),"
        " (4, 2, 'on two', '2024-02-01 00:00:00.5'), (5, 4, 'on four', '2024-05-05 05:05:05')",
        db=db,
    )
    config = write_config(
        tmp_path / "c.yaml",
        port=mariadb.port,
        es_url=osmem.url,
        tables=[
            {
                "table": f"{db}.posts",
                "index": es_index,
                "children": [
                    {  # comments.post_id REFERENCES posts(id)
                        "table": f"{db}.comments",
                        "field": "comments",
                        "include": ["id", "body", "created_at"],
                        "order_by": ["created_at desc"],
                    },
                    {  # posts.author_id REFERENCES users(id)
                        "table": f"{db}.users",
                        "field": "author",
                        "relationship": "one_to_one",
                        "include": ["id", "name"],
                    },
                ],
            }
        ],
        name=db,
        snapshot={"mode": "initial"},
    )

    def expected() -> Docs:
        return _expected_posts(mariadb, db, tags=False, comment_order="c.created_at DESC, c.id")

    run_until_caught_up(config)
    _assert_index_equals(osmem, es_index, expected)
    first = osmem.all_docs(es_index)
    assert [c["id"] for c in first["1"]["comments"]] == [1, 2, 3]
    assert first["1"]["author"] == {"id": 1, "name": "ann"}
    assert first["3"]["author"] is None and first["3"]["comments"] == []

    for statement in (
        "INSERT INTO comments VALUES (6, 3, 'new on three', '2024-06-06 06:06:06')",
        "UPDATE comments SET post_id = 3 WHERE id = 4",  # post 2 loses its only comment
        "DELETE FROM comments WHERE id = 2",
        "UPDATE users SET name = 'ann renamed' WHERE id = 1",  # two posts change
        "UPDATE posts SET author_id = 3 WHERE id = 4",
        "UPDATE posts SET author_id = 2 WHERE id = 3",
        "INSERT INTO posts VALUES (5, 3, 'five', NULL)",
        "DELETE FROM comments WHERE id = 5",
        "DELETE FROM posts WHERE id = 4",
    ):
        mariadb.sql(statement, db=db)
    run_until_caught_up(config)
    _assert_index_equals(osmem, es_index, expected)
    docs = osmem.all_docs(es_index)
    assert docs["2"]["comments"] == [] and docs["2"]["author"] == {"id": 1, "name": "ann renamed"}
    assert [c["id"] for c in docs["3"]["comments"]] == [6, 4]
    assert "4" not in docs


# --- config errors reported by `cdc check` ------------------------------------------------------


def _check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cdc", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cdc_check_names_an_unknown_join_column_and_a_join_column_without_an_index(
    mariadb: MariaDB, osmem: Osmem, fresh_db: str, es_index: str, tmp_path: Path
) -> None:
    db = fresh_db
    _create_blog(mariadb, db)
    mariadb.sql(
        "CREATE TABLE loose_comments (id INT PRIMARY KEY, post_id INT NOT NULL,"
        " body VARCHAR(200), created_at DATETIME(6) NOT NULL)",
        db=db,
    )

    def config(name: str, mapping: dict[str, Any]) -> Path:
        return write_config(
            tmp_path / f"{name}.yaml",
            port=mariadb.port,
            es_url=osmem.url,
            tables=[mapping],
            name=db,
        )

    good = _check(config("good", _blog_mapping(db, es_index)))

    unknown_mapping = _blog_mapping(db, es_index)
    unknown_mapping["children"][0]["join"] = {"post_idd": "id"}
    unknown = _check(config("unknown", unknown_mapping))

    unindexed_mapping = _blog_mapping(db, es_index)
    unindexed_mapping["children"][0]["table"] = f"{db}.loose_comments"
    unindexed = _check(config("unindexed", unindexed_mapping))

    assert good.returncode == 0, good.stdout + good.stderr

    unknown_out = unknown.stdout + unknown.stderr
    assert unknown.returncode != 0, unknown_out
    assert "Traceback" not in unknown_out
    assert "tables[0].children[0].join" in unknown_out, unknown_out
    assert "post_idd" in unknown_out, unknown_out

    unindexed_out = unindexed.stdout + unindexed.stderr
    assert unindexed.returncode != 0, unindexed_out
    assert "Traceback" not in unindexed_out
    index_lines = [line for line in unindexed_out.splitlines() if "CREATE INDEX" in line]
    assert index_lines, unindexed_out
    assert any("post_id" in line and "loose_comments" in line for line in index_lines), index_lines
