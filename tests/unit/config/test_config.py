"""Loading connector configs: what operators get for good files, and the exact words for bad ones.

Every bad config asserts the full message, because the message is the product here: it must
name the file, the line, the field path and the offending value, one line per problem.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cdc.config import ConfigError, ConnectorConfig, load_config

REPO = Path(__file__).resolve().parents[3]

MINIMAL = """\
name: shop
source:
  user: cdc
  server_id: 7
sink:
  urls: [http://es:9200]
checkpoint:
  redis:
    url: redis://localhost:6379/0
tables:
  - table: shop.orders
    index: orders
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def error_for(path: Path, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={} if env is None else env)
    return caught.value


def error_lines(path: Path, env: dict[str, str] | None = None) -> list[str]:
    return error_for(path, env).message.splitlines()


# --- good configs -------------------------------------------------------------------------


def test_minimal_config_fills_in_the_documented_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "c.yaml", MINIMAL), env={})

    assert cfg.name == "shop"
    assert (cfg.source.host, cfg.source.port, cfg.source.password) == ("127.0.0.1", 3306, "")
    assert (cfg.source.flavor, cfg.source.time_zone) == ("auto", "UTC")
    assert (cfg.source.read_timeout, cfg.source.heartbeat_interval) == (30.0, 5.0)
    assert cfg.sink.api_key is None and cfg.sink.username is None
    assert cfg.sink.tls.verify is True and cfg.sink.tls.ca_file is None
    assert (cfg.sink.bulk.max_actions, cfg.sink.bulk.max_bytes) == (1000, 5 * 1024 * 1024)
    assert cfg.sink.bulk.flush_interval_ms == 200
    assert cfg.checkpoint.redis is not None and cfg.checkpoint.redis.key_prefix == "cdc"
    assert cfg.checkpoint.file is None
    (table,) = cfg.tables
    assert (table.decimal, table.binary, table.id_separator) == ("string", "base64", ":")
    assert table.id_columns is None and table.include is None and table.exclude == []
    assert cfg.log_format == "text"


def test_full_config_keeps_every_setting(tmp_path: Path) -> None:
    write(tmp_path, "certs/ca.pem", "-----BEGIN CERTIFICATE-----\n")
    path = write(
        tmp_path,
        "c.yaml",
        """\
name: shop-prod.eu_1
source: {host: db, port: 3310, user: cdc, password: pw, server_id: 4294967295,
         flavor: mariadb, connect_timeout: 3, read_timeout: 20, heartbeat_interval: 2.5,
         time_zone: Europe/Berlin}
sink:
  urls: [https://a:9200, https://b:9200/prefix]
  username: elastic
  password: secret
  tls: {verify: false, ca_file: certs/ca.pem}
  bulk: {max_actions: 50, max_bytes: 2048, flush_interval_ms: 5}
  request_timeout: 9
  max_backoff: 4
checkpoint: {file: {path: /var/lib/cdc}, interval_ms: 10, max_transactions: 3}
log_format: json
tables:
  - table: shop.orders_*
    index: orders
    id_columns: [region, id]
    id_separator: "/"
    include: [region, id, total, status]
    rename: {total: amount}
    static: {origin: shop}
    soft_delete: {column: status, values: [deleted, 9]}
    decimal: number
    binary: skip
    json_columns: [attrs]
    index_settings: {number_of_shards: 2}
    index_mappings: {properties: {amount: {type: double}}}
""",
    )
    cfg = load_config(path, env={})

    assert cfg.source.flavor == "mariadb" and cfg.source.server_id == 4294967295
    assert cfg.sink.urls == ["https://a:9200", "https://b:9200/prefix"]
    assert (cfg.sink.username, cfg.sink.password) == ("elastic", "secret")
    assert cfg.sink.tls.ca_file == str(tmp_path / "certs/ca.pem")
    assert cfg.sink.bulk.max_bytes == 2048
    assert cfg.checkpoint.file is not None and cfg.checkpoint.file.path == "/var/lib/cdc"
    (table,) = cfg.tables
    assert table.id_columns == ["region", "id"] and table.id_separator == "/"
    assert table.soft_delete is not None and table.soft_delete.values == ["deleted", 9]
    assert table.index_mappings == {"properties": {"amount": {"type": "double"}}}
    assert cfg.log_format == "json"


def test_includes_are_read_in_name_order_after_the_inline_mappings_before_them(
    tmp_path: Path,
) -> None:
    write(tmp_path, "tables/b.yaml", "table: shop.b\nindex: b\n")
    write(tmp_path, "tables/a.yaml", "- {table: shop.a1, index: a}\n- {table: shop.a2, index: a}\n")
    path = write(
        tmp_path,
        "c.yaml",
        MINIMAL + "  - include: tables/*.yaml\n  - {table: shop.last, index: last}\n",
    )

    cfg = load_config(path, env={})

    assert [t.table for t in cfg.tables] == [
        "shop.orders",
        "shop.a1",
        "shop.a2",
        "shop.b",
        "shop.last",
    ]


def test_environment_values_are_typed_by_the_field_and_never_parsed_as_yaml(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        "c.yaml",
        """\
name: ${NAME:-shop}
source:
  host: ${HOST:-db.local}
  port: ${PORT}
  user: ${USER_EMPTY:-cdc}
  password: ${PASSWORD}
  server_id: ${SERVER_ID}
sink:
  urls: [${ES_URL}, "${ES_URL2:-http://b:9200}"]
  api_key: ${ES_API_KEY:-}
  tls: {verify: "${VERIFY}"}
checkpoint: {redis: {url: "redis://:${REDIS_PW}@r:6379/0", key_prefix: "$${literal}"}}
tables:
  - {table: shop.orders, index: orders, static: {shards: "${SHARDS}"}}
# Only values are expanded: ${UNSET_IN_COMMENT} and ${1bad in a comment are ignored.
""",
    )
    env = {
        "PORT": "3307",
        "USER_EMPTY": "",
        "PASSWORD": "p#ss: w0rd ${NOT_EXPANDED_AGAIN}",
        "SERVER_ID": "42",
        "ES_URL": "http://a:9200",
        "VERIFY": "false",
        "REDIS_PW": "pw",
        "SHARDS": "3",
    }

    cfg = load_config(path, env=env)

    assert cfg.name == "shop" and cfg.source.host == "db.local"
    assert cfg.source.port == 3307 and isinstance(cfg.source.port, int)
    assert cfg.source.server_id == 42
    assert cfg.source.user == "cdc"  # `:-` also covers a variable that is set but empty
    assert cfg.source.password == "p#ss: w0rd ${NOT_EXPANDED_AGAIN}"
    assert cfg.sink.urls == ["http://a:9200", "http://b:9200"]
    assert cfg.sink.api_key is None
    assert cfg.sink.tls.verify is False
    assert cfg.checkpoint.redis is not None
    assert cfg.checkpoint.redis.url == "redis://:pw@r:6379/0"
    assert cfg.checkpoint.redis.key_prefix == "${literal}"
    assert cfg.tables[0].static == {"shards": "3"}


def test_os_environ_is_used_when_no_env_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CDC_TEST_PORT", "3399")
    path = write(
        tmp_path, "c.yaml", MINIMAL.replace("user: cdc", "user: cdc\n  port: ${CDC_TEST_PORT}")
    )

    assert load_config(path).source.port == 3399


def test_overlapping_globs_are_allowed_and_the_first_mapping_wins(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.yaml",
        MINIMAL.split("tables:")[0]
        + "tables:\n"
        + "  - {table: shop.orders_2024*, index: recent}\n"
        + "  - {table: shop.orders_*, index: orders}\n",
    )
    cfg = load_config(path, env={})

    recent, orders = cfg.tables
    assert cfg.mapping_for("shop", "orders_2024_12") is recent
    assert cfg.mapping_for("shop", "orders_2023") is orders
    assert cfg.mapping_for("shop", "customers") is None


def test_x_keys_hold_anchors_that_mappings_merge(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.yaml",
        MINIMAL.split("tables:")[0]
        + """\
x-defaults: &defaults
  decimal: number
  exclude: [secret]
tables:
  - <<: *defaults
    table: shop.a
    index: a
  - <<: *defaults
    table: shop.b
    index: b
    decimal: string
""",
    )
    cfg = load_config(path, env={})

    assert [(t.table, t.decimal, t.exclude) for t in cfg.tables] == [
        ("shop.a", "number", ["secret"]),
        ("shop.b", "string", ["secret"]),
    ]


def test_config_models_reject_duplicates_without_the_loader() -> None:
    with pytest.raises(ValueError, match=r"tables\[1\] maps `a.b` again; tables\[0\] already"):
        ConnectorConfig.model_validate(
            {
                "name": "x",
                "source": {"user": "u", "server_id": 1},
                "sink": {"urls": ["http://es"]},
                "checkpoint": {"file": {}},
                "tables": [{"table": "a.b", "index": "i"}, {"table": "a.b", "index": "j"}],
            }
        )


@pytest.mark.parametrize(
    ("relative", "env"),
    [
        ("configs/demo.yaml", {}),
        (
            "configs/demo.yaml",
            {
                "CDC_MYSQL_HOST": "db",
                "CDC_MYSQL_PORT": "3399",
                "CDC_MYSQL_PASSWORD": "pw",
                "CDC_ES_URL": "http://es:9",
                "CDC_REDIS_URL": "redis://r:1/2",
            },
        ),
        ("configs/connector.yaml", {"MYSQL_PASSWORD": "pw", "ES_API_KEY": "aWQ6a2V5"}),
        ("configs/blog.yaml", {}),
    ],
)
def test_shipped_example_configs_load(relative: str, env: dict[str, str]) -> None:
    cfg = load_config(REPO / relative, env=env)

    assert cfg.tables
    assert all(cfg.mapping_for(*t.table.replace("*", "x").split(".")) is t for t in cfg.tables)


def test_demo_config_matches_the_demo_setup() -> None:
    cfg = load_config(REPO / "configs/demo.yaml", env={"CDC_MYSQL_PORT": "3399"})

    assert (cfg.source.host, cfg.source.port, cfg.source.user) == ("127.0.0.1", 3399, "cdc")
    assert (cfg.source.password, cfg.source.server_id) == ("cdc", 4201)
    assert cfg.sink.urls == ["http://127.0.0.1:9201"]
    assert cfg.checkpoint.redis is not None
    assert cfg.checkpoint.redis.url == "redis://127.0.0.1:6380/0"
    (products,) = cfg.tables
    assert (products.table, products.index, products.decimal) == (
        "demo.products",
        "products",
        "number",
    )
    assert products.json_columns == ["attrs"]


def test_connector_example_includes_both_table_files() -> None:
    cfg = load_config(
        REPO / "configs/connector.yaml", env={"MYSQL_PASSWORD": "pw", "ES_API_KEY": "k"}
    )

    assert cfg.sink.api_key == "k" and cfg.checkpoint.redis is not None
    assert [t.table for t in cfg.tables] == ["shop.customers", "shop.orders_*"]
    orders = cfg.tables[1]
    assert orders.id_columns == ["region", "id"] and orders.decimal == "number"
    assert orders.soft_delete is not None and orders.exclude and orders.rename
    assert orders.index_settings and orders.index_mappings and orders.static


def test_blog_example_is_the_documented_tree() -> None:
    cfg = load_config(REPO / "configs/blog.yaml", env={})

    (posts,) = cfg.tables
    comments, author, tags = posts.children
    assert (comments.field, comments.join, comments.order_by) == (
        "comments",
        {"post_id": "id"},
        ["created_at"],
    )
    assert (author.relationship, author.join, author.include) == (
        "one_to_one",
        {"id": "author_id"},
        ["id", "name"],
    )
    assert tags.through is not None and tags.through.to == {"tag_id": "id"}
    assert cfg.streamed_tables() == [
        "blog.posts",
        "blog.comments",
        "blog.users",
        "blog.tags",
        "blog.post_tags",
    ]
    assert posts.mappings_body() == {
        "properties": {"comments": {"type": "nested"}, "tags": {"type": "nested"}}
    }


@pytest.mark.parametrize(
    ("child", "message"),
    [
        ({"field": "c"}, "children[0].table: required field is missing"),
        (
            {"table": "blog.c_*", "field": "c"},
            "children[0].table: must name one table: globs are not allowed here",
        ),
        (
            {"table": "blog.c", "field": "c", "relationship": "one_to_one", "order_by": "x"},
            "children[0]: `order_by` orders arrays; a one_to_one child is one object",
        ),
        (
            {"table": "blog.c", "field": "c", "join": {"a": "b"}, "through": {"table": "blog.l"}},
            "children[0]: give `join` inside `through` for a many-to-many child",
        ),
        ({"table": "blog.c", "field": "c", "join": {}}, "children[0].join: must name at least"),
        (
            {"table": "blog.c", "field": "c", "order_by": "a b c"},
            "children[0].order_by: `a b c` must",
        ),
    ],
)
def test_children_errors_name_the_field_path(
    tmp_path: Path, child: dict[str, Any], message: str
) -> None:
    text = MINIMAL + "    children: [" + json.dumps(child) + "]\n"
    path = write(tmp_path, "c.yaml", text)

    lines = error_lines(path)

    assert any(message in line for line in lines), lines


# --- files that cannot be read ------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    err = error_for(tmp_path / "nope.yaml")

    assert err.message == f"{tmp_path}/nope.yaml: file not found"


def test_empty_file(tmp_path: Path) -> None:
    err = error_for(write(tmp_path, "c.yaml", "# only a comment\n"))

    assert err.message == f"{tmp_path}/c.yaml: the file is empty; expected connector settings"
    assert err.hint == "start from configs/connector.yaml"


def test_top_level_list(tmp_path: Path) -> None:
    err = error_for(write(tmp_path, "c.yaml", "# settings\n- name: shop\n"))

    assert err.message == (
        f"{tmp_path}/c.yaml:2: expected connector settings (`name:`, `source:`, ...) "
        "at the top level, got a list"
    )


def test_yaml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "name: shop\nsource:\n  user: cdc\n   server_id: 5\n")

    err = error_for(path)

    assert err.message == f"{path}:4:13: invalid YAML: mapping values are not allowed here"
    assert err.hint == "check the indentation, and quote a value that contains `: `"


def test_tab_indentation(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "name: shop\nsource:\n\tuser: cdc\n")

    err = error_for(path)

    assert err.message == (
        f"{path}:3:1: invalid YAML: found character '\\t' that cannot start any token"
    )
    assert err.hint == "indent with spaces; YAML does not allow tabs"


def test_two_documents_in_one_file(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", MINIMAL + "---\nname: other\n")

    assert error_lines(path) == [
        f"{path}:13:1: invalid YAML: expected a single document in the stream, "
        "but found another document"
    ]


def test_yaml_error_columns_count_from_the_file_as_written_with_references(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "c.yaml", "name: x\nsource: {user: ${DB_USER}, server_id: 7 port: 1}\n")

    assert error_lines(path, {"DB_USER": "a-much-longer-value"}) == [
        f"{path}:2:45: invalid YAML: expected ',' or '}}', but got ':' "
        "(while parsing a flow mapping on line 2)"
    ]


def test_key_given_twice(tmp_path: Path) -> None:
    path = write(
        tmp_path, "c.yaml", MINIMAL.replace("  server_id: 7", "  server_id: 7\n  server_id: 8")
    )

    err = error_for(path)

    assert err.message == f"{path}:5: source.server_id: given twice (first on line 4)"
    assert err.hint == "remove one of them; YAML would keep only the last"


# --- environment variables ----------------------------------------------------------------


def test_unset_variable_names_line_column_and_fix(tmp_path: Path) -> None:
    path = write(
        tmp_path, "c.yaml", MINIMAL.replace("user: cdc", "user: cdc\n  password: ${DB_PW}")
    )

    err = error_for(path)

    assert err.message == (f"{path}:4:13: environment variable DB_PW is not set and has no default")
    assert err.hint == "export DB_PW=... or write ${DB_PW:-default} in the file"


def test_every_bad_reference_is_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.yaml",
        MINIMAL.replace(
            "user: cdc", "user: ${DB_USER}\n  host: '${1host}'\n  password: |\n    a\n    ${PW}"
        ),
    )

    assert error_lines(path) == [
        f"{path}:3:9: environment variable DB_USER is not set and has no default",
        f"{path}:4:10: `${{1host}}` is not a valid variable reference",
        f"{path}:7:5: environment variable PW is not set and has no default",
    ]


# --- validation ---------------------------------------------------------------------------


def test_unknown_field_suggests_the_closest_known_one(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.yaml",
        MINIMAL.replace("  urls: [http://es:9200]", "  urls: [http://es:9200]\n  bulkk: {}"),
    )

    assert error_lines(path) == [
        f"{path}:7: sink.bulkk: unknown field (did you mean `bulk`?); known fields: urls, "
        "username, password, api_key, tls, bulk, request_timeout, max_backoff, on_rejected"
    ]


def test_unknown_field_without_a_close_match(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", MINIMAL + "    colour: blue\n")

    assert error_lines(path) == [
        f"{path}:13: tables[0].colour: unknown field; known fields: include, exclude, rename, "
        "decimal, binary, json_columns, json_fields, computed, string_fields, table, index, "
        "routing, pipeline, transform, id_columns, id_separator, static, soft_delete, where, "
        "snapshot, index_settings, index_mappings, children"
    ]


def test_wrong_types_and_ranges_one_line_each_in_file_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.yaml",
        """\
name: 12
source:
  user: cdc
  server_id: 1.5
  port: abc
  flavor: maria
  read_timeout: 0
sink:
  urls: http://es:9200
  tls: {verify: maybe}
  bulk:
    max_actions: 0
checkpoint:
  redis: {url: redis://r}
  max_transactions: -1
tables:
  - table: shop.orders
    index: orders
    decimal: float
""",
    )

    assert error_lines(path) == [
        f"{path}:1: name: must be text; put the value in quotes (got 12)",
        f"{path}:4: source.server_id: must be a whole number (got 1.5)",
        f'{path}:5: source.port: must be a whole number (got "abc")',
        f'{path}:6: source.flavor: must be one of `auto`, `mysql`, `mariadb` (got "maria"); '
        "did you mean `mariadb`?",
        f"{path}:7: source.read_timeout: must be greater than 0 (got 0)",
        f'{path}:9: sink.urls: must be a list (got "http://es:9200")',
        f'{path}:10: sink.tls.verify: must be true or false (got "maybe")',
        f"{path}:12: sink.bulk.max_actions: must be at least 1 (got 0)",
        f"{path}:15: checkpoint.max_transactions: must be at least 1 (got -1)",
        f'{path}:19: tables[0].decimal: must be one of `string`, `number` (got "float")',
    ]


def test_missing_required_fields(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "name: shop\nsource:\n  host: db\nlog_format: text\n")

    assert error_lines(path) == [
        f"{path}:1: sink: required field is missing",
        f"{path}:1: checkpoint: required field is missing",
        f"{path}:1: tables: required field is missing",
        f"{path}:2: source.user: required field is missing",
        f"{path}:2: source.server_id: required field is missing",
    ]


def test_connector_name_pattern(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", MINIMAL.replace("name: shop", "name: shop prod"))

    assert error_lines(path) == [
        f"{path}:1: name: must be 1 to 100 letters, digits, `_`, `.` or `-`, starting with a "
        'letter or digit (got "shop prod")'
    ]


def test_url_schemes_and_passwords_in_urls_are_masked(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.yaml",
        MINIMAL.replace("[http://es:9200]", "[http://es:9200, 'es:9200']").replace(
            "redis://localhost:6379/0", "http://:hunter2@localhost:6379"
        ),
    )

    lines = error_lines(path)

    assert lines == [
        f'{path}:6: sink.urls[1]: must be an http:// or https:// URL with a host (got "es:9200")',
        f"{path}:9: checkpoint.redis.url: must be a redis://, rediss:// or unix:// URL "
        '(got "http://:***@localhost:6379")',
    ]
    assert "hunter2" not in "\n".join(lines)


def test_secret_values_are_never_echoed(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", MINIMAL.replace("user: cdc", "user: cdc\n  password: 123456"))

    assert error_lines(path) == [
        f"{path}:4: source.password: must be text; put the value in quotes (value hidden)"
    ]


def test_tls_files_must_exist_relative_to_the_config_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "conf/c.yaml",
        MINIMAL.replace(
            "  urls: [http://es:9200]",
            "  urls: [https://es:9200]\n  tls:\n    ca_file: certs/ca.pem\n"
            "    client_key: /nonexistent/key.pem",
        ),
    )

    assert error_lines(path) == [
        f"{path}:8: sink.tls.ca_file: no such file: {tmp_path}/conf/certs/ca.pem "
        '(got "certs/ca.pem")',
        f'{path}:9: sink.tls.client_key: no such file (got "/nonexistent/key.pem")',
    ]


def test_model_rules_across_fields(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.yaml",
        """\
name: shop
source: {user: cdc, server_id: 1, read_timeout: 5, heartbeat_interval: 5}
sink: {urls: [http://es], api_key: k, username: u, password: p}
checkpoint: {file: {}, redis: {url: redis://r}}
tables:
  - table: shop
    index: Orders
    rename: {a: x, b: x}
  - {table: shop.items, index: items, include: [a, b], exclude: [b, a]}
""",
    )

    assert error_lines(path) == [
        f"{path}:2: source.heartbeat_interval: must be shorter than `read_timeout` (5) (got 5)",
        f"{path}:3: sink: give either `api_key` or `username`/`password`, not both",
        f"{path}:4: checkpoint: give one store, `redis` or `file`, not both",
        f"{path}:6: tables[0].table: must be `schema.table`; globs such as `shop.orders_*` "
        'are allowed (got "shop")',
        f"{path}:7: tables[0].index: must be a valid index name: lowercase letters, digits, "
        "`_`, `.`, `+` and `-`, starting with a letter or digit, at most 255 bytes "
        '(got "Orders")',
        f"{path}:8: tables[0].rename: `a` and `b` are both renamed to `x`",
        f"{path}:9: tables[1]: `a`, `b` cannot be in both `include` and `exclude`",
    ]


def test_no_checkpoint_store_and_no_tables(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.yaml",
        MINIMAL.split("checkpoint:")[0] + "checkpoint: {interval_ms: 5}\ntables: []\n",
    )

    assert error_lines(path) == [
        f"{path}:7: checkpoint: needs a store: give `redis` or `file`",
        f"{path}:8: tables: must not be empty (got [])",
    ]


# --- table mappings and includes ----------------------------------------------------------


def test_error_in_an_included_mapping_names_the_included_file(tmp_path: Path) -> None:
    write(tmp_path, "tables/a.yaml", "table: shop.a\nindex: a\nexclude: id\n")
    many = write(
        tmp_path,
        "tables/b.yaml",
        "- {table: shop.b, index: b}\n- table: shop.c\n  index: c\n  binary: hex\n",
    )
    path = write(tmp_path, "c.yaml", MINIMAL + "  - include: tables/*.yaml\n")

    assert error_lines(path) == [
        f'{tmp_path}/tables/a.yaml:3: exclude: must be a list (got "id")',
        f'{many}:4: [1].binary: must be one of `base64`, `skip` (got "hex")',
    ]


def test_same_table_mapped_twice_names_both_places(tmp_path: Path) -> None:
    included = write(tmp_path, "tables/orders.yaml", "table: shop.orders\nindex: orders2\n")
    path = write(tmp_path, "c.yaml", MINIMAL + "  - include: tables/*.yaml\n")

    assert error_lines(path) == [
        f"{included}:1: table: `shop.orders` is already mapped by tables[0] at {path}:11; "
        "keep one mapping per table"
    ]


def test_same_table_mapped_twice_inline(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", MINIMAL + "  - {table: shop.orders, index: again}\n")

    assert error_lines(path) == [
        f"{path}:13: tables[1].table: `shop.orders` is already mapped by tables[0] at "
        f"{path}:11; keep one mapping per table"
    ]


def test_exact_mapping_below_a_glob_that_catches_it_is_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.yaml",
        MINIMAL.replace("table: shop.orders", "table: shop.*")
        + "  - {table: shop.customers, index: customers}\n",
    )

    assert error_lines(path) == [
        f"{path}:13: tables[1].table: `shop.customers` can never be used: `shop.*` in "
        f"tables[0] at {path}:11 matches it first; move this mapping above that one"
    ]


def test_include_matching_no_file(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", MINIMAL + "  - include: tabels/*.yaml\n")

    err = error_for(path)

    assert err.message == f'{path}:13: tables[1].include: "tabels/*.yaml" matches no file'
    assert err.hint == f"the pattern is relative to {tmp_path}"


def test_unreadable_include(tmp_path: Path) -> None:
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables/gone.yaml").symlink_to(tmp_path / "deleted.yaml")
    path = write(tmp_path, "c.yaml", MINIMAL + "  - include: tables/*.yaml\n")

    err = error_for(path)

    assert err.message == (f"{tmp_path}/tables/gone.yaml: file not found (included from {path}:13)")


def test_include_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables/latin1.yaml").write_bytes(b"table: shop.caf\xe9\nindex: cafe\n")
    path = write(tmp_path, "c.yaml", MINIMAL + "  - include: tables/*.yaml\n")

    err = error_for(path)

    assert err.message == (
        f"{tmp_path}/tables/latin1.yaml: not UTF-8 text (bad byte at offset 15) "
        f"(included from {path}:13)"
    )
    assert err.hint == "save the file as UTF-8"


def test_include_without_read_permission(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    locked = write(tmp_path, "tables/locked.yaml", "table: shop.a\nindex: a\n")
    path = write(tmp_path, "c.yaml", MINIMAL + "  - include: tables/*.yaml\n")
    read_text = Path.read_text

    # chmod cannot lock a file away from root, and the tests may well run as root.
    def refuse_locked(self: Path, *args: Any, **kwargs: Any) -> str:
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", refuse_locked)

    err = error_for(path)

    assert err.message == f"{locked}: cannot read: Permission denied (included from {path}:13)"
    assert err.hint == "make the file readable by the user running the connector"


def test_empty_included_file(tmp_path: Path) -> None:
    empty = write(tmp_path, "tables/empty.yaml", "\n")
    path = write(tmp_path, "c.yaml", MINIMAL + "  - include: tables/*.yaml\n")

    err = error_for(path)

    assert err.message == f"{empty}: the file is empty (included from {path}:13)"


def test_include_that_matches_the_connector_file_itself(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", MINIMAL + "  - include: '*.yaml'\n")

    err = error_for(path)

    assert err.message == f'{path}:13: tables[1].include: "*.yaml" matches this file itself'


def test_unset_variable_in_an_included_file(tmp_path: Path) -> None:
    included = write(tmp_path, "tables/t.yaml", "table: shop.t\nindex: ${INDEX}\n")
    path = write(tmp_path, "c.yaml", MINIMAL + "  - include: tables/*.yaml\n")

    err = error_for(path)

    assert (
        err.message == f"{included}:2:8: environment variable INDEX is not set and has no default"
    )


def test_background_verification_is_off_by_default_and_not_run_too_often(tmp_path: Path) -> None:
    off = load_config(write(tmp_path, "off.yaml", MINIMAL), env={})
    on = load_config(
        write(tmp_path, "on.yaml", MINIMAL + "verify: {interval: 3600, repair: true}\n"), env={}
    )
    often = write(tmp_path, "often.yaml", MINIMAL + "verify:\n  interval: 5\n")

    assert (off.verify.interval, off.verify.max_rows_per_second, off.verify.repair) == (
        0,
        1000,
        False,
    )
    assert (on.verify.interval, on.verify.repair) == (3600, True)
    (line,) = error_lines(often)
    assert line.startswith(f"{often}:")
    assert "verify.interval: must be 0 (off) or at least 10 seconds" in line
