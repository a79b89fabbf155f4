"""Where documents go: an index per month from a date column (rows moving between months move
between indices), shard routing from a column, and an ingest pipeline on every indexed
document, each compared with an independent SELECT."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

from harness import run_until_caught_up, write_config
from rig import MariaDB, Osmem

from cdc.config import load_config
from cdc.state.backends import open_stores
from cdc.testing import EsStandIn


def _months(mariadb: MariaDB, db: str) -> dict[str, dict[str, Any]]:
    """index -> id -> (document, routing), from plain SQL (indices named after `db` with `-`)."""
    prefix = db.replace("_", "-")
    rows = mariadb.query(
        "SELECT id, customer, created_at, total, DATE_FORMAT(created_at, '%Y.%m') FROM orders",
        db=db,
    )
    out: dict[str, dict[str, Any]] = {}
    for i, customer, created, total, month in rows:
        doc = {
            "id": i,
            "customer": customer,
            "created_at": created.isoformat() + "Z",
            "total": format(total, "f"),
        }
        index = f"{prefix}-orders-{month}" if month else f"{prefix}-orders-none"
        out.setdefault(index, {})[str(i)] = (doc, customer)
    return out


def _index(osmem: Osmem, db: str) -> dict[str, dict[str, Any]]:
    """index -> id -> (document, routing) as the cluster holds them."""
    osmem.request("POST", f"/{db}-orders-*/_refresh")
    _, body = osmem.request(
        "POST", f"/{db}-orders-*/_search", {"query": {"match_all": {}}, "size": 10_000}
    )
    out: dict[str, dict[str, Any]] = {}
    for hit in body["hits"]["hits"]:
        out.setdefault(hit["_index"], {})[hit["_id"]] = (hit["_source"], hit.get("_routing"))
    return out


def _workload(mariadb: MariaDB, db: str, rng: random.Random, count: int) -> None:
    conn = mariadb.connect(database=db, autocommit=False)
    start = dt.datetime(2024, 1, 1)
    with conn.cursor() as cur:
        for _ in range(count):
            roll, target = rng.random(), rng.randint(1, 120)
            when = start + dt.timedelta(days=rng.randint(0, 150), seconds=rng.randint(0, 86399))
            if roll < 0.35:  # to another month (or the same)
                cur.execute("UPDATE orders SET created_at = %s WHERE id = %s", (when, target))
            elif roll < 0.6:  # to another shard
                cur.execute(
                    "UPDATE orders SET customer = %s WHERE id = %s",
                    (rng.choice(["ann", "bob", "cy", "dee"]), target),
                )
            elif roll < 0.7:
                cur.execute(
                    "UPDATE orders SET total = total + 1, created_at = %s WHERE id = %s",
                    (when, target),
                )
            elif roll < 0.85:
                cur.execute(
                    "INSERT IGNORE INTO orders VALUES (%s, %s, %s, %s)",
                    (target, rng.choice(["ann", "bob"]), when, rng.randint(1, 99)),
                )
            elif roll < 0.95:
                cur.execute("DELETE FROM orders WHERE id = %s", (target,))
            else:
                cur.execute(
                    "UPDATE IGNORE orders SET id = %s WHERE id = %s",
                    (rng.randint(121, 200), target),
                )
            if rng.random() < 0.5:
                conn.commit()
        conn.commit()
    conn.close()


def test_an_index_per_month_with_routing_follows_rows_between_months_and_shards(
    mariadb: MariaDB, osmem: Osmem, fresh_db: str, tmp_path: Path
) -> None:
    db = fresh_db.replace("_", "-")
    mariadb.sql(
        "CREATE TABLE orders (id INT PRIMARY KEY, customer VARCHAR(20) NOT NULL,"
        " created_at DATETIME NOT NULL, total DECIMAL(10,2) NOT NULL)",
        db=fresh_db,
    )
    rng = random.Random(4)
    values = ", ".join(
        f"({i}, '{rng.choice(['ann', 'bob', 'cy'])}', "
        f"'2024-0{rng.randint(1, 4)}-1{rng.randint(0, 9)} 12:00:00', {rng.randint(1, 500)})"
        for i in range(1, 101)
    )
    mariadb.sql(f"INSERT INTO orders VALUES {values}", db=fresh_db)
    config = write_config(
        tmp_path / "c.yaml",
        port=mariadb.port,
        es_url=osmem.url,
        tables=[
            {
                "table": f"{fresh_db}.orders",
                "index": db + "-orders-{created_at:%Y.%m}",
                "routing": "customer",
            }
        ],
        snapshot={"mode": "initial", "chunk_size": 30},
    )

    run_until_caught_up(config)
    assert _index(osmem, db) == _months(mariadb, fresh_db)
    assert len(_months(mariadb, fresh_db)) == 4

    for round_ in range(3):
        _workload(mariadb, fresh_db, rng, 120)
        run_until_caught_up(config)
        assert _index(osmem, db) == _months(mariadb, fresh_db), f"after round {round_}"
    # Every month index was created from the connector's index template, typed.
    some = next(iter(_months(mariadb, fresh_db)))
    _, mapping = osmem.request("GET", f"/{some}/_mapping")
    assert mapping[some]["mappings"]["properties"]["total"] == {"type": "keyword"}
    assert mapping[some]["mappings"]["properties"]["created_at"]["type"] == "date"


def test_every_indexed_document_goes_through_the_ingest_pipeline(
    mariadb: MariaDB, fresh_db: str, tmp_path: Path
) -> None:
    mariadb.sql("CREATE TABLE people (id INT PRIMARY KEY, name VARCHAR(20))", db=fresh_db)
    mariadb.sql("INSERT INTO people VALUES (1, 'Ann'), (2, 'BOB'), (3, NULL)", db=fresh_db)
    with EsStandIn() as standin:
        standin.start()
        standin_url = standin.url
        status, _ = _put(
            standin_url,
            "/_ingest/pipeline/tidy",
            b'{"processors": [{"lowercase": {"field": "name"}}, '
            b'{"set": {"field": "via", "value": "tidy"}}]}',
        )
        assert status == 200
        tables = [{"table": f"{fresh_db}.people", "index": "people", "pipeline": "tidy"}]
        config = write_config(
            tmp_path / "c.yaml",
            port=mariadb.port,
            es_url=standin_url,
            tables=tables,
            snapshot={"mode": "initial"},
        )
        run_until_caught_up(config)
        mariadb.sql("UPDATE people SET name = 'CY' WHERE id = 3", db=fresh_db)
        mariadb.sql("INSERT INTO people VALUES (4, 'Dee')", db=fresh_db)
        mariadb.sql("DELETE FROM people WHERE id = 2", db=fresh_db)
        run_until_caught_up(config)

        rows = mariadb.query("SELECT id, name FROM people", db=fresh_db)
        expected = {
            str(i): {"id": i, "name": n.lower() if n else None, "via": "tidy"} for i, n in rows
        }
        assert standin.docs("people") == expected

        # A pipeline the cluster does not have rejects the documents into the dead letters.
        missing = write_config(
            tmp_path / "m.yaml",
            port=mariadb.port,
            es_url=standin_url,
            tables=[{**tables[0], "index": "other", "pipeline": "nope"}],
            name="missing",
            snapshot={"mode": "initial"},
        )
        run_until_caught_up(missing)
        with open_stores(load_config(missing)) as stores:
            letters = [letter for _, letter in stores.letters.list()]
        assert len(letters) == len(rows)
        assert all("pipeline with id [nope] does not exist" in d.error for d in letters)


def _put(url: str, path: str, body: bytes) -> tuple[int, bytes]:
    import urllib.request

    request = urllib.request.Request(
        url + path, data=body, method="PUT", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return resp.status, resp.read()


def test_documents_from_several_tables_follow_their_root_between_months_and_shards(
    mariadb: MariaDB, osmem: Osmem, fresh_db: str, tmp_path: Path
) -> None:
    prefix = fresh_db.replace("_", "-")
    mariadb.sql(
        "CREATE TABLE orders (id INT PRIMARY KEY, customer VARCHAR(20) NOT NULL,"
        " created_at DATETIME NOT NULL, total DECIMAL(10,2) NOT NULL)",
        db=fresh_db,
    )
    mariadb.sql(
        "CREATE TABLE notes (id INT PRIMARY KEY, order_id INT NOT NULL, body VARCHAR(20),"
        " KEY (order_id))",
        db=fresh_db,
    )
    rng = random.Random(8)
    mariadb.sql(
        "INSERT INTO orders VALUES "
        + ", ".join(
            f"({i}, '{rng.choice(['ann', 'bob'])}', '2024-0{rng.randint(1, 3)}-05 10:00:00', {i})"
            for i in range(1, 61)
        ),
        db=fresh_db,
    )
    mariadb.sql(
        "INSERT INTO notes VALUES "
        + ", ".join(f"({i}, {rng.randint(1, 60)}, 'n{i}')" for i in range(1, 91)),
        db=fresh_db,
    )
    config = write_config(
        tmp_path / "c.yaml",
        port=mariadb.port,
        es_url=osmem.url,
        tables=[
            {
                "table": f"{fresh_db}.orders",
                "index": prefix + "-orders-{created_at:%Y.%m}",
                "routing": "customer",
                "children": [
                    {
                        "table": f"{fresh_db}.notes",
                        "field": "notes",
                        "join": {"order_id": "id"},
                        "include": ["body"],
                    }
                ],
            }
        ],
        snapshot={"mode": "initial"},
    )

    def expected() -> dict[str, dict[str, Any]]:
        out = _months(mariadb, fresh_db)
        notes: dict[int, list[dict[str, Any]]] = {}
        for order_id, body in mariadb.query(
            "SELECT order_id, body FROM notes ORDER BY id", db=fresh_db
        ):
            notes.setdefault(order_id, []).append({"body": body})
        for docs in out.values():
            for doc, _ in docs.values():
                doc["notes"] = notes.get(doc["id"], [])
        return out

    run_until_caught_up(config)
    assert _index(osmem, prefix) == expected()
    for round_ in range(3):
        _workload(mariadb, fresh_db, rng, 100)
        conn = mariadb.connect(database=fresh_db, autocommit=True)
        with conn.cursor() as cur:
            for _ in range(40):
                cur.execute(
                    "UPDATE notes SET order_id = %s, body = %s WHERE id = %s",
                    (rng.randint(1, 130), f"m{rng.randint(0, 9)}", rng.randint(1, 90)),
                )
        conn.close()
        run_until_caught_up(config)
        assert _index(osmem, prefix) == expected(), f"after round {round_}"
