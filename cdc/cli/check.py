"""`cdc check`: validate the config and every prerequisite, one line per check.

It checks what the connector needs from the source, the search cluster and the checkpoint
store, and prints as it goes:

    ✓ name: detail
    ✗ name: detail — fix      (fatal: the connector would not work)
    ! name: detail — fix      (a warning: it works, with the limitation named)

Each link that uses TLS gets a `<link> tls` line after its own (`checkpoint_store tls`,
`source tls`, `sink tls`): the TLS version and what was verified, a warning when the server's
certificate (or, for the source, its name) is not checked. A source server that offers TLS the
config does not use is a warning too; links whose URL says `redis://` or `http://` get none.

It exits 1 when any fatal check failed and 2 when the config is invalid.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote, urlsplit

import typer

from cdc import tls
from cdc.cli.common import ConfigOption, paragraphs, source
from cdc.config import ConnectorConfig, TlsConfig, load_config
from cdc.config.mappings import index_template
from cdc.config.problems import mask_url
from cdc.engine.startup import check_mappings
from cdc.errors import CdcError
from cdc.model.checkpoint import Checkpoint
from cdc.model.position import Position
from cdc.sink.elastic import ElasticSink
from cdc.source.mysql import Connection, offers_tls, tls_version
from cdc.source.positions import check_position
from cdc.source.prereq import Check, check_source
from cdc.source.rows import RowReader
from cdc.state.backends import open_stores

SUPPORTED = {"Elasticsearch": (8, 9), "OpenSearch": (2, 3)}
"""Major versions of each distribution the connector is built and tested for."""

CHECK_HELP = paragraphs(
    "Validate the config and check everything the connector needs, one line per check.",
    "Source server: connection, version, log_bin, binlog_format ROW, binlog_row_image FULL, "
    "binlog_row_metadata FULL, no binlog compression, GTID mode, privileges, every table "
    "mapping against the tables it covers (each names an existing table, and only columns and "
    "options that fit it), and whether the stored position can still be streamed from.",
    "Search cluster: reachable, version, each target index present or to be created, field "
    "types against index_mappings. Checkpoint store: reachable and writable.",
    "TLS: for each link that uses it, the version and whether the server's certificate is "
    "verified; a source server offering TLS the config does not use is a warning.",
    "Lines read `✓ name: detail`, `✗ name: detail — fix` (fatal) or `! name: detail — fix` "
    "(a warning). Exits 1 if any check marked ✗ failed, 2 if the config is invalid.",
)


class _Report:
    """Prints checks as they complete and remembers whether a fatal one failed."""

    def __init__(self) -> None:
        self.failed = 0
        self.warnings = 0
        self.passed = 0

    def add(self, check: Check) -> Check:
        if check.ok:
            self.passed += 1
            typer.echo(f"✓ {check.name}: {check.detail}")
        else:
            mark = "✗" if check.fatal else "!"
            if check.fatal:
                self.failed += 1
            else:
                self.warnings += 1
            typer.echo(f"{mark} {check.name}: {check.detail} — {check.fix}".replace("\n", " "))
        return check

    def ok(self, name: str, detail: str) -> None:
        self.add(Check(name, True, detail, None))

    def fail(self, name: str, detail: str, fix: str | None, fatal: bool = True) -> None:
        self.add(Check(name, False, detail, fix or "see the message", fatal))

    def error(self, name: str, exc: CdcError, fix: str) -> None:
        self.fail(name, exc.message, exc.hint or fix)


def check(config: ConfigOption) -> None:
    """Print one line per prerequisite; exit 1 if a fatal one fails, 2 on a bad config."""
    report = _Report()
    try:
        cfg = load_config(config)
    except CdcError as exc:
        report.fail("config", str(exc).replace("\n", "; "), "fix the config file")
        raise typer.Exit(2) from None
    mappings = "1 table mapping" if len(cfg.tables) == 1 else f"{len(cfg.tables)} table mappings"
    report.ok("config", f"{config}: connector {cfg.name!r}, {mappings}")
    stored = _check_store(cfg, report)
    fields = _check_source(cfg, report, stored)
    _check_sink(cfg, report, fields)
    parts = [f"{report.passed} passed"]
    if report.failed:
        parts.append(f"{report.failed} failed")
    if report.warnings:
        parts.append(f"{report.warnings} warning{'s' if report.warnings > 1 else ''}")
    typer.echo(", ".join(parts))
    if report.failed:
        raise typer.Exit(1)


def _check_store(cfg: ConnectorConfig, report: _Report) -> Checkpoint | CdcError | None:
    """Check the store is reachable and writable; returns the stored checkpoint (or the error
    that kept it from being read)."""
    try:
        with open_stores(cfg) as stores:
            stored = stores.checkpoints.load()
            stores.heartbeats.read()
            # Named once reached: through Sentinel, that is when the master's address is known.
            where = stores.checkpoints.describe()
    except CdcError as exc:
        redis = cfg.checkpoint.redis
        if redis is None:
            fix = "check checkpoint.file.path"
        elif redis.sentinels:
            fix = "check checkpoint.redis.sentinels and master, and that the Sentinels are up"
        else:
            fix = "check checkpoint.redis.url and that Redis is up"
        report.error("checkpoint_store", exc, fix)
        return exc
    # The write is tried on a scratch checkpoint next to the real one (same prefix, same
    # directory), so a running connector is not disturbed.
    if cfg.checkpoint.redis is not None:
        fix = (
            "make the Redis user able to write keys under the prefix (and not a read-only replica)"
        )
    else:
        assert cfg.checkpoint.file is not None
        fix = f"make {cfg.checkpoint.file.path} writable by the connector's user"
    probe = Checkpoint(Position("mysql", "", "probe", 4), 0).stamped()
    scratch = open_stores(cfg, name=f"{cfg.name}.check-{os.getpid()}")
    try:
        scratch.checkpoints.save(probe)
        readable = scratch.checkpoints.load() == probe
        scratch.checkpoints.delete()
    except CdcError as exc:
        report.fail("checkpoint_store", f"{where} is readable but not writable: {exc.message}", fix)
        return stored
    finally:
        scratch.close()
    if not readable:
        report.fail("checkpoint_store", f"{where}: a test write did not read back", fix)
    else:
        report.ok("checkpoint_store", f"{where} is reachable and writable")
        _check_store_tls(cfg, report)
    return stored


def _check_store_tls(cfg: ConnectorConfig, report: _Report) -> None:
    redis = cfg.checkpoint.redis
    parts = urlsplit(redis.url or "") if redis is not None else None
    if redis is None or parts is None or parts.scheme != "rediss":
        return
    options = redis.tls or TlsConfig()
    # Through Sentinel the URL names no host: the master's address is the Sentinels' to give,
    # and the line says "encrypted" without a version.
    servers = [(parts.hostname, parts.port or 6379)] if parts.hostname else []
    versions = _handshakes(report, "checkpoint_store tls", servers, options)
    if versions is not None:
        _tls_state(report, "checkpoint_store tls", versions, options, "checkpoint.redis.tls")


def _check_source(
    cfg: ConnectorConfig, report: _Report, stored: Checkpoint | CdcError | None
) -> dict[str, dict[str, Any]]:
    """The source's checks; returns the field mappings the column types give each index."""
    address = f"{cfg.source.host}:{cfg.source.port}"
    fields: dict[str, dict[str, Any]] = {}
    try:
        with source(cfg) as (conn, info):
            report.ok("source", f"connected to {address} as {cfg.source.user} ({info.version})")
            _check_source_tls(cfg, report, conn)
            for result in check_source(conn, info, cfg.schemas()):
                report.add(result)
            fields = _check_mappings(cfg, report)
            if isinstance(stored, CdcError):
                return fields
            if stored is None:
                report.ok(
                    "position",
                    "no stored checkpoint: the connector starts at the server's current "
                    "position (earlier rows need a snapshot)",
                )
                return fields
            report.add(check_position(conn, info, stored.position))
    except CdcError as exc:
        report.error("source", exc, f"check source.host/port ({address}) and that the server is up")
    return fields


def _check_source_tls(cfg: ConnectorConfig, report: _Report, conn: Connection) -> None:
    options = cfg.source.tls
    if options is not None:
        version = tls_version(conn)
        _tls_state(
            report,
            "source tls",
            [version or "TLS"],
            options,
            "source.tls",
            identity=options.verify_identity,
        )
    elif offers_tls(conn):
        report.fail(
            "source tls",
            f"not encrypted, though {cfg.source.host}:{cfg.source.port} offers TLS",
            "add source.tls (with ca_file: the CA certificate that signed the server's "
            "certificate)",
            fatal=False,
        )


def _handshakes(
    report: _Report, name: str, servers: list[tuple[str, int]], options: TlsConfig
) -> list[str] | None:
    """The TLS version each server agrees to with `options`; None, with a warning, when a
    handshake fails though the link itself worked."""
    try:
        ctx = tls.context(
            verify=options.verify,
            ca_file=options.ca_file,
            client_cert=options.client_cert,
            client_key=options.client_key,
        )
        return [tls.handshake(host, port, ctx, timeout=5.0) for host, port in servers]
    except OSError as exc:
        report.fail(
            name,
            f"the link works, but a TLS handshake of its own failed: {exc}",
            "run `cdc check` again; if it persists, compare the TLS options with the server's",
            fatal=False,
        )
        return None


def _tls_state(
    report: _Report,
    name: str,
    versions: list[str],
    options: TlsConfig,
    fields: str,
    identity: bool = True,
) -> None:
    """The `<link> tls` line: TLS versions, what is verified, the client certificate."""
    version = ", ".join(sorted(set(versions))) or "encrypted"
    if not options.verify:
        report.fail(
            name,
            f"{version}, but the server's certificate is not verified: anyone in between can "
            "read and change what is sent",
            f"set {fields}.verify: true (and {fields}.ca_file to the CA that signed the "
            "server's certificate)",
            fatal=False,
        )
        return
    detail = f"{version}, certificate verified against {options.ca_file or 'the system CAs'}"
    if options.client_cert is not None:
        detail += f", client certificate {options.client_cert}"
    if not identity:
        report.fail(
            name,
            f"{detail}, but not that it names the host",
            f"set {fields}.verify_identity: true",
            fatal=False,
        )
        return
    report.ok(name, detail)


def _check_mappings(cfg: ConnectorConfig, report: _Report) -> dict[str, dict[str, Any]]:
    """Every mapping against the tables it covers now (what `cdc run` refuses to start on);
    returns the field mappings the column types give each index."""
    try:
        with RowReader(cfg.source) as reader:
            found = check_mappings(cfg, reader)
    except CdcError as exc:
        report.error("mappings", exc, "check that the user may read information_schema")
        return {}
    for line, fix in found.problems:
        report.fail("mappings", line, fix)
    for line in found.unmatched:
        report.fail("mappings", line, "correct the table name, or create the table first")
    if not found.problems and not found.unmatched:
        one = len(cfg.tables) == 1
        count = "1 table mapping covers" if one else f"{len(cfg.tables)} table mappings cover"
        tables = "1 table" if found.tables == 1 else f"{found.tables} tables"
        they = "it names" if one else "they name"
        report.ok("mappings", f"{count} {tables}; every column and option {they} fits")
        for tree in found.trees.values():
            others = [t for t in tree.tables if t != tree.mapping.table]
            report.ok(
                "mappings",
                f"{tree.mapping.table} documents are built from {len(others)} more "
                f"table(s) ({', '.join(others)}); every join column has its index",
            )
    return found.fields


def _check_sink(cfg: ConnectorConfig, report: _Report, fields: dict[str, dict[str, Any]]) -> None:
    urls = ", ".join(mask_url(url) for url in cfg.sink.urls)
    sink = ElasticSink(cfg.sink)
    try:
        try:
            info = sink.info()
        except CdcError as exc:
            report.error("sink", exc, f"check sink.urls ({urls}) and that the cluster is up")
            return
        _check_version(report, urls, info)
        _check_sink_tls(cfg, report)
        for index in sorted({m.index for m in cfg.tables}):
            template = index_template(index)
            if template is not None:
                report.ok(
                    f"index {index}",
                    f"one index per period: the connector keeps an index template for "
                    f"{template.pattern} with the field types of its columns",
                )
                continue
            _check_index(cfg, sink, report, index, fields.get(index))
    finally:
        sink.close()


def _check_sink_tls(cfg: ConnectorConfig, report: _Report) -> None:
    servers = [urlsplit(url) for url in cfg.sink.urls if url.startswith("https://")]
    if not servers:
        return
    addresses = [(parts.hostname or "localhost", parts.port or 443) for parts in servers]
    versions = _handshakes(report, "sink tls", addresses, cfg.sink.tls)
    if versions is not None:
        _tls_state(report, "sink tls", versions, cfg.sink.tls, "sink.tls")


def _check_version(report: _Report, urls: str, info: dict[str, Any]) -> None:
    version = info.get("version") if isinstance(info.get("version"), dict) else {}
    assert isinstance(version, dict)
    number = str(version.get("number", "unknown"))
    product = "OpenSearch" if version.get("distribution") == "opensearch" else "Elasticsearch"
    found = f"{urls} answers: {product} {number}"
    try:
        major = int(number.split(".")[0])
    except ValueError:
        major = 0
    low, high = SUPPORTED[product]
    if low <= major <= high:
        report.ok("sink", found)
    else:
        report.fail(
            "sink",
            f"{found}, which the connector is not tested with",
            f"use {product} {low}.x to {high}.x",
            fatal=False,
        )


def _check_index(
    cfg: ConnectorConfig,
    sink: ElasticSink,
    report: _Report,
    index: str,
    typed: dict[str, Any] | None,
) -> None:
    """An index against the field types its columns give (`typed`) and `index_mappings`."""
    name = f"index {index}"
    mapping = next(m for m in cfg.tables if m.index == index)
    sources = [
        *(["its columns"] if typed else []),
        *(["index_mappings"] if mapping.index_mappings else []),
    ]
    try:
        status, _ = sink.request("HEAD", f"/{quote(index)}")
        if status == 404:
            how = (
                f"the field types of {' and '.join(sources)}"
                if sources
                else "dynamic mappings (no index_mappings configured)"
            )
            report.ok(name, f"does not exist yet; the connector creates it with {how}")
            return
        if status != 200:
            report.fail(
                name, f"HEAD /{index} answered HTTP {status}", "check the user's index privileges"
            )
            return
        if not sources:
            report.ok(name, "exists (no field types known to compare)")
            return
        status, body = sink.request("GET", f"/{quote(index)}/_mapping")
    except CdcError as exc:
        report.error(name, exc, "check that the cluster is up")
        return
    if status != 200 or not isinstance(body, dict):
        report.fail(
            name, f"reading its mapping answered HTTP {status}", "check the user's privileges"
        )
        return
    wanted = field_types(mapping.mappings_body(typed) or {})
    configured = set(field_types(mapping.index_mappings or {}))
    differences: list[str] = []
    for concrete in sorted(body):
        actual = field_types((body[concrete] or {}).get("mappings") or {})
        differences += mapping_differences(
            wanted, actual, concrete if concrete != index else "", configured
        )
    if differences:
        report.fail(
            name,
            f"exists, but its field types differ from {' and '.join(sources)}: "
            f"{'; '.join(differences)}",
            "reindex into an index created with the configured mappings, or change "
            "index_mappings to match (the connector never changes an existing index)",
            fatal=False,
        )
    else:
        fields = "1 field" if len(wanted) == 1 else f"{len(wanted)} fields"
        report.ok(name, f"exists; its {fields} have the types of {' and '.join(sources)}")


def field_types(mappings: dict[str, Any]) -> dict[str, str]:
    """Dotted field path -> type, from a `mappings` object (`properties`, nested objects)."""
    types: dict[str, str] = {}

    def walk(properties: dict[str, Any], prefix: str) -> None:
        for field, spec in properties.items():
            if not isinstance(spec, dict):
                continue
            path = prefix + field
            children = spec.get("properties")
            kind = spec.get("type") or ("object" if isinstance(children, dict) else None)
            if kind:
                types[path] = str(kind)
            if isinstance(children, dict):
                walk(children, path + ".")

    props = mappings.get("properties")
    if isinstance(props, dict):
        walk(props, "")
    return types


def mapping_differences(
    wanted: dict[str, str],
    actual: dict[str, str],
    concrete: str = "",
    configured: set[str] | None = None,
) -> list[str]:
    """Human lines for every wanted field whose type the index does not have; a field in
    `configured` (default: all) is named as configured, the others as their column's type.
    OpenSearch's `flat_object` is Elasticsearch's `flattened`."""
    where = f" in {concrete}" if concrete else ""
    out = []
    for field in sorted(wanted):
        want = wanted[field]
        said = "configured" if configured is None or field in configured else "column type:"
        have = actual.get(field)
        if have == "flat_object":
            have = "flattened"
        if have is None:
            out.append(f"{field} is not mapped{where} ({said} {want})")
        elif have != want:
            out.append(f"{field} is {have}{where} ({said} {want})")
    return out
