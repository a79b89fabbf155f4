"""`cdc init` against the rig: the config it writes from a live schema loads and passes
`cdc check`, with a mapping per keyed table; and its refusals (no matching table, an existing
file, an unreachable server, wrong credentials)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from harness import run_until_caught_up
from rig import MariaDB, Osmem, free_port
from typer.testing import CliRunner, Result

from cdc.cli.app import app
from cdc.config import load_config


def cdc(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env=env)


@pytest.fixture
def account(mariadb: MariaDB) -> Iterator[tuple[str, str]]:
    """A replication user of its own with a password found nowhere else: (user, password)."""
    user = f"init_{uuid.uuid4().hex[:8]}"
    password = f"pw-{uuid.uuid4().hex}"
    for host in ("%", "localhost"):
        mariadb.sql(f"CREATE USER '{user}'@'{host}' IDENTIFIED BY '{password}'")
        mariadb.sql(
            f"GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO '{user}'@'{host}'"
        )
    yield user, password
    for host in ("%", "localhost"):
        mariadb.sql(f"DROP USER IF EXISTS '{user}'@'{host}'")


@pytest.fixture
def shop(mariadb: MariaDB, fresh_db: str) -> str:
    """Tables of every kind of key in `fresh_db`."""
    for ddl in (
        # A composite primary key.
        "CREATE TABLE order_lines (order_id INT NOT NULL, line_no SMALLINT NOT NULL,"
        " sku VARCHAR(20) NOT NULL, qty INT NOT NULL, PRIMARY KEY (order_id, line_no))",
        # JSON, DECIMAL and BLOB columns, and a name that is not a valid index name as it is.
        "CREATE TABLE `Products` (id BIGINT UNSIGNED PRIMARY KEY, name VARCHAR(100),"
        " price DECIMAL(10,2) NOT NULL, attrs JSON, photo BLOB)",
        # No primary key: a nullable unique key (unusable) and a NOT NULL one.
        "CREATE TABLE customers (nick VARCHAR(50) NULL, email VARCHAR(100) NOT NULL,"
        " name VARCHAR(100), UNIQUE KEY by_nick (nick), UNIQUE KEY by_email (email))",
        # No key at all.
        "CREATE TABLE audit_log (at DATETIME(6) NOT NULL, message TEXT)",
        # `${` and glob characters in a name.
        "CREATE TABLE `price${x}[1]` (id INT PRIMARY KEY, v INT)",
    ):
        mariadb.sql(ddl, db=fresh_db)
    return fresh_db


def comments(text: str) -> str:
    """Every comment of a config joined by spaces, so a wrapped sentence reads as one."""
    return " ".join(
        line.strip().removeprefix("#").strip()
        for line in text.splitlines()
        if line.strip().startswith("#")
    )


def init_args(mariadb: MariaDB, user: str, *more: str) -> list[str]:
    return ["init", "--host", "127.0.0.1", "--port", str(mariadb.port), "--user", user, *more]


def test_init_writes_a_config_that_passes_check(
    mariadb: MariaDB,
    shop: str,
    account: tuple[str, str],
    es_url: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    user, password = account
    out = tmp_path / "connector.yaml"
    prefix = f"{shop}_"

    written = cdc(
        *init_args(mariadb, user, "--tables", f"{shop}.*", "--es-url", es_url),
        *("--redis-url", redis_url, "--index-prefix", prefix, "--output", str(out)),
        env={"MYSQL_PASSWORD": password},
    )

    assert written.exit_code == 0, written.output
    assert written.stdout == ""
    assert f"wrote {out}: 4 table mappings" in written.stderr
    assert f"left out, no key to form a document id: {shop}.audit_log" in written.stderr
    text = out.read_text()
    lines = text.splitlines()
    assert lines[0] == "# yaml-language-server: $schema=connector.schema.json"
    assert password not in text
    assert "  password: ${MYSQL_PASSWORD}" in lines
    assert "  flavor: mariadb" in lines
    said = comments(text)
    assert f"{shop}.order_lines: order_id int(11), line_no smallint(6), sku varchar(20)" in said
    assert "Document id: the primary key (order_id, line_no), its values joined with `:`" in said
    assert "Document id: the primary key (id)." in said
    assert "the first unique key whose columns are all NOT NULL (email), named in id_columns" in (
        said
    )
    assert "price decimal(10,2), attrs longtext (JSON), photo blob" in said
    assert "# decimal: number" in text and "# json_fields: object" in text
    assert "# binary: skip" in text
    assert f"  # - table: {shop}.audit_log" in lines  # left out, as a comment
    assert f'  - table: "{shop}.price$${{x}}[[]1]"' in lines  # not expanded, matches itself
    assert sum(line.lstrip().startswith("#") for line in lines) > 40

    cfg = load_config(out, {"MYSQL_PASSWORD": password})
    mappings = {m.table: m for m in cfg.tables}
    assert list(mappings) == [
        f"{shop}.Products",
        f"{shop}.customers",
        f"{shop}.order_lines",
        f"{shop}.price${{x}}[[]1]",
    ]
    assert mappings[f"{shop}.order_lines"].id_columns is None  # the primary key
    assert mappings[f"{shop}.customers"].id_columns == ["email"]
    assert {m.index for m in cfg.tables} == {
        f"{prefix}products",
        f"{prefix}customers",
        f"{prefix}order_lines",
        f"{prefix}price__x__1_",
    }
    assert mappings[f"{shop}.price${{x}}[[]1]"].matches(shop, "price${x}[1]")
    assert cfg.name == shop
    assert cfg.source.user == user and cfg.source.password == password
    assert cfg.source.port == mariadb.port and cfg.source.server_id != 1
    assert cfg.checkpoint.redis is not None and cfg.checkpoint.redis.url == redis_url
    assert cfg.sink.urls == [es_url] and cfg.snapshot.mode == "initial"

    checked = cdc("check", "-c", str(out), env={"MYSQL_PASSWORD": password})

    assert checked.exit_code == 0, checked.output
    assert not [line for line in checked.stdout.splitlines() if line.startswith("✗")]
    assert "✓ mappings: 4 table mappings cover 4 tables; every column and option they" in (
        checked.stdout
    )


def test_init_to_stdout_with_a_file_store_passes_check(
    mariadb: MariaDB, shop: str, es_url: str, tmp_path: Path
) -> None:
    store = tmp_path / "positions"
    store.mkdir()

    written = cdc(
        *init_args(mariadb, "cdc", "--tables", f"{shop}.order_lines", "--tables", f"{shop}.P*"),
        *("--es-url", es_url, "--checkpoint-dir", str(store), "--password", "cdc"),
        *("--password-env", "SHOP_PW", "--name", "shop-test", "--server-id", "777"),
        env={"SHOP_PW": ""},
    )

    assert written.exit_code == 0, written.output
    assert "wrote the config: 2 table mappings" in written.stderr
    assert "next: export SHOP_PW=... and run `cdc check -c FILE`" in written.stderr
    assert written.stdout.startswith("# yaml-language-server: $schema=connector.schema.json\n")
    data = yaml.safe_load(written.stdout)
    assert data["source"]["password"] == "${SHOP_PW}"
    assert data["source"]["server_id"] == 777
    assert data["checkpoint"]["file"] == {"path": str(store)}
    out = tmp_path / "c.yaml"
    out.write_text(written.stdout)
    cfg = load_config(out, {"SHOP_PW": "cdc"})
    assert cfg.name == "shop-test"
    assert [m.table for m in cfg.tables] == [f"{shop}.Products", f"{shop}.order_lines"]

    checked = cdc("check", "-c", str(out), env={"SHOP_PW": "cdc"})

    assert checked.exit_code == 0, checked.output
    assert not [line for line in checked.stdout.splitlines() if line.startswith("✗")]


def test_the_written_config_snapshots_and_streams_every_mapped_table(
    mariadb: MariaDB,
    shop: str,
    osmem: Osmem,
    es_url: str,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mariadb.sql("INSERT INTO order_lines VALUES (7, 1, 'a', 2)", db=shop)
    mariadb.sql("INSERT INTO customers VALUES (NULL, 'b@example.com', 'B')", db=shop)
    mariadb.sql("INSERT INTO `price${x}[1]` VALUES (1, 1)", db=shop)
    out = tmp_path / "c.yaml"
    prefix = f"{shop}_"
    written = cdc(
        *init_args(mariadb, "cdc", "--tables", f"{shop}.*", "--es-url", es_url),
        *("--redis-url", redis_url, "--index-prefix", prefix, "--output", str(out)),
        env={"MYSQL_PASSWORD": "cdc"},
    )
    assert written.exit_code == 0, written.output
    monkeypatch.setenv("MYSQL_PASSWORD", "cdc")
    indexes = [f"{prefix}{name}" for name in ("order_lines", "customers", "price__x__1_")]
    try:
        run_until_caught_up(out)  # the initial snapshot
        mariadb.sql("UPDATE order_lines SET qty = 3", db=shop)
        mariadb.sql("INSERT INTO customers VALUES ('c', 'c@example.com', 'C')", db=shop)
        mariadb.sql("UPDATE `price${x}[1]` SET v = 5", db=shop)
        run_until_caught_up(out)  # the stream

        lines = osmem.get_doc(indexes[0], "7:1")
        customer = osmem.get_doc(indexes[1], "c@example.com")
        price = osmem.get_doc(indexes[2], "1")
        assert lines is not None and lines["_source"]["qty"] == 3
        assert osmem.count(indexes[1]) == 2
        assert customer is not None and customer["_source"]["name"] == "C"
        assert price is not None and price["_source"] == {"id": 1, "v": 5}
    finally:
        for index in indexes:
            osmem.delete_index(index)


def test_a_glob_matching_no_table_exits_2_naming_the_tables_there(
    mariadb: MariaDB, shop: str, tmp_path: Path
) -> None:
    out = tmp_path / "c.yaml"

    result = cdc(
        *init_args(mariadb, "cdc", "--tables", f"{shop}.*", "--tables", "nosuch.*"),
        *("--output", str(out)),
        env={"MYSQL_PASSWORD": "cdc"},
    )

    assert result.exit_code == 2
    assert result.stderr.startswith("error: 'nosuch.*' matches no table on the server; its tables:")
    assert f"{shop}.order_lines" in result.stderr
    assert "— give --tables as schema.table" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert not out.exists()


def test_only_keyless_tables_exit_2(mariadb: MariaDB, shop: str) -> None:
    result = cdc(
        *init_args(mariadb, "cdc", "--tables", f"{shop}.audit*"), env={"MYSQL_PASSWORD": "cdc"}
    )

    assert result.exit_code == 2
    assert result.stderr == (
        f"error: no table matching {shop}.audit* can be mapped ({shop}.audit_log: no primary "
        "key or unique key of NOT NULL columns) — give a table a primary key, or write its "
        "mapping by hand with id_columns\n"
    )
    assert result.stdout == ""


def test_an_existing_output_is_refused_without_force(
    mariadb: MariaDB, shop: str, tmp_path: Path
) -> None:
    out = tmp_path / "c.yaml"
    out.write_text("mine\n")
    args = init_args(mariadb, "cdc", "--tables", f"{shop}.order_lines", "--output", str(out))

    refused = cdc(*args, env={"MYSQL_PASSWORD": "cdc"})
    forced = cdc(*args, "--force", env={"MYSQL_PASSWORD": "cdc"})

    assert refused.exit_code == 1
    assert refused.stderr == (
        f"error: {out} exists; not overwriting it — pass --force, or choose another --output\n"
    )
    assert forced.exit_code == 0, forced.output
    assert out.read_text().startswith("# yaml-language-server:")


def test_server_errors_are_one_line_with_the_fix(mariadb: MariaDB, shop: str) -> None:
    tables = ("--tables", f"{shop}.*")
    denied = cdc(*init_args(mariadb, "cdc", *tables), env={"MYSQL_PASSWORD": "wrong"})
    nobody = free_port()
    unreachable = cdc(
        "init", "--port", str(nobody), "--user", "cdc", *tables, env={"MYSQL_PASSWORD": "x"}
    )
    unset = cdc(*init_args(mariadb, "cdc", *tables), env={"MYSQL_PASSWORD": None})

    assert denied.exit_code == 1
    assert denied.stderr.startswith(f"error: connecting to 127.0.0.1:{mariadb.port}: access denied")
    assert denied.stderr.endswith(
        " — check --user and the password (--password-env or --password)\n"
    )
    assert "wrong" not in denied.stderr
    assert unreachable.exit_code == 1
    assert unreachable.stderr.startswith(f"error: connecting to 127.0.0.1:{nobody}")
    assert unreachable.stderr.endswith(
        f" — check --host and --port (127.0.0.1:{nobody}) and that the server is up\n"
    )
    assert unset.exit_code == 2
    assert unset.stderr.startswith("error: environment variable MYSQL_PASSWORD is not set — ")
