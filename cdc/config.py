"""Connector configuration: one YAML file per connector, validated by pydantic models.

`load_config` reads a file in four steps:

1. The file is parsed as YAML. A key given twice in one mapping is an error (PyYAML alone would
   keep the last one without a word).
2. `${NAME}` and `${NAME:-default}` inside any value (not in comments) are replaced from the
   environment; `:-` also applies when the variable is set but empty, and `$${` writes a
   literal `${`. This happens after parsing, so a value from the environment can never change
   the YAML structure (a `#` or `: ` in a password stays part of the password). A substituted
   value is text: typed fields convert it (`port: ${PORT}` becomes an int, `verify: ${V}` a
   bool), free-form values (`static`, `soft_delete.values`, index settings) keep it a string.
3. Each `- include: <glob>` entry under `tables:` is replaced by the table mappings in the
   matching files, in file-name order. The glob is relative to the including file; a file holds
   one mapping or a list of mappings.
4. The result is validated by the models below. Top-level keys starting with `x-` are ignored,
   so they can hold YAML anchors (`x-defaults: &defaults ...`, then `<<: *defaults`). Relative
   file paths in fields (`sink.tls.*`) are resolved against the directory of the config file.

Every problem becomes one line, `file:line: field.path: what is wrong (got value)`, naming the
included file for an included table mapping; all problems validation finds are reported
together in one `ConfigError`. Secrets (`password`, `api_key`, passwords inside URLs) are never
echoed.
"""

from __future__ import annotations

import difflib
import fnmatch
import glob
import json
import os
import re
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from cdc.errors import ConfigError


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _blank_to_none(value: Any) -> Any:
    # `api_key: ${ES_API_KEY:-}` must mean "not set", not "an empty key".
    return None if value == "" else value


def _readable_file(value: str | None, info: ValidationInfo) -> str | None:
    if value is None:
        return None
    given = Path(value).expanduser()
    base = (info.context or {}).get("base_dir")
    path = Path(os.path.abspath(Path(base) / given if base is not None else given))
    # Show where a relative path was looked for; an absolute one is already in "(got ...)".
    shown = "" if given.is_absolute() else f": {path}"
    if not path.exists():
        raise ValueError(f"no such file{shown}")
    if not path.is_file():
        raise ValueError(f"not a regular file{shown}")
    if not os.access(path, os.R_OK):
        raise ValueError(f"file is not readable{shown}")
    return str(path)


class SourceConfig(_Model):
    """The MySQL or MariaDB server to replicate from."""

    host: str = "127.0.0.1"
    """Host name or address of the server."""
    port: int = Field(3306, ge=1, le=65535)
    """TCP port."""
    user: str
    """User with REPLICATION SLAVE, REPLICATION CLIENT and SELECT privileges."""
    password: str = ""
    """Password (use `${ENV}` to keep it out of the file)."""
    server_id: int = Field(ge=1, le=4294967295)
    """Replica server id; unique among every replica of this server."""
    flavor: Literal["auto", "mysql", "mariadb"] = "auto"
    """Server flavor; `auto` asks the server."""
    connect_timeout: float = Field(10.0, gt=0)
    """Seconds to wait for a connection."""
    read_timeout: float = Field(30.0, gt=0)
    """Seconds without any byte (events or heartbeats) before the stream is considered dead."""
    heartbeat_interval: float = Field(5.0, gt=0)
    """Seconds between replication heartbeats the server sends while idle."""
    time_zone: str = "UTC"
    """Time zone of naive DATETIME values (IANA name, e.g. `Europe/Berlin`)."""

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("must be an IANA time zone name such as `UTC`") from None
        return value

    @field_validator("heartbeat_interval")
    @classmethod
    def _heartbeat_below_timeout(cls, value: float, info: ValidationInfo) -> float:
        read_timeout = info.data.get("read_timeout")
        if read_timeout is not None and value >= read_timeout:
            raise ValueError(f"must be shorter than `read_timeout` ({read_timeout:g})")
        return value


class TlsConfig(_Model):
    """TLS options for the Elasticsearch connection. Relative paths start at the config file."""

    verify: bool = True
    """Verify the server certificate."""
    ca_file: str | None = None
    """PEM bundle of CAs to trust instead of the system store."""
    client_cert: str | None = None
    """PEM client certificate for mutual TLS (may also hold the key)."""
    client_key: str | None = None
    """PEM private key of the client certificate, if not inside `client_cert`."""

    @field_validator("ca_file", "client_cert", "client_key", mode="before")
    @classmethod
    def _blank_path(cls, value: Any) -> Any:
        return _blank_to_none(value)

    @field_validator("ca_file", "client_cert", "client_key")
    @classmethod
    def _file_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _readable_file(value, info)

    @field_validator("client_key")
    @classmethod
    def _key_needs_cert(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("client_cert") is None:
            raise ValueError("needs `client_cert` as well")
        return value


class BulkConfig(_Model):
    """When a batch of document operations is sent."""

    max_actions: int = Field(1000, ge=1, le=100_000)
    """Send when this many operations are pending."""
    max_bytes: int = Field(5 * 1024 * 1024, ge=1024)
    """Send when the request body would exceed this many bytes."""
    flush_interval_ms: int = Field(200, ge=1)
    """Send pending operations at least this often."""


def _http_url(url: str) -> str:
    if not re.match(r"^https?://[^/\s?#]+", url):
        raise ValueError("must be an http:// or https:// URL with a host")
    return url


class SinkConfig(_Model):
    """The Elasticsearch or OpenSearch cluster to write to."""

    urls: list[Annotated[str, AfterValidator(_http_url)]] = Field(min_length=1)
    """Node URLs, e.g. `http://localhost:9200`."""
    username: str | None = None
    """Basic-auth user."""
    password: str | None = None
    """Basic-auth password."""
    api_key: str | None = None
    """API key (base64 `id:key`), instead of basic auth."""
    tls: TlsConfig = TlsConfig()
    """TLS options for https URLs."""
    bulk: BulkConfig = BulkConfig()
    """Batching limits."""
    request_timeout: float = Field(30.0, gt=0)
    """Seconds to wait for a response before the request is retried."""
    max_backoff: float = Field(30.0, gt=0)
    """Cap, in seconds, of the exponential backoff between retries."""
    on_rejected: Literal["dlq", "fail"] = "dlq"
    """A document the cluster rejects for its content (mapping or parse error, too large):
    `dlq` parks it in the dead-letter queue and goes on; `fail` stops the connector."""

    @field_validator("username", "password", "api_key", mode="before")
    @classmethod
    def _blank_credential(cls, value: Any) -> Any:
        return _blank_to_none(value)

    @model_validator(mode="after")
    def _one_auth(self) -> SinkConfig:
        if self.api_key and (self.username or self.password):
            raise ValueError("give either `api_key` or `username`/`password`, not both")
        if (self.username is None) != (self.password is None):
            raise ValueError("`username` and `password` must be given together")
        return self


class RedisStoreConfig(_Model):
    """Checkpoints in Redis (the production choice)."""

    url: str
    """Redis URL, e.g. `redis://localhost:6379/0` (`rediss://` for TLS)."""
    key_prefix: str = "cdc"
    """Prefix of every key the connector writes."""

    @field_validator("url")
    @classmethod
    def _redis_url(cls, url: str) -> str:
        if not re.match(r"^(redis|rediss|unix)://", url):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return url


class FileStoreConfig(_Model):
    """Checkpoints in a local JSON file (single host, no Redis)."""

    path: str = "checkpoints"
    """Directory holding `<connector name>.json`."""


class CheckpointConfig(_Model):
    """Where and how often the position is recorded."""

    redis: RedisStoreConfig | None = None
    """Store checkpoints in Redis."""
    file: FileStoreConfig | None = None
    """Store checkpoints in a local file."""
    interval_ms: int = Field(1000, ge=1)
    """Write at most this often (and always at shutdown)."""
    max_transactions: int = Field(10_000, ge=1)
    """...or after this many acknowledged transactions, whichever comes first."""

    @model_validator(mode="after")
    def _exactly_one_store(self) -> CheckpointConfig:
        if self.redis is not None and self.file is not None:
            raise ValueError("give one store, `redis` or `file`, not both")
        if self.redis is None and self.file is None:
            raise ValueError("needs a store: give `redis` or `file`")
        return self


class SoftDelete(_Model):
    """A column value that turns a row into a delete of its document."""

    column: str
    """Column to look at."""
    values: list[Any] = Field(min_length=1)
    """Values meaning "deleted" (compared after type conversion)."""


def _is_glob(pattern: str) -> bool:
    return any(char in pattern for char in "*?[")


class TableMapping(_Model):
    """How the rows of one table (or a glob of sharded tables) become documents."""

    table: str
    """`schema.table`; glob patterns (`shop.orders_*`) feed sharded tables into one index."""
    index: str
    """Target index (or alias)."""
    id_columns: list[str] | None = Field(None, min_length=1)
    """Columns forming the document id; default: the primary key."""
    id_separator: str = ":"
    """Joins composite id parts."""
    include: list[str] | None = None
    """Only these columns become fields (default: all)."""
    exclude: list[str] = []
    """These columns never become fields."""
    rename: dict[str, str] = {}
    """Column name -> field name."""
    static: dict[str, Any] = {}
    """Fields added to every document."""
    soft_delete: SoftDelete | None = None
    """Rows matching this rule are deleted from the index."""
    decimal: Literal["string", "number"] = "string"
    """DECIMAL as an exact string or as a JSON number (never a silently lossy float)."""
    binary: Literal["base64", "skip"] = "base64"
    """BINARY/VARBINARY/BLOB columns as base64 text, or left out."""
    json_columns: list[str] = []
    """Columns holding JSON text (MariaDB stores JSON as LONGTEXT) to parse into objects."""
    snapshot: SnapshotMode | None = None
    """Overrides `snapshot.mode` for this mapping."""
    index_settings: dict[str, Any] | None = None
    """Settings used when the connector creates a missing index."""
    index_mappings: dict[str, Any] | None = None
    """Mappings used when the connector creates a missing index."""

    @field_validator("table")
    @classmethod
    def _qualified(cls, value: str) -> str:
        if value.count(".") != 1 or not all(value.split(".")):
            raise ValueError("must be `schema.table`; globs such as `shop.orders_*` are allowed")
        return value

    @field_validator("index")
    @classmethod
    def _index_name(cls, value: str) -> str:
        if not re.match(r"^[a-z0-9][a-z0-9_.+-]*$", value) or len(value.encode()) > 255:
            raise ValueError(
                "must be a valid index name: lowercase letters, digits, `_`, `.`, `+` and `-`, "
                "starting with a letter or digit, at most 255 bytes"
            )
        return value

    @field_validator("rename")
    @classmethod
    def _distinct_targets(cls, rename: dict[str, str]) -> dict[str, str]:
        seen: dict[str, str] = {}
        for column, name in rename.items():
            if name in seen:
                raise ValueError(f"`{seen[name]}` and `{column}` are both renamed to `{name}`")
            seen[name] = column
        return rename

    @model_validator(mode="after")
    def _consistent_columns(self) -> TableMapping:
        if self.include is not None:
            both = sorted(set(self.include) & set(self.exclude))
            if both:
                names = ", ".join(f"`{name}`" for name in both)
                raise ValueError(f"{names} cannot be in both `include` and `exclude`")
        return self

    def matches(self, schema: str, table: str) -> bool:
        """True if this mapping covers `schema.table`."""
        return fnmatch.fnmatchcase(f"{schema}.{table}", self.table)


SnapshotMode = Literal["initial", "never", "when_needed"]


class SnapshotConfig(_Model):
    """Copying the rows that exist before streaming starts (and re-syncing on demand)."""

    mode: SnapshotMode = "initial"
    """`initial`: copy every mapped table the first time the connector starts (no checkpoint);
    `when_needed`: also copy a table when its mapping is new to the connector; `never`."""
    chunk_size: int = Field(2000, ge=1, le=100_000)
    """Rows read per chunk (one consistent read each)."""
    max_rows_per_second: int = Field(0, ge=0)
    """Throttle to protect the primary; 0 means no limit."""


class MetricsConfig(_Model):
    """The Prometheus endpoint."""

    enabled: bool = True
    """Serve `/metrics`."""
    host: str = "0.0.0.0"
    """Address to listen on."""
    port: int = Field(9108, ge=0, le=65535)
    """Port to listen on (0 picks a free one)."""


class ConnectorConfig(_Model):
    """One connector: a source server, a sink cluster, a checkpoint store, table mappings."""

    name: str
    """Connector name; namespaces its checkpoint keys."""
    source: SourceConfig
    """The server whose binlog is read."""
    sink: SinkConfig
    """The cluster documents are written to."""
    checkpoint: CheckpointConfig
    """Where the position is stored."""
    tables: list[TableMapping] = Field(min_length=1)
    """Table mappings (after includes are resolved), tried in order: a table is handled by the
    first mapping whose pattern matches it, so globs may overlap (put the narrower one first).
    The same pattern twice, or an exact name below a glob that already matches it, is an error
    because that mapping could never apply."""
    log_format: Literal["text", "json"] = "text"
    """Log lines as plain text or JSON objects."""
    metrics: MetricsConfig = MetricsConfig()
    """The Prometheus `/metrics` endpoint."""
    snapshot: SnapshotConfig = SnapshotConfig()
    """Initial load and re-sync of tables."""

    @field_validator("name")
    @classmethod
    def _name_chars(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$", value):
            raise ValueError(
                "must be 1 to 100 letters, digits, `_`, `.` or `-`, starting with a letter or digit"
            )
        return value

    @field_validator("tables")
    @classmethod
    def _every_mapping_reachable(cls, tables: list[TableMapping]) -> list[TableMapping]:
        for later, mapping in enumerate(tables):
            for earlier in range(later):
                pattern = tables[earlier].table
                context = {
                    "earlier": earlier,
                    "later": later,
                    "pattern": pattern,
                    "table": mapping.table,
                }
                if pattern == mapping.table:
                    raise PydanticCustomError(
                        "duplicate_table",
                        "tables[{later}] maps `{pattern}` again; tables[{earlier}] already does",
                        context,
                    )
                if not _is_glob(mapping.table) and fnmatch.fnmatchcase(mapping.table, pattern):
                    raise PydanticCustomError(
                        "shadowed_table",
                        "tables[{later}] (`{table}`) can never apply: tables[{earlier}] "
                        "(`{pattern}`) matches it first",
                        context,
                    )
        return tables

    def mapping_for(self, schema: str, table: str) -> TableMapping | None:
        """The first mapping covering `schema.table`, or None if the table is not mapped."""
        for mapping in self.tables:
            if mapping.matches(schema, table):
                return mapping
        return None


_REFERENCE = re.compile(
    r"\$\$\{"  # escaped: a literal `${`
    r"|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-((?:[^}$\n]|\$(?!\{))*))?\}"
    r"|\$\{"  # anything else starting with `${` is a mistake worth reporting
)


@dataclass(frozen=True)
class _Reference:
    """One `${...}` as written, and where (line and column count from 1)."""

    text: str
    shown: str
    name: str | None
    default: str | None
    line: int
    column: int

    def resolve(self, env: Mapping[str, str], source: str) -> tuple[str, ConfigError | None]:
        """The replacement text, or the error to report for it."""
        where = f"{source}:{self.line}:{self.column}"
        if self.text == "$${":
            return "${", None
        if self.name is None:
            return "", ConfigError(
                f"{where}: `{self.shown}` is not a valid variable reference",
                hint="write ${NAME} or ${NAME:-default}, or $${ for a literal ${",
            )
        value = env.get(self.name)
        if value is not None and not (value == "" and self.default is not None):
            return value, None
        if self.default is not None:
            return self.default, None
        return "", ConfigError(
            f"{where}: environment variable {self.name} is not set and has no default",
            hint=f"export {self.name}=... or write ${{{self.name}:-default}} in the file",
        )


def _find_references(text: str) -> list[tuple[re.Match[str], _Reference]]:
    found = []
    for match in _REFERENCE.finditer(text):
        line_start = text.rfind("\n", 0, match.start()) + 1
        line = text.count("\n", 0, match.start()) + 1
        column = match.start() - line_start + 1
        # Show a malformed reference up to its closing brace or the end of the word.
        shown = re.match(r"\$\{[^}\s]{0,40}\}?", text[match.start() :])
        reference = _Reference(
            text=match[0],
            shown=shown[0] if shown else match[0],
            name=match[1],
            default=match[2],
            line=line,
            column=column,
        )
        found.append((match, reference))
    return found


# References are swapped for placeholders before YAML parsing and filled in afterwards, inside
# scalar values only: `${X}` may then sit anywhere (`[${A}, ${B}]`, quoted or not), a value
# from the environment cannot change the YAML structure, and a reference inside a comment is
# ignored. A placeholder is as long as its reference so YAML error columns stay true; it is
# built from private-use characters, which YAML accepts in plain scalars.
_MARK, _FILL, _FIRST_INDEX, _LAST_INDEX = "\ue000", "\ue001", 0xE100, 0xF8FF
_PLACEHOLDER = re.compile(f"{_MARK}([\\ue100-\\uf8ff]){_FILL}*")


def _with_placeholders(text: str, path: Path) -> tuple[str, list[_Reference]]:
    found = _find_references(text)
    if _MARK in text or len(found) > _LAST_INDEX - _FIRST_INDEX:
        raise ConfigError(f"{path}: unsupported file: character U+E000 or over 6000 `${{`")
    parts, end = [], 0
    for index, (match, reference) in enumerate(found):
        filler = _FILL * (len(reference.text) - 2)
        parts += [text[end : match.start()], _MARK + chr(_FIRST_INDEX + index) + filler]
        end = match.end()
    return "".join([*parts, text[end:]]), [reference for _, reference in found]


def _fill_placeholders(
    root: yaml.Node, references: list[_Reference], path: Path, env: Mapping[str, str]
) -> list[ConfigError]:
    errors: list[ConfigError] = []

    def fill(match: re.Match[str]) -> str:
        value, error = references[ord(match[1]) - _FIRST_INDEX].resolve(env, str(path))
        if error is not None:
            errors.append(error)
        return value

    for node, _ in _walk(root, (), set()):
        keys = [key for key, _ in node.value] if isinstance(node, yaml.MappingNode) else []
        for scalar in [node, *keys]:
            if isinstance(scalar, yaml.ScalarNode) and _MARK in scalar.value:
                scalar.value = _PLACEHOLDER.sub(fill, scalar.value)
    return errors


@dataclass(frozen=True)
class _Document:
    """A parsed YAML file: its data and the node tree that remembers line numbers."""

    path: Path
    data: Any
    node: yaml.Node | None


@dataclass(frozen=True)
class _Origin:
    """Where a piece of the config was written: a file, its node, and its field path there."""

    path: Path
    node: yaml.Node | None
    loc: tuple[str | int, ...]


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _read_document(path: Path, env: Mapping[str, str], included_from: str = "") -> _Document:
    suffix = f" (included from {included_from})" if included_from else ""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found{suffix}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a YAML file{suffix}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (bad byte at offset {exc.start}){suffix}",
            hint="save the file as UTF-8",
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read: {exc.strerror}{suffix}",
            hint="make the file readable by the user running the connector",
        ) from None
    marked, references = _with_placeholders(text, path)
    loader = yaml.SafeLoader(marked)
    try:
        node = loader.get_single_node()
        if node is None:
            return _Document(path, None, None)
        errors = _duplicate_keys(node, path) + _fill_placeholders(node, references, path, env)
        if errors:
            hint = errors[0].hint if len(errors) == 1 else None
            raise ConfigError("\n".join(error.message for error in errors), hint=hint)
        return _Document(path, loader.construct_document(node), node)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(_yaml_problem(path, exc), hint=_yaml_hint(exc)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    finally:
        loader.dispose()


def _yaml_problem(path: Path, exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
    if exc.problem and exc.problem.startswith("but ") and exc.context:
        # PyYAML splits "expected X, but found Y" into context and problem.
        return f"{where}: invalid YAML: {exc.context}, {exc.problem}"
    message = f"{where}: invalid YAML: {exc.problem or exc.context}"
    if exc.problem and exc.context and exc.context_mark:
        message += f" ({exc.context} on line {exc.context_mark.line + 1})"
    return message


def _yaml_hint(exc: yaml.MarkedYAMLError) -> str | None:
    problem = exc.problem or ""
    if "\\t" in problem:
        return "indent with spaces; YAML does not allow tabs"
    if "mapping values are not allowed" in problem:
        return "check the indentation, and quote a value that contains `: `"
    return None


def _walk(
    node: yaml.Node, loc: tuple[str | int, ...], seen: set[int]
) -> Iterator[tuple[yaml.Node, tuple[str | int, ...]]]:
    """Yield (node, loc) for every node once, following anchors only on first sight."""
    if id(node) in seen:
        return
    seen.add(id(node))
    yield node, loc
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else "?"
            yield from _walk(value, (*loc, name), seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _walk(item, (*loc, i), seen)


def _duplicate_keys(root: yaml.Node, path: Path) -> list[ConfigError]:
    problems: list[ConfigError] = []
    for node, loc in _walk(root, (), set()):
        if not isinstance(node, yaml.MappingNode):
            continue
        first_line: dict[str, int] = {}
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.value == "<<":
                continue
            if key.value in first_line:
                problems.append(
                    ConfigError(
                        f"{path}:{_line(key)}: {_dotted((*loc, key.value))}: given twice "
                        f"(first on line {first_line[key.value]})",
                        hint="remove one of them; YAML would keep only the last",
                    )
                )
            else:
                first_line[key.value] = _line(key)
    return problems


def _is_include(entry: Any) -> bool:
    return (
        isinstance(entry, dict) and set(entry) == {"include"} and isinstance(entry["include"], str)
    )


def _child(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    found = None
    for key_node, value in node.value:
        # After merge keys are flattened the explicit key comes last and is the one that counts.
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            found = value
    return found


def _resolve_tables(doc: _Document, env: Mapping[str, str]) -> tuple[Any, list[_Origin]]:
    """The `tables` list with includes replaced, and where each resulting mapping came from."""
    raw = doc.data.get("tables")
    node = _child(doc.node, "tables")
    if not isinstance(raw, list) or not isinstance(node, yaml.SequenceNode):
        return raw, []
    tables: list[Any] = []
    origins: list[_Origin] = []
    for i, (entry, entry_node) in enumerate(zip(raw, node.value, strict=True)):
        if not _is_include(entry):
            tables.append(entry)
            origins.append(_Origin(doc.path, entry_node, ("tables", i)))
            continue
        pattern = entry["include"]
        where = f"{doc.path}:{_line(entry_node)}"
        full = pattern if os.path.isabs(pattern) else str(doc.path.parent / pattern)
        files = sorted(glob.glob(full))
        if not files:
            raise ConfigError(
                f"{where}: tables[{i}].include: {_show(pattern)} matches no file",
                hint=f"the pattern is relative to {doc.path.parent.absolute()}",
            )
        for name in files:
            file = Path(name)
            if file.absolute() == doc.path.absolute():
                raise ConfigError(
                    f"{where}: tables[{i}].include: {_show(pattern)} matches this file itself",
                    hint="keep table mappings in their own directory, e.g. tables/*.yaml",
                )
            included = _read_document(file, env, included_from=where)
            if included.data is None:
                raise ConfigError(
                    f"{file}: the file is empty (included from {where})",
                    hint="give a table mapping (`table:`, `index:`, ...) or delete the file",
                )
            items: list[tuple[Any, yaml.Node | None, tuple[int, ...]]]
            if isinstance(included.data, list) and isinstance(included.node, yaml.SequenceNode):
                items = [
                    (item, n, (j,))
                    for j, (item, n) in enumerate(
                        zip(included.data, included.node.value, strict=True)
                    )
                ]
            else:
                items = [(included.data, included.node, ())]
            for item, item_node, loc in items:
                if _is_include(item) and item_node is not None:
                    raise ConfigError(
                        f"{file}:{_line(item_node)}: includes cannot be nested "
                        f"(included from {where})",
                        hint="list every include in the connector file",
                    )
                tables.append(item)
                origins.append(_Origin(file, item_node, loc))
    return tables, origins


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "text"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__


def load_config(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> ConnectorConfig:
    """Read, expand and validate a connector config.

    `env` replaces `os.environ` for `${NAME}` expansion. Raises ConfigError with one line per
    problem, each naming the file (the included file for an included table mapping), the line,
    the field path and the offending value.
    """
    file = Path(path)
    environ = os.environ if env is None else env
    doc = _read_document(file, environ)
    if doc.data is None:
        raise ConfigError(
            f"{file}: the file is empty; expected connector settings",
            hint="start from configs/connector.yaml",
        )
    if not isinstance(doc.data, dict) or doc.node is None:
        line = f":{_line(doc.node)}" if doc.node is not None else ""
        raise ConfigError(
            f"{file}{line}: expected connector settings (`name:`, `source:`, ...) at the top "
            f"level, got {_kind(doc.data)}"
        )
    tables, origins = _resolve_tables(doc, environ)
    raw = {key: value for key, value in doc.data.items() if not str(key).startswith("x-")}
    if "tables" in raw:
        raw["tables"] = tables
    try:
        return ConnectorConfig.model_validate(raw, context={"base_dir": file.parent})
    except ValidationError as exc:
        raise ConfigError(_problems(exc, _Origin(file, doc.node, ()), origins)) from None


_SECRETS = frozenset({"password", "api_key"})


def _dotted(loc: tuple[str | int, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _line_at(node: yaml.Node | None, loc: tuple[str | int, ...]) -> int | None:
    """The line of the deepest part of `loc` present in the file (a key's line for keys)."""
    if node is None:
        return None
    line = _line(node)
    for part in loc:
        if isinstance(part, str) and isinstance(node, yaml.MappingNode):
            matches = [(k, v) for k, v in node.value if getattr(k, "value", None) == part]
            if not matches:
                break
            line, node = _line(matches[-1][0]), matches[-1][1]
        elif isinstance(part, int) and isinstance(node, yaml.SequenceNode):
            if not 0 <= part < len(node.value):
                break
            node = node.value[part]
            line = _line(node)
        else:
            break
    return line


@dataclass(frozen=True)
class _Place:
    """A spot the operator must edit: file, line, and field path as written in that file."""

    path: Path
    line: int | None
    field: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}" if self.line is not None else str(self.path)


def _place(loc: tuple[str | int, ...], root: _Origin, origins: list[_Origin]) -> _Place:
    origin, rest = root, loc
    if len(loc) >= 2 and loc[0] == "tables" and isinstance(loc[1], int) and loc[1] < len(origins):
        origin, rest = origins[loc[1]], loc[2:]
    return _Place(origin.path, _line_at(origin.node, rest), _dotted(origin.loc + rest))


def _unwrap(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    if get_origin(annotation) is Annotated:
        return _unwrap(get_args(annotation)[0])
    return annotation


def _annotation_at(loc: tuple[str | int, ...]) -> Any:
    """The declared type at `loc` in ConnectorConfig, or None if `loc` leaves the models."""
    current: Any = ConnectorConfig
    for part in loc:
        current = _unwrap(current)
        if isinstance(part, int) and get_origin(current) is list:
            current = get_args(current)[0]
        elif (
            isinstance(part, str)
            and isinstance(current, type)
            and issubclass(current, BaseModel)
            and part in current.model_fields
        ):
            current = current.model_fields[part].annotation
        else:
            return None
    return _unwrap(current)


def _suggest(word: Any, choices: list[str]) -> str:
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else ""


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/@:]*):[^/@]*@", r"\1:***@", value)
    if isinstance(value, list):
        return [_mask(item) for item in value]
    return value


def _show(value: Any) -> str:
    """A value in JSON spelling (as YAML would accept it back), cut to a readable size."""
    text = json.dumps(_mask(value), ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:76] + " ..."


_MESSAGES = {
    "missing": "required field is missing",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "int_parsing_size": "is too large",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be text; put the value in quotes",
    "list_type": "must be a list",
    "dict_type": "must be a mapping of `key: value` pairs",
    "model_type": "must be a mapping of `key: value` pairs",
    "model_attributes_type": "must be a mapping of `key: value` pairs",
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
    "too_long": "must have at most {max_length} items",
    "value_error": "{error}",
}


def _describe(err: ErrorDetails) -> tuple[str, str]:
    """The complaint about one validation error, and an optional suggestion to put after it."""
    kind, loc = err["type"], tuple(err["loc"])
    # Limits on float fields arrive as floats; `must be greater than 0` reads better than `0.0`.
    ctx = {
        key: int(value) if isinstance(value, float) and value.is_integer() else value
        for key, value in err.get("ctx", {}).items()
    }
    if kind in _MESSAGES:
        return _MESSAGES[kind].format(**ctx), ""
    if kind == "too_short":
        count = ctx.get("min_length", 1)
        return ("must not be empty" if count == 1 else f"must have at least {count} items"), ""
    if kind == "extra_forbidden":
        model = _annotation_at(loc[:-1])
        is_model = isinstance(model, type) and issubclass(model, BaseModel)
        known = list(model.model_fields) if is_model else []
        guess = _suggest(loc[-1], known)
        return ("unknown field" + (f" ({guess})" if guess else "")), (
            f"known fields: {', '.join(known)}"
        )
    allowed = [str(choice) for choice in get_args(_annotation_at(loc))]
    if kind == "literal_error" and allowed:
        choices = ", ".join(f"`{choice}`" for choice in allowed)
        return f"must be one of {choices}", _suggest(err["input"], allowed)
    return err["msg"], ""


def _problem(err: ErrorDetails, root: _Origin, origins: list[_Origin]) -> tuple[_Place, str]:
    """Where one validation error is, and its line `file:line: field.path: complaint (got x)`."""
    loc, ctx = tuple(err["loc"]), err.get("ctx", {})
    if err["type"] in ("duplicate_table", "shadowed_table"):
        place = _place(("tables", ctx["later"], "table"), root, origins)
        first = _place(("tables", ctx["earlier"]), root, origins)
        by = f"{first.field} at {first}" if first.field else str(first)
        if err["type"] == "duplicate_table":
            message = f"`{ctx['pattern']}` is already mapped by {by}; keep one mapping per table"
        else:
            message = (
                f"`{ctx['table']}` can never be used: `{ctx['pattern']}` in {by} matches it "
                "first; move this mapping above that one"
            )
        return place, f"{place}: {place.field}: {message}"
    place = _place(loc, root, origins)
    message, suggestion = _describe(err)
    value = err.get("input")
    if err["type"] not in ("missing", "extra_forbidden") and not isinstance(value, dict):
        hidden = bool(loc) and loc[-1] in _SECRETS
        message += " (value hidden)" if hidden else f" (got {_show(value)})"
    if suggestion:
        message += f"; {suggestion}"
    return place, f"{place}: {place.field}: {message}" if place.field else f"{place}: {message}"


def _problems(exc: ValidationError, root: _Origin, origins: list[_Origin]) -> str:
    """All validation errors, one line each, in file order and then line order."""
    files = [root.path, *(origin.path for origin in origins)]
    found = [_problem(err, root, origins) for err in exc.errors()]
    found.sort(key=lambda item: (files.index(item[0].path), item[0].line or 0))
    return "\n".join(line for _, line in found)
