"""`cdc init`: write a starting config, with a table mapping per table, from the live schema.

It connects to the source server, lists the tables matching the `--tables` globs and writes a
commented config (the style of `configs/connector.yaml`) that `cdc check` accepts as it is:
the source with its detected flavor and a random replica id, the sink, the checkpoint store,
`snapshot.mode: initial`, and one mapping per table, each with a comment listing its columns
and the options that fit them. The document id is the primary key, else the first unique key
whose columns are all NOT NULL (`id_columns`); a table with neither is left out, its mapping
written as a comment saying why.

The password is read from an environment variable (`--password-env`, `MYSQL_PASSWORD` unless
told otherwise) or `--password`, and only the variable's name is written (`${MYSQL_PASSWORD}`),
so the secret never lands in the file; a password in `--redis-url` is written as
`${REDIS_PASSWORD}` the same way. The config goes to stdout, or to `--output`, which is
never overwritten without `--force`; what was written and left out is said on stderr.
"""

from __future__ import annotations

import fnmatch
import os
import re
import secrets
import tempfile
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
import yaml
from pydantic import ValidationError

from cdc.cli.common import fail, fail_with, paragraphs
from cdc.config import RedisStoreConfig, SinkConfig, SourceConfig, load_config
from cdc.config.problems import mask_url, split_url_password
from cdc.errors import CdcError, SourceUnavailable
from cdc.model.events import Kind, TableSchema
from cdc.model.position import ServerInfo
from cdc.source import mysql
from cdc.source.mysql import Session
from cdc.source.rows import RowReader

INIT_HELP = paragraphs(
    "Write a starting config, with a table mapping per table, from the live schema.",
    "Connects to the source server, lists the tables matching --tables (globs on "
    "schema.table, repeatable) and writes a commented config that `cdc check` accepts: the "
    "source (flavor detected, a random server_id unless --server-id), the sink, the "
    "checkpoint store (--redis-url, or a file in --checkpoint-dir), snapshot mode initial, "
    "and one mapping per table, commented with its columns and the options that fit them.",
    "The document id is the primary key, else the first unique key whose columns are all "
    "NOT NULL; a table with neither is left out (its mapping is written as a comment).",
    "The password is read from the environment variable --password-env names (or given "
    "with --password) and only that variable is written, as ${MYSQL_PASSWORD}: the secret "
    "never lands in the file.",
    "Writes to stdout, or to --output (never over an existing file without --force). Exit "
    "status: 0 written; 1 the server could not be read or the file not written; 2 a bad "
    "argument, or no table to map.",
)

WIDTH = 96
"""Comment lines are wrapped to this width (the shipped configs' style)."""

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PLAIN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./:@+-]*$")
_FLOW_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_GLOB_CHARS = "*?["
_SHOWN_TABLES = 30
"""Existing tables named in the error for a glob matching none."""

# What a comment may hold as it is: PyYAML refuses a stream holding any other character, even
# inside a comment, and NEL, LS and PS would end the comment's line.
_PRINTABLE = re.compile("[\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
"""A connector name (`ConnectorConfig.name`)."""


# -- the command ---------------------------------------------------------------------------------


def init(
    tables: Annotated[
        list[str],
        typer.Option(
            "--tables",
            "-t",
            metavar="GLOB",
            help="schema.table to map (repeatable; globs such as 'shop.*').",
            show_default=False,
        ),
    ],
    user: Annotated[str, typer.Option("--user", "-u", help="Source user.", show_default=False)],
    host: Annotated[str, typer.Option("--host", help="Source server host.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Source port.")] = 3306,
    password_env: Annotated[
        str,
        typer.Option(
            "--password-env",
            metavar="NAME",
            help="Environment variable holding the password: read now, and named in the "
            "config as ${NAME}.",
        ),
    ] = "MYSQL_PASSWORD",
    password: Annotated[
        str | None,
        typer.Option(
            "--password",
            help="The password, instead of reading it from --password-env now (the config "
            "still reads it from that variable).",
            show_default=False,
        ),
    ] = None,
    es_url: Annotated[
        list[str] | None,
        typer.Option(
            "--es-url",
            metavar="URL",
            help="Elasticsearch/OpenSearch node URL (repeatable). Default: http://127.0.0.1:9200.",
            show_default=False,
        ),
    ] = None,
    redis_url: Annotated[
        str | None,
        typer.Option(
            "--redis-url",
            metavar="URL",
            help="Keep checkpoints in this Redis (redis://, rediss:// or unix://).",
            show_default=False,
        ),
    ] = None,
    checkpoint_dir: Annotated[
        str | None,
        typer.Option(
            "--checkpoint-dir",
            metavar="DIR",
            help="Keep checkpoints in a file in DIR instead of Redis. Default: checkpoints.",
            show_default=False,
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="Connector name. Default: the schema's name when every table is in one, else cdc.",
            show_default=False,
        ),
    ] = None,
    server_id: Annotated[
        int | None,
        typer.Option(
            "--server-id",
            min=1,
            max=4294967295,
            help="Replica server id. Default: a random one.",
            show_default=False,
        ),
    ] = None,
    index_prefix: Annotated[
        str,
        typer.Option("--index-prefix", metavar="PREFIX", help="Put before every index name."),
    ] = "",
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Write the config here instead of stdout.", show_default=False
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing --output.")] = False,
) -> None:
    """Write a starting config and table mappings from the live schema."""
    urls = es_url or ["http://127.0.0.1:9200"]
    _check_arguments(password_env, urls, redis_url, checkpoint_dir, name, index_prefix)
    if output is not None and output.exists() and not force:
        fail(f"{output} exists; not overwriting it", "pass --force, or choose another --output")
    secret = password if password is not None else os.environ.get(password_env)
    if secret is None:
        fail(
            f"environment variable {password_env} is not set",
            f"export {password_env}=<the password of {user}> (the config reads it from there "
            "too), or pass --password",
            code=2,
        )
    chosen_id = server_id or _random_server_id()
    cfg = SourceConfig(host=host, port=port, user=user, password=secret, server_id=chosen_id)
    info, described = _read_schema(cfg, tables)
    if server_id is None and chosen_id == info.server_id:
        chosen_id = _random_server_id(avoid=info.server_id)
    plan = Plan(
        host=host,
        port=port,
        user=user,
        password_env=password_env,
        server_id=chosen_id,
        info=info,
        patterns=tables,
        urls=urls,
        redis_url=redis_url,
        checkpoint_dir=checkpoint_dir,
        name=name or default_name([t.schema.schema for t in described]),
        tables=described,
        index_prefix=index_prefix,
        output=output,
    )
    if not plan.mapped:
        reasons = "; ".join(
            f"{t.name}: "
            + (_unmappable(t.schema) or "no primary key or unique key of NOT NULL columns")
            for t in described
        )
        fail(
            f"no table matching {', '.join(tables)} can be mapped ({reasons})",
            "give a table a primary key, or write its mapping by hand with id_columns",
            code=2,
        )
    text = render(plan)
    _, redis_secret, _ = split_url_password(redis_url or "")
    _validate(text, {password_env: secret, **_redis_env(redis_secret)})
    if output is None:
        typer.echo(text, nl=False)
    else:
        _write(output, text, force)
    typer.echo(_summary(plan), err=True)


def _check_arguments(
    password_env: str,
    urls: list[str],
    redis_url: str | None,
    checkpoint_dir: str | None,
    name: str | None,
    index_prefix: str,
) -> None:
    """Exit 2 on an argument the config could not hold, before connecting."""
    if not _ENV_NAME.match(password_env):
        fail(
            f"--password-env {password_env!r} is not an environment variable name",
            "use letters, digits and `_`, not starting with a digit",
            code=2,
        )
    if redis_url is not None and checkpoint_dir is not None:
        fail("give --redis-url or --checkpoint-dir, not both", code=2)
    try:
        SinkConfig(urls=urls)
    except ValidationError as exc:
        shown = ", ".join(mask_url(url) for url in urls)
        why = exc.errors()[0]["msg"].removeprefix("Value error, ")
        fail(f"--es-url {shown}: {why}", code=2)
    if redis_url is not None:
        try:
            RedisStoreConfig(url=redis_url)
        except ValidationError:
            shown = mask_url(redis_url)
            fail(f"--redis-url {shown!r}: must be a redis://, rediss:// or unix:// URL", code=2)
    if name is not None and not _NAME.match(name):
        fail(
            f"--name {name!r} is not a connector name",
            "use 1 to 100 letters, digits, `_`, `.` or `-`, starting with a letter or digit",
            code=2,
        )
    if index_prefix and not re.match(r"^[a-z0-9][a-z0-9_.+-]*$", index_prefix):
        fail(
            f"--index-prefix {index_prefix!r} cannot start an index name",
            "use lowercase letters, digits, `_`, `.`, `+` and `-`, starting with a letter or digit",
            code=2,
        )


def _read_schema(cfg: SourceConfig, patterns: Sequence[str]) -> tuple[ServerInfo, list[Table]]:
    """The server, and the tables matching `patterns` described; exits 1 when the server
    cannot be read and 2 when a pattern matches no table."""
    try:
        with Session(cfg) as session, RowReader(cfg) as reader:
            info = session.info()
            chosen = select_tables(reader.list_tables(), patterns)
            described = []
            for name in chosen:
                schema, table = name.split(".", 1)
                # The server calls a NOT NULL unique key the primary key of a table without
                # one; only a key named PRIMARY is left to the default of id_columns.
                primary = "PRIMARY" in session.run(mysql.unique_keys, schema, table)
                described.append(
                    Table(
                        reader.table_schema(schema, table),
                        _usable_key(reader, schema, table),
                        primary,
                    )
                )
    except CdcError as exc:
        fail_with(_connecting_error(exc, cfg))
    return info, described


def _usable_key(reader: RowReader, schema: str, table: str) -> tuple[str, ...] | None:
    """The primary key, else the first unique key of NOT NULL columns; None when there is
    none, or it holds a JSON column (which cannot form a document id)."""
    key = reader.unique_key(schema, table)
    described = reader.table_schema(schema, table)
    if key is None:
        return None
    for name in key:
        column = described.column(name)
        if column is None or column.kind is Kind.JSON:
            return None
    return key


def _connecting_error(exc: CdcError, cfg: SourceConfig) -> CdcError:
    """The server's error, with a fix in terms of this command's options."""
    if isinstance(exc, SourceUnavailable):
        return CdcError(
            exc.message,
            f"check --host and --port ({cfg.host}:{cfg.port}) and that the server is up",
        )
    if "access denied" in exc.message.lower():
        return CdcError(exc.message, "check --user and the password (--password-env or --password)")
    return exc


def select_tables(existing: Sequence[str], patterns: Sequence[str]) -> list[str]:
    """The tables (`schema.table`) matching any of the globs, sorted; exits 2 naming the
    patterns that match none and the tables that exist."""
    missing = [p for p in patterns if not any(fnmatch.fnmatchcase(t, p) for t in existing)]
    if missing:
        shown = ", ".join(existing[:_SHOWN_TABLES]) or "(none the user can see)"
        if len(existing) > _SHOWN_TABLES:
            shown += f" and {len(existing) - _SHOWN_TABLES} more"
        which = "matches" if len(missing) == 1 else "match"
        fail(
            f"{', '.join(repr(p) for p in missing)} {which} no table on the server; its "
            f"tables: {shown}",
            "give --tables as schema.table, globs allowed (e.g. 'shop.*'); names are "
            "case-sensitive",
            code=2,
        )
    return sorted({t for t in existing for p in patterns if fnmatch.fnmatchcase(t, p)})


def _random_server_id(avoid: int = 0) -> int:
    """A replica id unlikely to be anyone else's: far above the small ids people assign."""
    while True:
        chosen = 100_000 + secrets.randbelow(4_000_000_000)
        if chosen != avoid:
            return chosen


REDIS_PASSWORD_ENV = "REDIS_PASSWORD"
"""The variable a password given in `--redis-url` is read from, instead of being written."""


def _redis_env(password: str | None) -> dict[str, str]:
    return {} if password is None else {REDIS_PASSWORD_ENV: password}


def _validate(text: str, secrets: dict[str, str]) -> None:
    """The config must load as `cdc check` loads it (with `secrets` in the environment); a
    failure here is a bug of `render`."""
    with tempfile.TemporaryDirectory(prefix="cdc-init-") as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            load_config(path, {**os.environ, **secrets})
        except CdcError as exc:
            fail(
                f"the config written does not load: {exc.message}",
                "this is a bug of `cdc init`; please report it with the table names",
            )


def _write(output: Path, text: str, force: bool) -> None:
    try:
        with output.open("w" if force else "x", encoding="utf-8") as file:
            file.write(text)
    except FileExistsError:
        fail(f"{output} exists; not overwriting it", "pass --force, or choose another --output")
    except OSError as exc:
        fail(
            f"cannot write {output}: {exc.strerror or exc}",
            "check the directory and its permissions",
        )


def _summary(plan: Plan) -> str:
    where = "the config" if plan.output is None else str(plan.output)
    mapped = len(plan.mapped)
    lines = [
        f"wrote {where}: {mapped} table mapping{'s' if mapped != 1 else ''} "
        f"({', '.join(t.schema.name for t in plan.mapped)})"
    ]
    keyless = [t.name for t in plan.left_out if _unmappable(t.schema) is None]
    unnamed = [t.name for t in plan.left_out if _unmappable(t.schema) is not None]
    if keyless:
        lines.append(f"left out, no key to form a document id: {', '.join(keyless)}")
    if unnamed:
        lines.append(f"left out, a name a mapping cannot hold: {', '.join(unnamed)}")
    check = "cdc check -c " + ("FILE" if plan.output is None else str(plan.output))
    exports = [plan.password_env]
    if split_url_password(plan.redis_url or "")[1] is not None:
        exports.append(REDIS_PASSWORD_ENV)
    lines.append(f"next: export {'=... '.join(exports)}=... and run `{check}`")
    return "\n".join(lines)


# -- what is written -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """A table to map: its description and the columns that identify a row (None: none do)."""

    schema: TableSchema
    key: tuple[str, ...] | None
    primary: bool
    """Whether the key is the table's PRIMARY KEY (else id_columns names it)."""

    @property
    def name(self) -> str:
        return self.schema.name


@dataclass(frozen=True)
class Plan:
    """Everything the config is written from."""

    host: str
    port: int
    user: str
    password_env: str
    server_id: int
    info: ServerInfo
    patterns: Sequence[str]
    urls: Sequence[str]
    redis_url: str | None
    checkpoint_dir: str | None
    name: str
    tables: Sequence[Table]
    index_prefix: str = ""
    output: Path | None = None

    @property
    def mapped(self) -> list[Table]:
        """The tables that get a mapping: those with a key, whose names a mapping can hold."""
        return [t for t in self.tables if t.key is not None and _unmappable(t.schema) is None]

    @property
    def left_out(self) -> list[Table]:
        return [t for t in self.tables if t not in self.mapped]


def default_name(schemas: Iterable[str]) -> str:
    """The one schema's name as a connector name, else `cdc`."""
    distinct = set(schemas)
    if len(distinct) == 1:
        candidate = re.sub(r"[^A-Za-z0-9_.-]+", "-", distinct.pop()).lstrip("_.-")[:100]
        if _NAME.match(candidate):
            return candidate
    return "cdc"


def index_names(tables: Sequence[TableSchema], prefix: str = "") -> dict[str, str]:
    """`schema.table` -> a valid index name made of the table's name (lowercase, other
    characters as `_`), prefixed by its schema's name where two tables would share one."""
    base = {t.name: prefix + index_name(t.table) for t in tables}
    counts: dict[str, int] = {}
    for name in base.values():
        counts[name] = counts.get(name, 0) + 1
    names: dict[str, str] = {}
    taken: set[str] = set()
    for t in tables:
        candidate = base[t.name]
        if counts[candidate] > 1:
            candidate = prefix + index_name(f"{t.schema}_{t.table}")
        unique, number = candidate, 2
        while unique in taken:
            unique = f"{candidate[:250]}_{number}"
            number += 1
        taken.add(unique)
        names[t.name] = unique
    return names


def index_name(text: str) -> str:
    """`text` as an index name: lowercase letters, digits, `_`, `.`, `+` and `-`, starting
    with a letter or digit, at most 255 bytes."""
    name = re.sub(r"[^a-z0-9_.+-]", "_", text.lower())
    name = re.sub(r"^[^a-z0-9]+", "", name)[:255]
    return name or "table"


def table_pattern(schema: TableSchema) -> str:
    """The mapping's `table` naming exactly this table: glob characters in its name escaped
    (`[*]`), so the pattern matches it alone."""
    escaped = "".join(f"[{ch}]" if ch in _GLOB_CHARS else ch for ch in schema.table)
    return f"{schema.schema}.{escaped}"


def _unmappable(schema: TableSchema) -> str | None:
    """Why a mapping cannot name this table, if it cannot."""
    if "." in schema.schema or any(ch in schema.schema for ch in _GLOB_CHARS):
        return "its schema's name holds `.`, `*`, `?` or `[`, which a mapping cannot name"
    if "." in schema.table:
        return "its name holds a `.`, which a mapping cannot name"
    return None


def render(plan: Plan) -> str:
    """The config file's text."""
    out = _Writer()
    server = "MariaDB" if plan.info.flavor == "mariadb" else "MySQL"
    patterns = ", ".join(repr(p) for p in plan.patterns)
    out.line("# yaml-language-server: $schema=connector.schema.json")
    out.comment(
        f"Written by `cdc init` from the tables of {plan.host}:{plan.port} ({server} "
        f"{plan.info.version}) matching {patterns}. Check it with `cdc check -c <this file>` "
        "and start the connector with `cdc run -c <this file>`; `cdc schema > "
        "connector.schema.json` next to it lets editors complete and check the fields."
    )
    out.line("#")
    out.comment(
        "`${NAME}` takes a value from the environment (an error if unset), `${NAME:-default}` "
        "falls back to the default when it is unset or empty, `$${` is a literal `${`. Secrets "
        "stay in the environment, out of this file."
    )
    out.blank()
    out.comment(
        "Names this connector's checkpoint keys: letters, digits, `_`, `.`, `-`. A new name "
        "finds no stored position, so pick it once per source database."
    )
    out.key("name", plan.name)
    out.blank()
    _render_source(out, plan, server)
    out.blank()
    _render_sink(out, plan)
    out.blank()
    _render_checkpoint(out, plan)
    out.blank()
    out.comment(
        "`initial` copies every mapped table the first time the connector starts (no stored "
        "position yet), then streams; `when_needed` also copies a table whose mapping is new; "
        "`never` only streams."
    )
    out.line("snapshot:")
    out.key("mode", "initial", 2)
    out.blank()
    out.comment("The Prometheus endpoint, `/metrics` (these are the defaults).")
    out.line("# metrics:")
    out.line("#   host: 0.0.0.0")
    out.line("#   port: 9108")
    out.blank()
    _render_tables(out, plan)
    return out.text()


def _render_source(out: _Writer, plan: Plan, server: str) -> None:
    out.line("source:")
    out.key("host", plan.host, 2)
    out.key("port", plan.port, 2)
    out.comment("Needs REPLICATION SLAVE, REPLICATION CLIENT and SELECT on the mapped tables.", 2)
    out.key("user", plan.user, 2)
    out.comment("Read from the environment when the connector starts.", 2)
    out.line(f"  password: ${{{plan.password_env}}}")
    out.comment(
        "Picked at random by `cdc init`. Unique among every replica of this server (and every "
        "other connector); two readers with the same id disconnect each other.",
        2,
    )
    out.key("server_id", plan.server_id, 2)
    out.comment(
        f"Detected: {server} {plan.info.version}. `auto` asks the server at every start.", 2
    )
    out.key("flavor", plan.info.flavor, 2)
    out.comment(
        "Zone the application writes DATETIME values in, e.g. Europe/Berlin (TIMESTAMP columns "
        "are always UTC).",
        2,
    )
    out.key("time_zone", "UTC", 2)


def _render_sink(out: _Writer, plan: Plan) -> None:
    out.line("sink:")
    out.comment("One or more nodes of the same Elasticsearch or OpenSearch cluster.", 2)
    out.line("  urls:")
    for url in plan.urls:
        out.line(f"    - {_scalar(url)}")
    out.comment(
        "A cluster that needs authentication: an API key (base64 `id:key`) from the "
        "environment, empty meaning none,",
        2,
    )
    out.line("  # api_key: ${ES_API_KEY:-}")
    out.comment("or basic auth (never both):", 2)
    out.line("  # username: elastic")
    out.line("  # password: ${ES_PASSWORD}")
    if any(url.startswith("https://") for url in plan.urls):
        out.comment(
            "A private CA's PEM bundle (a relative path starts at this file's directory):", 2
        )
        out.line("  # tls:")
        out.line("  #   ca_file: ca.pem")


def _render_checkpoint(out: _Writer, plan: Plan) -> None:
    out.line("checkpoint:")
    if plan.redis_url is not None:
        out.comment("The position is kept in Redis, under `<key_prefix>:<name>:`.", 2)
        out.line("  redis:")
        head, password, rest = split_url_password(plan.redis_url)
        if password is None:
            out.key("url", plan.redis_url, 4)
        else:
            out.comment(
                f"The password is read from {REDIS_PASSWORD_ENV} when the connector starts "
                "(as written in a URL: `%40` for `@`).",
                4,
            )
            # The URL is escaped like any value, and then the reference put in unescaped.
            placeholder = "CDCINITREDISPASSWORD"
            url = _scalar(f"{head}:{placeholder}@{rest}")
            out.line("    url: " + url.replace(placeholder, f"${{{REDIS_PASSWORD_ENV}}}"))
        out.key("key_prefix", "cdc", 4)
    else:
        out.comment(
            "The position is kept in `<name>.json` in this directory (relative to where the "
            "connector runs): one host only. Redis is the production choice: replace `file` "
            "with `redis: {url: redis://host:6379/0}`.",
            2,
        )
        out.line("  file:")
        out.key("path", plan.checkpoint_dir or "checkpoints", 4)
    out.comment(
        "Written at most every interval_ms, or after max_transactions acknowledged "
        "transactions, and always at shutdown. A crash replays at most that much.",
        2,
    )
    out.key("interval_ms", 1000, 2)
    out.key("max_transactions", 10000, 2)


def _render_tables(out: _Writer, plan: Plan) -> None:
    mapped = plan.mapped
    indexes = index_names([t.schema for t in mapped], plan.index_prefix)
    out.comment(
        "One mapping per table: a table goes to the first mapping whose pattern matches it. "
        "Each comment lists the table's columns and the options that fit them. Other options: "
        "include/exclude (which columns become fields), rename, static, soft_delete, where "
        "(only the rows matching a condition), "
        "json_columns (text columns holding JSON, parsed into objects), string_fields (text, "
        "keyword or both per text column), index_settings and index_mappings, and children "
        "(rows of other tables inside each document)."
    )
    out.line("tables:")
    for table in plan.tables:
        if table in mapped:
            _render_mapping(out, table, indexes[table.name])
        else:
            _render_left_out(out, table, plan.index_prefix)


def _render_mapping(out: _Writer, table: Table, index: str) -> None:
    schema = table.schema
    key = table.key
    assert key is not None
    out.blank()
    out.comment(f"{schema.name}: {_columns(table)}", 2, hanging=2)
    joined = ", its values joined with `:` (id_separator)" if len(key) > 1 else ""
    if table.primary:
        out.comment(f"Document id: the primary key ({', '.join(key)}){joined}.", 2)
    else:
        out.comment(
            "Document id: there is no primary key, so the first unique key whose columns are "
            f"all NOT NULL ({', '.join(key)}), named in id_columns{joined}.",
            2,
        )
    out.line(f"  - table: {_scalar(table_pattern(schema))}")
    out.key("index", index, 4)
    if not table.primary:
        out.line(f"    id_columns: [{', '.join(_scalar(c, flow=True) for c in key)}]")
    _render_options(out, schema)


def _render_options(out: _Writer, schema: TableSchema) -> None:
    """A commented option for each kind of column whose conversion can be chosen."""
    by_kind: dict[Kind, list[str]] = {}
    for column in schema.columns:
        by_kind.setdefault(column.kind, []).append(column.name)
    if Kind.DECIMAL in by_kind:
        out.comment(
            f"DECIMAL ({_names(by_kind[Kind.DECIMAL])}) becomes exact text; `decimal: number` "
            "writes exact JSON numbers instead:",
            4,
        )
        out.line("    # decimal: number")
    if Kind.JSON in by_kind:
        out.comment(
            f"JSON ({_names(by_kind[Kind.JSON])}) is mapped `flattened` (any shape is "
            "accepted); `object` maps typed sub-fields, `disabled` keeps it unsearchable:",
            4,
        )
        out.line("    # json_fields: object")
    binary = by_kind.get(Kind.BINARY, []) + by_kind.get(Kind.GEOMETRY, [])
    if binary:
        out.comment(
            f"Binary ({_names(binary)}) becomes base64 text; `binary: skip` leaves it out:", 4
        )
        out.line("    # binary: skip")


def _render_left_out(out: _Writer, table: Table, prefix: str) -> None:
    schema = table.schema
    out.blank()
    out.comment(f"{schema.name}: {_columns(table)}", 2, hanging=2)
    why = _unmappable(schema)
    if why is not None:
        out.comment(f"Left out: {why}.", 2)
        return
    out.comment(
        "Left out: it has no primary key and no unique key whose columns are all NOT NULL, so "
        "its rows would have no document id. Add a primary key (or such a unique key) and run "
        "`cdc init` again, or name columns that identify a row with id_columns:",
        2,
    )
    out.line(f"  # - table: {_scalar(table_pattern(schema))}")
    out.line(f"  #   index: {prefix + index_name(schema.table)}")
    out.line("  #   id_columns: [...]")


def _columns(table: Table) -> str:
    """The table's columns and their types, for a comment."""
    parts = []
    for column in table.schema.columns:
        kind = column.sql_type or column.kind.value
        if column.kind is Kind.JSON and "json" not in kind:
            kind += " (JSON)"
        parts.append(f"{column.name} {kind}")
    return ", ".join(parts)


def _names(names: Sequence[str]) -> str:
    return ", ".join(names)


class _Writer:
    """Lines of YAML with wrapped comments."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def line(self, text: str) -> None:
        self._lines.append(text)

    def blank(self) -> None:
        if self._lines and self._lines[-1] != "":
            self._lines.append("")

    def comment(self, text: str, indent: int = 0, hanging: int = 0) -> None:
        lead = " " * indent + "# "
        wrapped = textwrap.wrap(
            _printable(text),
            width=WIDTH - len(lead),
            subsequent_indent=" " * hanging,
            break_long_words=False,
            break_on_hyphens=False,
        )
        self._lines += [lead + part for part in wrapped]

    def key(self, key: str, value: str | int, indent: int = 0) -> None:
        self._lines.append(f"{' ' * indent}{key}: {_scalar(value)}")

    def text(self) -> str:
        while self._lines and self._lines[-1] == "":
            self._lines.pop()
        return "\n".join(self._lines) + "\n"


def _printable(text: str) -> str:
    """`text` for a comment: characters YAML refuses, and line breaks, as `\\uXXXX`."""
    return "".join(ch if _PRINTABLE.fullmatch(ch) else f"\\u{ord(ch):04x}" for ch in text)


def _scalar(value: str | int, flow: bool = False) -> str:
    """`value` as a YAML scalar that loads back as itself: plain when that is safe, else
    double-quoted; a `${` in text is written `$${`, so the loader does not expand it."""
    if isinstance(value, int):
        return str(value)
    text = value.replace("${", "$${")
    plain = _FLOW_PLAIN if flow else _PLAIN
    if plain.match(text) and yaml.safe_load(text) == text:
        return text
    dumped = yaml.safe_dump(text, default_style='"', allow_unicode=True, width=1 << 30)
    return dumped.rstrip("\n").removesuffix("\n...").rstrip("\n")
