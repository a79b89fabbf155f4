"""Connector configuration: one YAML file per connector, validated by pydantic models.

`${NAME}` (or `${NAME:-default}`) anywhere in the YAML is replaced by the environment variable
before parsing. Table mappings are given inline under `tables:` or pulled in with
`include: tables/*.yaml` (paths relative to the including file). Every error names the file,
the field path and the offending value.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cdc.errors import ConfigError


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _heartbeat_below_timeout(self) -> SourceConfig:
        if self.heartbeat_interval >= self.read_timeout:
            raise ValueError(
                f"heartbeat_interval ({self.heartbeat_interval}) must be shorter than "
                f"read_timeout ({self.read_timeout})"
            )
        return self


class TlsConfig(_Model):
    """TLS options for the Elasticsearch connection."""

    verify: bool = True
    """Verify the server certificate."""
    ca_file: str | None = None
    """PEM bundle of CAs to trust instead of the system store."""
    client_cert: str | None = None
    """PEM client certificate for mutual TLS."""
    client_key: str | None = None
    """PEM private key of the client certificate."""


class BulkConfig(_Model):
    """When a batch of document operations is sent."""

    max_actions: int = Field(1000, ge=1, le=100_000)
    """Send when this many operations are pending."""
    max_bytes: int = Field(5 * 1024 * 1024, ge=1024)
    """Send when the request body would exceed this many bytes."""
    flush_interval_ms: int = Field(200, ge=1)
    """Send pending operations at least this often."""


class SinkConfig(_Model):
    """The Elasticsearch or OpenSearch cluster to write to."""

    urls: list[str] = Field(min_length=1)
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

    @field_validator("urls")
    @classmethod
    def _http_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not re.match(r"^https?://[^/\s]+", url):
                raise ValueError(f"{url!r} is not an http:// or https:// URL")
        return urls

    @model_validator(mode="after")
    def _one_auth(self) -> SinkConfig:
        if self.api_key and (self.username or self.password):
            raise ValueError("give either api_key or username/password, not both")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password must be given together")
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
            raise ValueError(f"{url!r} is not a redis://, rediss:// or unix:// URL")
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
        if (self.redis is None) == (self.file is None):
            raise ValueError("give exactly one of `redis` or `file`")
        return self


class SoftDelete(_Model):
    """A column value that turns a row into a delete of its document."""

    column: str
    """Column to look at."""
    values: list[Any] = Field(min_length=1)
    """Values meaning "deleted" (compared after type conversion)."""


class TableMapping(_Model):
    """How the rows of one table (or a glob of sharded tables) become documents."""

    table: str
    """`schema.table`; glob patterns (`shop.orders_*`) feed sharded tables into one index."""
    index: str
    """Target index (or alias)."""
    id_columns: list[str] | None = None
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
    index_settings: dict[str, Any] | None = None
    """Settings used when the connector creates a missing index."""
    index_mappings: dict[str, Any] | None = None
    """Mappings used when the connector creates a missing index."""

    @field_validator("table")
    @classmethod
    def _qualified(cls, value: str) -> str:
        if value.count(".") != 1 or not all(value.split(".")):
            raise ValueError(f"{value!r} must be `schema.table` (globs allowed)")
        return value

    @field_validator("index")
    @classmethod
    def _index_name(cls, value: str) -> str:
        if not re.match(r"^[a-z0-9][a-z0-9_.+-]*$", value) or value in (".", ".."):
            raise ValueError(
                f"{value!r} is not a valid index name (lowercase letters, digits, _ . + -)"
            )
        return value

    @model_validator(mode="after")
    def _consistent_columns(self) -> TableMapping:
        if self.include is not None:
            both = sorted(set(self.include) & set(self.exclude))
            if both:
                raise ValueError(f"columns {both} are both included and excluded")
        return self

    def matches(self, schema: str, table: str) -> bool:
        """True if this mapping covers `schema.table`."""
        return fnmatch.fnmatchcase(f"{schema}.{table}", self.table)


class ConnectorConfig(_Model):
    """One connector: a source server, a sink cluster, a checkpoint store, table mappings."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    """Connector name; namespaces its checkpoint keys."""
    source: SourceConfig
    sink: SinkConfig
    checkpoint: CheckpointConfig
    tables: list[TableMapping] = Field(min_length=1)
    """Table mappings (after includes are resolved)."""
    log_format: Literal["text", "json"] = "text"
    """Log lines as plain text or JSON objects."""

    def mapping_for(self, schema: str, table: str) -> TableMapping | None:
        """The first mapping covering `schema.table`, or None if the table is not mapped."""
        for mapping in self.tables:
            if mapping.matches(schema, table):
                return mapping
        return None


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(text: str, source: str, env: dict[str, str] | None = None) -> str:
    """Replace `${NAME}` / `${NAME:-default}`; an unset variable without default is an error."""
    environ = os.environ if env is None else env

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        line = text.count("\n", 0, match.start()) + 1
        raise ConfigError(
            f"{source}:{line}: environment variable {name} is not set",
            hint=f"export {name}=... or write ${{{name}:-default}} in the file",
        )

    return _ENV.sub(replace, text)


def _read_yaml(path: Path, env: dict[str, str] | None) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    text = expand_env(text, str(path), env)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None


def _resolve_tables(raw: Any, path: Path, env: dict[str, str] | None) -> Any:
    if not isinstance(raw, list):
        return raw
    tables: list[Any] = []
    for i, entry in enumerate(raw):
        if isinstance(entry, dict) and set(entry) == {"include"}:
            pattern = str(entry["include"])
            full = pattern if os.path.isabs(pattern) else str(path.parent / pattern)
            files = sorted(glob.glob(full))
            if not files:
                raise ConfigError(
                    f"{path}: tables[{i}].include: {pattern!r} matches no file",
                    hint="check the path; it is relative to the file that includes it",
                )
            for file in files:
                included = _read_yaml(Path(file), env)
                items = included if isinstance(included, list) else [included]
                for item in items:
                    tables.append(_Included(item, Path(file)))
        else:
            tables.append(entry)
    return tables


class _Included:
    """A table mapping read from an included file, remembered for error messages."""

    def __init__(self, value: Any, path: Path) -> None:
        self.value = value
        self.path = path


def _format_error(path: Path, exc: ValidationError, raw: dict[str, Any]) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "missing":
            msg = "required field is missing"
        value = err.get("input")
        shown = (
            "" if err["type"] in ("missing",) or isinstance(value, dict) else f" (got {value!r})"
        )
        lines.append(f"{path}: {loc}: {msg}{shown}")
    return "\n".join(lines)


def load_config(path: str | os.PathLike[str], env: dict[str, str] | None = None) -> ConnectorConfig:
    """Read, expand and validate a connector config; raises ConfigError naming file and field."""
    file = Path(path)
    raw = _read_yaml(file, env)
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: expected a mapping of settings at the top level")
    tables = _resolve_tables(raw.get("tables"), file, env)
    if isinstance(tables, list):
        for i, entry in enumerate(tables):
            if isinstance(entry, _Included):
                try:
                    TableMapping.model_validate(entry.value)
                except ValidationError as exc:
                    raise ConfigError(
                        _format_error(entry.path, exc, {}).replace(
                            f"{entry.path}: ", f"{entry.path}: (tables[{i}]) "
                        )
                    ) from None
                tables[i] = entry.value
        raw = {**raw, "tables": tables}
    try:
        return ConnectorConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_error(file, exc, raw)) from None
