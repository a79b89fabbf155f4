"""`cdc dlq replay` and `cdc verify` on documents built from several tables: a rejected post
is replayed whole once the index is fixed, and verify reports (and repairs) corrupted posts
exactly, compared with an independent SQL query."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
from harness import stored_checkpoint, write_config
from rig import MariaDB, Osmem

from cdc.config import load_config
from cdc.state.backends import open_stores


def _cdc(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cdc", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _expected(mariadb: MariaDB, db: str) -> dict[str, Any]:
    """Every post's document, from plain SELECTs (not the connector's code)."""
    posts = mariadb.query("SELECT id, title FROM posts", db=db)
    comments = mariadb.query("SELECT post_id, id, score FROM comments ORDER BY id", db=db)
    docs: dict[str, Any] = {
        str(pid): {"id": pid, "title": title, "comments": []} for pid, title in posts
    }
    for post_id, cid, score in comments:
        if str(post_id) in docs:
            docs[str(post_id)]["comments"].append({"id": cid, "score": score})
    return docs


def _setup(mariadb: MariaDB, osmem: Osmem, db: str, index: str, tmp_path: Path) -> Path:
    mariadb.sql("CREATE TABLE posts (id INT PRIMARY KEY, title VARCHAR(40))", db=db)
    mariadb.sql(
        "CREATE TABLE comments (id INT PRIMARY KEY, post_id INT NOT NULL, score VARCHAR(10),"
        " KEY (post_id))",
        db=db,
    )
    mariadb.sql(
        "INSERT INTO posts VALUES " + ", ".join(f"({i}, 'post {i}')" for i in range(1, 41)), db=db
    )
    mariadb.sql(
        "INSERT INTO comments VALUES "
        + ", ".join(f"({i}, {1 + i % 40}, '{i}')" for i in range(1, 121)),
        db=db,
    )
    return write_config(
        tmp_path / "c.yaml",
        port=mariadb.port,
        es_url=osmem.url,
        tables=[
            {
                "table": f"{db}.posts",
                "index": index,
                "children": [
                    {
                        "table": f"{db}.comments",
                        "field": "comments",
                        "join": {"post_id": "id"},
                        "include": ["id", "score"],
                        "nested": False,
                    }
                ],
                "index_mappings": {
                    "properties": {"comments": {"properties": {"score": {"type": "integer"}}}}
                },
            }
        ],
        name=db,
        snapshot={"mode": "initial", "chunk_size": 16},
    )


def test_a_rejected_post_is_parked_and_replayed_whole_once_the_index_is_fixed(
    mariadb: MariaDB, osmem: Osmem, fresh_db: str, es_index: str, tmp_path: Path
) -> None:
    config = _setup(mariadb, osmem, fresh_db, es_index, tmp_path)
    assert _cdc("run", "--until-caught-up", config=config).returncode == 0
    assert osmem.all_docs(es_index) == _expected(mariadb, fresh_db)

    mariadb.sql("UPDATE comments SET score = 'n/a' WHERE id = 7", db=fresh_db)  # post 8
    mariadb.sql("INSERT INTO comments VALUES (500, 3, 'bad')", db=fresh_db)
    mariadb.sql("UPDATE posts SET title = 'renamed' WHERE id = 9", db=fresh_db)
    streamed = _cdc("run", "--until-caught-up", config=config)
    assert streamed.returncode == 0, streamed.stderr
    assert "parked" in streamed.stderr

    cfg = load_config(config)
    with open_stores(cfg) as stores:
        letters = [letter for _, letter in stores.letters.list()]
    assert sorted(d.doc_id for d in letters) == ["3", "8"]
    assert {d.table for d in letters} == {f"{fresh_db}.posts"}
    assert osmem.get_doc(es_index, "9")["_source"]["title"] == "renamed"  # type: ignore[index]

    osmem.request(
        "PUT",
        f"/{es_index}/_mapping",
        {
            "properties": {
                "comments": {"properties": {"score": {"type": "integer", "ignore_malformed": True}}}
            }
        },
    )
    mariadb.sql("INSERT INTO comments VALUES (501, 8, '5')", db=fresh_db)  # not streamed yet
    replayed = _cdc("dlq", "replay", "--yes", config=config)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert replayed.stdout.splitlines() == ["Replayed 2, still rejected 0, failed 0."]
    doc = osmem.get_doc(es_index, "8")
    assert doc is not None and {"id": 501, "score": "5"} in doc["_source"]["comments"]
    assert _cdc("run", "--until-caught-up", config=config).returncode == 0
    assert osmem.all_docs(es_index) == _expected(mariadb, fresh_db)


def test_verify_reports_corrupted_posts_by_field_and_repair_rebuilds_them(
    mariadb: MariaDB, osmem: Osmem, fresh_db: str, es_index: str, tmp_path: Path
) -> None:
    config = _setup(mariadb, osmem, fresh_db, es_index, tmp_path)
    assert _cdc("run", "--until-caught-up", config=config).returncode == 0
    assert stored_checkpoint(config) is not None
    clean = _cdc("verify", "--json", config=config)
    assert clean.returncode == 0, clean.stdout + clean.stderr

    source = osmem.get_doc(es_index, "5")
    assert source is not None
    wrong = dict(source["_source"])
    wrong["comments"] = wrong["comments"][:-1]  # a comment lost
    osmem.request("PUT", f"/{es_index}/_doc/5", wrong)
    osmem.request("PUT", f"/{es_index}/_doc/6", {**wrong, "id": 6, "title": "post 6"})
    osmem.request("DELETE", f"/{es_index}/_doc/7")
    osmem.request("PUT", f"/{es_index}/_doc/999", {"id": 999, "title": "ghost", "comments": []})
    osmem.refresh(es_index)

    found = _cdc("verify", "--json", config=config)
    assert found.returncode == 1, found.stdout + found.stderr
    report = orjson.loads(found.stdout)["indices"][es_index]
    assert report["checked"] == 40
    assert report["missing"] == ["7"]
    assert report["different"] == [
        {"id": "5", "fields": ["comments"]},
        {"id": "6", "fields": ["comments"]},
    ]
    assert report["extra"] == ["999"]

    repaired = _cdc("verify", "--json", "--repair", config=config)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    again = _cdc("verify", "--json", config=config)
    assert again.returncode == 0, again.stdout + again.stderr
    assert osmem.all_docs(es_index) == _expected(mariadb, fresh_db)
