"""The Elasticsearch/OpenSearch sink: the only module that talks to the search cluster.

Requests go through `elastic_transport` with plain `application/json` and
`application/x-ndjson` content types and no client-meta or compatibility headers, which both
Elasticsearch 8/9 and OpenSearch 2/3 accept (the official Elasticsearch client's
`compatible-with` media types are rejected by OpenSearch).

Every document operation carries an external version (design invariant 2). The per-item
results of `_bulk` are the truth: an item is acknowledged when it succeeded, when it was stale
(409: the document already holds a newer version), or when a delete found nothing. Items that
failed with 429/5xx are retried, alone, with capped exponential backoff; items rejected for
their content are returned to the caller.
"""

from __future__ import annotations

import base64
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import orjson
from elastic_transport import (
    ConnectionError as TransportConnectionError,
)
from elastic_transport import (
    NodeConfig,
    OrjsonSerializer,
    Transport,
    TransportError,
)

from cdc.config import SinkConfig, TableMapping
from cdc.errors import CdcError, DocumentRejected, SinkUnavailable, TransientError
from cdc.transform.mapping import Action

log = logging.getLogger(__name__)

_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class Interrupted(CdcError):
    """The connector is stopping; the operation was abandoned before it completed."""


@dataclass(slots=True)
class BulkItem:
    """One encoded document operation plus what the dead-letter path needs to know about it."""

    action: Action
    version: int
    table: str
    gtid: str | None = None
    id_columns: tuple[str, ...] = ()
    body: bytes = b""

    def __post_init__(self) -> None:
        if not self.body:
            self.body = encode(self.action, self.version)


_META_PREFIXES: dict[tuple[str, str], bytes] = {}


def encode(action: Action, version: int) -> bytes:
    """The two NDJSON lines (one for a delete) of a `_bulk` operation with an external version:
    `{"<op>":{"_index":...,"_id":...,"version":N,"version_type":"external"}}` and the document.

    Assembled from bytes around a cached per-(op, index) prefix: this runs for every change.
    """
    prefix = _META_PREFIXES.get((action.op, action.index))
    if prefix is None:
        if len(_META_PREFIXES) > 10_000:
            _META_PREFIXES.clear()
        prefix = b'{"%s":{"_index":%s,"_id":' % (action.op.encode(), orjson.dumps(action.index))
        _META_PREFIXES[(action.op, action.index)] = prefix
    meta = b'%s%s,"version":%d,"version_type":"external"}}\n' % (
        prefix,
        orjson.dumps(action.doc_id),
        version,
    )
    if action.op == "delete":
        return meta
    return meta + orjson.dumps(action.source) + b"\n"


Outcome = Literal["ok", "stale", "retry", "rejected"]


@dataclass(frozen=True, slots=True)
class ItemResult:
    """The outcome of one bulk item: `ok`, `stale` (409), `retry` (429/5xx) or `rejected`."""

    outcome: Outcome
    status: int
    error: str | None = None


@dataclass(slots=True)
class WriteStats:
    """Counts over the life of a sink, for logs and metrics."""

    requests: int = 0
    items_ok: int = 0
    items_stale: int = 0
    items_retried: int = 0
    items_rejected: int = 0
    by_outcome: dict[str, int] = field(default_factory=dict)


_OK = ItemResult("ok", 200)
"""Every item of a response whose `errors` is false (statuses 200/201, or 404 deletes)."""


def classify(item: dict[str, Any]) -> ItemResult:
    """Turn one entry of a `_bulk` response's `items` into an outcome."""
    (op, body), *_ = item.items()
    status = int(body.get("status", 0))
    error = body.get("error")
    if 200 <= status < 300:
        return ItemResult("ok", status)
    if status == 404 and op == "delete" and not error:
        return ItemResult("ok", status)
    reason = _describe(error) if error else f"HTTP {status}"
    if status == 409:
        return ItemResult("stale", status, reason)
    if status in _RETRY_STATUSES:
        return ItemResult("retry", status, reason)
    return ItemResult("rejected", status, reason)


def _describe(error: Any) -> str:
    if isinstance(error, dict):
        kind = error.get("type", "error")
        reason = error.get("reason", "")
        cause = error.get("caused_by")
        text = f"{kind}: {reason}"
        if isinstance(cause, dict) and cause.get("reason"):
            text += f" (caused by {cause.get('type')}: {cause.get('reason')})"
        return text
    return str(error)


def _node(url: str, cfg: SinkConfig) -> NodeConfig:
    parts = urlsplit(url)
    headers: dict[str, str] = {}
    if cfg.api_key:
        headers["authorization"] = f"ApiKey {cfg.api_key}"
    elif cfg.username is not None:
        token = base64.b64encode(f"{cfg.username}:{cfg.password}".encode()).decode()
        headers["authorization"] = f"Basic {token}"
    https = parts.scheme == "https"
    return NodeConfig(
        scheme=parts.scheme,
        host=parts.hostname or "localhost",
        port=parts.port or (443 if https else 9200),
        path_prefix=parts.path.rstrip("/"),
        headers=headers,
        request_timeout=cfg.request_timeout,
        verify_certs=cfg.tls.verify if https else True,
        ca_certs=cfg.tls.ca_file if https else None,
        client_cert=cfg.tls.client_cert if https else None,
        client_key=cfg.tls.client_key if https else None,
        ssl_show_warn=False,
    )


class ElasticSink:
    """Writes document operations to Elasticsearch or OpenSearch."""

    def __init__(self, cfg: SinkConfig) -> None:
        self._cfg = cfg
        self._transport = Transport(
            [_node(u, cfg) for u in cfg.urls],
            max_retries=0,
            retry_on_timeout=False,
            meta_header=False,
            # orjson parses a 1,000-item bulk response about ten times faster than json.
            serializers={"application/json": OrjsonSerializer()},
        )
        self.stats = WriteStats()
        self.on_request: Callable[[float], None] | None = None
        """Called with the duration of every `_bulk` request (metrics)."""
        self.on_items: Callable[[str, int], None] | None = None
        """Called with (outcome, count) after every `_bulk` response (metrics)."""

    # -- plumbing ---------------------------------------------------------------------------

    def request(
        self, method: str, path: str, body: bytes | None = None, ndjson: bool = False
    ) -> tuple[int, Any]:
        """One HTTP request; returns (status, decoded body). Raises SinkUnavailable on
        connection errors and timeouts, never for HTTP error statuses."""
        headers = {"accept": "application/json"}
        if body is not None:
            headers["content-type"] = "application/x-ndjson" if ndjson else "application/json"
        try:
            resp = self._transport.perform_request(method, path, body=body, headers=headers)
        except TransportConnectionError as exc:
            raise SinkUnavailable(f"Elasticsearch unreachable: {exc.message}") from exc
        except TransportError as exc:
            raise SinkUnavailable(f"Elasticsearch request failed: {exc.message}") from exc
        except Exception as exc:
            raise SinkUnavailable(f"Elasticsearch request failed: {exc}") from exc
        return resp.meta.status, resp.body

    def _check_status(self, status: int, body: Any, what: str) -> None:
        if status < 300:
            return
        detail = _describe(body.get("error")) if isinstance(body, dict) else str(body)[:300]
        if status in _RETRY_STATUSES:
            raise SinkUnavailable(f"{what}: HTTP {status}: {detail}")
        if status in (401, 403):
            raise CdcError(
                f"{what}: HTTP {status}: {detail}",
                hint="check sink.username/sink.password or sink.api_key and the user's privileges",
            )
        raise CdcError(f"{what}: HTTP {status}: {detail}")

    def info(self) -> dict[str, Any]:
        """The cluster's root document (name, version, distribution)."""
        status, body = self.request("GET", "/")
        self._check_status(status, body, "reading cluster info")
        return body if isinstance(body, dict) else {}

    def ensure_indices(self, mappings: Sequence[TableMapping]) -> list[str]:
        """Create missing targets as an index `<name>_v1` behind the alias `<name>`, with the
        configured settings/mappings (the alias is what `cdc snapshot --rebuild` swaps).

        Idempotent; returns the aliases it created. Indices or aliases that exist are left alone.
        """
        created = []
        for name in sorted({m.index for m in mappings}):
            status, _ = self.request("HEAD", f"/{quote(name)}")
            if status == 200:
                continue
            if status != 404:
                self._check_status(status, {}, f"checking index {name}")
            mapping = next(m for m in mappings if m.index == name)
            if self.create_index(f"{name}_v1", mapping, alias=name):
                created.append(name)
                log.info("created index %s_v1 behind the alias %s", name, name)
        return created

    def create_index(self, name: str, mapping: TableMapping, alias: str | None = None) -> bool:
        """Create index `name` with the mapping's settings and mappings (and `alias` pointing
        at it as its write index). False when it already existed."""
        body: dict[str, Any] = {}
        if mapping.index_settings:
            body["settings"] = mapping.index_settings
        if mapping.index_mappings:
            body["mappings"] = mapping.index_mappings
        if alias:
            body["aliases"] = {alias: {"is_write_index": True}}
        status, resp = self.request("PUT", f"/{quote(name)}", orjson.dumps(body))
        if status == 400 and "already_exists" in str(resp):
            return False
        self._check_status(status, resp, f"creating index {name}")
        return True

    def alias_target(self, alias: str) -> str | None:
        """The index an alias points at; None when `alias` is a concrete index (or missing)."""
        status, body = self.request("GET", f"/_alias/{quote(alias)}")
        if status == 404:
            return None
        self._check_status(status, body, f"reading alias {alias}")
        indices: list[str] = sorted(body) if isinstance(body, dict) else []
        if len(indices) != 1:
            raise CdcError(
                f"alias {alias} points at {len(indices)} indices ({', '.join(indices)})",
                hint="point it at exactly one index before rebuilding",
            )
        return indices[0]

    def swap_alias(self, alias: str, old: str, new: str) -> None:
        """Move `alias` from index `old` to index `new` in one atomic step."""
        body = {
            "actions": [
                {"remove": {"index": old, "alias": alias}},
                {"add": {"index": new, "alias": alias, "is_write_index": True}},
            ]
        }
        status, resp = self.request("POST", "/_aliases", orjson.dumps(body))
        self._check_status(status, resp, f"moving alias {alias} to {new}")

    def refresh(self, index: str) -> None:
        status, body = self.request("POST", f"/{quote(index)}/_refresh")
        self._check_status(status, body, f"refreshing {index}")

    # -- bulk -------------------------------------------------------------------------------

    def bulk_once(self, items: Sequence[BulkItem]) -> list[ItemResult]:
        """Send one `_bulk` request; per-item results in order. Raises SinkUnavailable when the
        request as a whole failed in a retryable way."""
        body = b"".join(item.body for item in items)
        started = time.monotonic()
        try:
            status, resp = self.request("POST", "/_bulk", body, ndjson=True)
        finally:
            if self.on_request is not None:
                self.on_request(time.monotonic() - started)
        self.stats.requests += 1
        if status == 413 and len(items) > 1:
            half = len(items) // 2
            return self.bulk_once(items[:half]) + self.bulk_once(items[half:])
        if status == 413:
            return [ItemResult("rejected", 413, "document larger than http.max_content_length")]
        self._check_status(status, resp, "bulk request")
        results = resp.get("items") if isinstance(resp, dict) else None
        if not isinstance(results, list) or len(results) != len(items):
            raise SinkUnavailable("bulk response does not list one result per item")
        if resp.get("errors") is False:
            return [_OK] * len(items)
        return [classify(r) for r in results]

    def write(
        self,
        items: Sequence[BulkItem],
        stop: threading.Event | None = None,
        on_retry: Any = None,
    ) -> list[tuple[BulkItem, ItemResult]]:
        """Write every item until each is acknowledged or rejected; retries transient failures
        forever with capped exponential backoff and jitter.

        Returns the rejected items with their results (empty when all were acknowledged).
        Raises `Interrupted` if `stop` is set while waiting to retry.
        """
        pending = list(items)
        rejected: list[tuple[BulkItem, ItemResult]] = []
        delay = 0.1
        attempt = 0
        while pending:
            try:
                results = self.bulk_once(pending)
            except TransientError as exc:
                attempt += 1
                if on_retry is not None:
                    on_retry(exc, attempt)
                delay = self._sleep(delay, stop)
                continue
            retry: list[BulkItem] = []
            if self.on_items is not None:
                counts: dict[str, int] = {}
                for result in results:
                    name: str = "retried" if result.outcome == "retry" else result.outcome
                    counts[name] = counts.get(name, 0) + 1
                for name, count in counts.items():
                    self.on_items(name, count)
            for item, result in zip(pending, results, strict=True):
                if result.outcome == "ok":
                    self.stats.items_ok += 1
                elif result.outcome == "stale":
                    self.stats.items_stale += 1
                elif result.outcome == "retry":
                    self.stats.items_retried += 1
                    retry.append(item)
                else:
                    self.stats.items_rejected += 1
                    rejected.append((item, result))
            if retry:
                attempt += 1
                if on_retry is not None:
                    first = next(r for r in results if r.outcome == "retry")
                    on_retry(SinkUnavailable(f"{len(retry)} items failed: {first.error}"), attempt)
                delay = self._sleep(delay, stop)
            else:
                delay = 0.1
            pending = retry
        return rejected

    def _sleep(self, delay: float, stop: threading.Event | None) -> float:
        wait = delay * random.uniform(0.5, 1.0)
        if stop is not None:
            if stop.wait(wait):
                raise Interrupted("stopping while Elasticsearch was failing")
        else:
            time.sleep(wait)
        return min(delay * 2, self._cfg.max_backoff)

    def close(self) -> None:
        self._transport.close()


def rejection_error(item: BulkItem, result: ItemResult) -> DocumentRejected:
    """The fatal error raised when a rejected document cannot be parked elsewhere."""
    return DocumentRejected(
        f"Elasticsearch rejected {item.action.op} of document {item.action.doc_id!r} in index "
        f"{item.action.index!r} (from {item.table}): HTTP {result.status}: {result.error}",
        hint="fix the index mapping or the table mapping, then restart; the connector resumes "
        "from the last checkpoint and re-sends this document",
    )
