"""What a valid connector config is: the pydantic models and their validators.

`ConnectorConfig` is the root; the table mappings under `tables:` are in `cdc.config.mappings`.
`load_config` (in `cdc.config.loading`) validates the parsed,
expanded file against it as the last of its four steps. Every model forbids unknown fields and
is frozen. Relative file paths in fields (`source.tls.*`, `sink.tls.*`,
`checkpoint.redis.tls.*`) are resolved against the directory of the config file, which
`load_config` passes as `base_dir` in the validation context.

The validators only say what is wrong ("must be ..."); `cdc.config.problems` turns each
validation error into the operator's one-line message with file, line and field path.
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from cdc.config.base import ConfigModel, is_glob
from cdc.config.mappings import ChildMapping, SnapshotMode, TableMapping


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


class TlsConfig(ConfigModel):
    """TLS options of a link: the sink's `https://` URLs, the Redis store's `rediss://` URL.
    Relative paths start at the config file."""

    verify: bool = True
    """Verify the server certificate: signed by a trusted CA, valid now, naming the host."""
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


class SourceTlsConfig(TlsConfig):
    """TLS for the MySQL or MariaDB server. Giving `source.tls` (even empty, `tls: {}`, to
    trust the system's CAs) makes the connector use TLS, and refuse a server that does not
    offer it."""

    verify: bool = True
    """Verify the server's certificate: signed by a trusted CA and valid now. `false` encrypts
    without knowing who answers."""
    verify_identity: bool = True
    """With `verify`, also check that the certificate names `source.host` (as a DNS name or
    an IP address among its subject alternative names)."""


class SourceConfig(ConfigModel):
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
    tls: SourceTlsConfig | None = None
    """TLS for every connection to the server (queries and the binlog stream). Without it the
    connector does not use TLS, also when the server offers it (`cdc check` warns then)."""

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


class BulkConfig(ConfigModel):
    """When a batch of document operations is sent."""

    max_actions: int = Field(1000, ge=1, le=100_000)
    """Send when this many operations are pending."""
    max_bytes: int = Field(5 * 1024 * 1024, ge=1024)
    """Send when the request body would exceed this many bytes."""
    flush_interval_ms: int = Field(200, ge=1)
    """Send pending operations at least this often."""
    concurrency: int = Field(16, ge=1, le=64)
    """Bulk requests in flight at once; 1 sends the next only after the previous was answered.
    Several hide the round trip to a distant cluster (16 keep a 100 ms one from costing
    throughput at 60,000 rows/s; writer threads start only while every one is busy). The
    order in which they are applied does not matter (every operation carries an external
    version), and the checkpoint still moves only to a commit whose every change, and every
    earlier one, is acknowledged. At most this many requests of up to `max_bytes` are held in
    memory."""


def _http_url(url: str) -> str:
    if not re.match(r"^https?://[^/\s?#]+", url):
        raise ValueError("must be an http:// or https:// URL with a host")
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        # They would not be sent: the client takes only scheme, host, port and path from a URL.
        raise PydanticCustomError(
            "credentials_in_url",
            "must not hold credentials; give them as sink.username/sink.password or sink.api_key",
        )
    return url


class SinkConfig(ConfigModel):
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
    """Cap, in seconds, of the exponential backoff while the cluster answers 429 or 5xx (one
    that does not answer at all is probed every 2 s or so instead)."""
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


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host.strip("[]") or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("must be `host:port`, e.g. `10.0.0.1:26379`")
    return value


class RedisStoreConfig(ConfigModel):
    """Checkpoints in Redis (the production choice): one server named by `url`, or the master
    that Redis Sentinel names (`sentinels` and `master`), followed across failovers."""

    url: str | None = None
    """Redis URL, e.g. `redis://localhost:6379/0` (`rediss://` for TLS). With `sentinels` it is
    optional and has no host: `redis://:password@/0` gives the master's password (or
    `user:password`), database and TLS (`rediss://`), and the Sentinels give its address."""
    sentinels: list[Annotated[str, AfterValidator(_host_port)]] = Field(default_factory=list)
    """Redis Sentinels as `host:port`, e.g. `[10.0.0.1:26379, 10.0.0.2:26379]`. Any one that
    answers names the current master; after a failover the connector reconnects to the new
    one. Give them with `master`, instead of a host in `url`."""
    master: str | None = None
    """The name the Sentinels monitor the master under (`sentinel monitor <name> ...`);
    required with `sentinels`."""
    sentinel_password: str | None = None
    """Password of the Sentinels themselves (their `requirepass`), if they have one. The
    master's password goes in `url`."""
    key_prefix: str = "cdc"
    """Prefix of every key the connector writes."""
    tls: TlsConfig | None = None
    """TLS options for a `rediss://` URL (CA, client certificate); without them a `rediss://`
    server's certificate is verified against the system's CAs."""

    @field_validator("url")
    @classmethod
    def _redis_url(cls, url: str | None) -> str | None:
        if url is not None and not re.match(r"^(redis|rediss|unix)://", url):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return url

    @field_validator("master")
    @classmethod
    def _master_name(cls, master: str | None) -> str | None:
        if master is not None and not master.strip():
            raise ValueError("must not be empty")
        return master

    @field_validator("sentinel_password", mode="before")
    @classmethod
    def _blank_sentinel_password(cls, value: Any) -> Any:
        return _blank_to_none(value)

    @model_validator(mode="after")
    def _tls_needs_rediss(self) -> RedisStoreConfig:
        if self.tls is not None and urlsplit(self.url or "").scheme != "rediss":
            raise ValueError("`tls` applies to TLS connections: give a `rediss://` url")
        return self

    @model_validator(mode="after")
    def _one_way_to_the_server(self) -> RedisStoreConfig:
        if not self.sentinels:
            if self.url is None:
                raise ValueError(
                    "give `url` (one Redis server), or `sentinels` and `master` (Redis Sentinel)"
                )
            if self.master is not None or self.sentinel_password is not None:
                given = "`master`" if self.master is not None else "`sentinel_password`"
                raise ValueError(f"{given} needs `sentinels`, the Sentinels' `host:port` list")
            return self
        if self.master is None:
            raise ValueError(
                "`sentinels` needs `master`, the name the Sentinels monitor the master under"
            )
        if self.url is not None:
            parts = urlsplit(self.url)
            if parts.scheme == "unix" or parts.hostname or parts.port:
                raise ValueError(
                    "with `sentinels`, `url` must not name a server (the Sentinels name the "
                    "master): give `redis://:password@/0` or `rediss://...` without a host, or "
                    "leave `url` out"
                )
        return self


class FileStoreConfig(ConfigModel):
    """Checkpoints in a local JSON file (single host, no Redis)."""

    path: str = "checkpoints"
    """Directory holding `<connector name>.json`."""


class CheckpointConfig(ConfigModel):
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


class SnapshotConfig(ConfigModel):
    """Copying the rows that exist before streaming starts (and re-syncing on demand)."""

    mode: SnapshotMode = "initial"
    """`initial`: copy every mapped table the first time the connector starts (no checkpoint);
    `when_needed`: also copy a table when its mapping is new to the connector; `never`."""
    chunk_size: int = Field(2000, ge=1, le=100_000)
    """Rows read per chunk (one consistent read each)."""
    max_rows_per_second: int = Field(0, ge=0)
    """Throttle to protect the primary; 0 means no limit."""
    chunks_in_flight: int = Field(3, ge=1, le=64)
    """Chunks read ahead of the oldest one not acknowledged yet: the next chunk is read while
    earlier ones are being sent. Progress is still recorded only for a chunk whose every
    earlier chunk is acknowledged. 1 reads the next chunk only after the previous one was
    acknowledged."""


class VerifyConfig(ConfigModel):
    """Continuous verification: the running connector compares every index with MySQL in the
    background (what `cdc verify` does once)."""

    interval: float = Field(0, ge=0)
    """Seconds from the start of one full pass to the start of the next; 0 turns it off."""
    max_rows_per_second: int = Field(1000, ge=0)
    """Rows read from MySQL per second by a pass; 0 means no limit."""
    repair: bool = False
    """Repair what a pass finds (as `cdc verify --repair`), instead of only reporting it."""
    settle_timeout: float = Field(60, gt=0)
    """Seconds a pass waits for rows that changed while it ran before calling them changing."""

    @field_validator("interval")
    @classmethod
    def _not_too_often(cls, value: float) -> float:
        if 0 < value < 10:
            raise ValueError("must be 0 (off) or at least 10 seconds")
        return value


class HaConfig(ConfigModel):
    """Active/standby: several `cdc run` with the same name and Redis; the one holding the
    lease streams, the others wait to take over."""

    enabled: bool = False
    """Take part in the lease (needs `checkpoint.redis`)."""
    lease_ttl: float = Field(10.0, ge=2, le=300)
    """Seconds a lease lasts unless renewed (every third of it): a standby takes over this
    long (and a few seconds more) after the active died, froze or lost Redis."""


class MetricsConfig(ConfigModel):
    """The Prometheus endpoint."""

    enabled: bool = True
    """Serve `/metrics`."""
    host: str = "0.0.0.0"
    """Address to listen on."""
    port: int = Field(9108, ge=0, le=65535)
    """Port to listen on (0 picks a free one)."""


class ConnectorConfig(ConfigModel):
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
    verify: VerifyConfig = VerifyConfig()
    """Background verification of the indices against MySQL."""
    ha: HaConfig = HaConfig()
    """Active/standby through a lease in Redis."""

    @model_validator(mode="after")
    def _ha_needs_redis(self) -> ConnectorConfig:
        if self.ha.enabled and self.checkpoint.redis is None:
            raise ValueError(
                "ha.enabled needs checkpoint.redis: the file checkpoint store serves one "
                "connector on one host, and cannot hold a lease"
            )
        return self

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
                if not is_glob(mapping.table) and fnmatch.fnmatchcase(mapping.table, pattern):
                    raise PydanticCustomError(
                        "shadowed_table",
                        "tables[{later}] (`{table}`) can never apply: tables[{earlier}] "
                        "(`{pattern}`) matches it first",
                        context,
                    )
        return tables

    def streamed_tables(self) -> list[str]:
        """The table patterns whose changes the stream reads: every mapping's, and every table
        of their children (link tables included), each once."""
        found: dict[str, None] = {}

        def add(children: list[ChildMapping]) -> None:
            for child in children:
                found[child.table] = None
                if child.through is not None:
                    found[child.through.table] = None
                add(child.children)

        for mapping in self.tables:
            found[mapping.table] = None
            add(mapping.children)
        return list(found)

    def schemas(self) -> list[str]:
        """The schema part of every table pattern the stream reads, sorted, each once."""
        return sorted({table.split(".", 1)[0] for table in self.streamed_tables()})

    def mapping_for(self, schema: str, table: str) -> TableMapping | None:
        """The first mapping covering `schema.table`, or None if the table is not mapped."""
        for mapping in self.tables:
            if mapping.matches(schema, table):
                return mapping
        return None
