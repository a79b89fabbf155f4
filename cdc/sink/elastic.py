"""The Elasticsearch/OpenSearch sink: the only module that talks to the search cluster.

Requests go through `elastic_transport` with plain `application/json` and
`application/x-ndjson` content types and no client-meta or compatibility headers, which both
Elasticsearch 8/9 and OpenSearch 2/3 accept (the official Elasticsearch client's
`compatible-with` media types are rejected by OpenSearch).

`write` sends `_bulk` requests (the protocol is in `cdc.sink.bulk`) until every item is
acknowledged or rejected: a failed request, and items that failed with 429/5xx, are retried
(only the failed items) with capped exponential backoff, forever; rejected items are returned
to the caller. The index administration the connector needs (create behind an alias, swap an
alias) is here too. Only the transport's own errors are translated (`SinkUnavailable`, or a
terminal `CdcError` for a TLS certificate refused, see `cdc.tls`); an HTTP error status is a
`CdcError` unless it says "try again later".
"""

from __future__ import annotations

import base64
import logging
import re
import ssl
import threading
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import orjson
from elastic_transport import (
    ConnectionError as TransportConnectionError,
)
from elastic_transport import (
    NdjsonSerializer,
    NodeConfig,
    OrjsonSerializer,
    Transport,
    TransportError,
)
from elastic_transport.client_utils import DEFAULT

from cdc import tls
from cdc.config import SinkConfig, TableMapping
from cdc.config.mappings import IndexTemplate, index_template
from cdc.errors import (
    CdcError,
    ConfigError,
    Interrupted,
    SinkUnavailable,
    SinkUnreachable,
    TransientError,
)
from cdc.retry import PROBE_SECONDS, Backoff
from cdc.sink.bulk import OK, RETRY_STATUSES, BulkItem, ItemResult, classify, describe_error

log = logging.getLogger(__name__)

BULK_PATH = "/_bulk?filter_path=errors,items.*.status,items.*.error,error,status"
"""`_bulk` with its response cut to what `classify` reads: each item's status and error (and a
failed request's own error). The full response repeats the index, id, version, shards and
sequence numbers of every item, eight times the bytes to read and parse."""


def _node(url: str, cfg: SinkConfig) -> NodeConfig:
    parts = urlsplit(url)
    headers: dict[str, str] = {}
    if cfg.api_key:
        headers["authorization"] = f"ApiKey {cfg.api_key}"
    elif cfg.username is not None:
        token = base64.b64encode(f"{cfg.username}:{cfg.password}".encode()).decode()
        headers["authorization"] = f"Basic {token}"
    https = parts.scheme == "https"
    options: dict[str, Any] = {}
    if https and not cfg.tls.verify:
        # Given paths, the transport leaves the client certificate out when it does not verify
        # the server's; a context of our own keeps it.
        options.update(verify_certs=False, ssl_context=_unverified_context(cfg))
    elif https:
        options.update(
            ca_certs=cfg.tls.ca_file,
            client_cert=cfg.tls.client_cert,
            client_key=cfg.tls.client_key,
        )
    return NodeConfig(
        scheme=parts.scheme,
        host=parts.hostname or "localhost",
        port=parts.port or (443 if https else 9200),
        path_prefix=parts.path.rstrip("/"),
        headers=headers,
        request_timeout=cfg.request_timeout,
        # One connection per bulk request in flight, plus room for the snapshot's and the
        # verifier's requests.
        connections_per_node=max(10, cfg.bulk.concurrency + 4),
        ssl_show_warn=False,
        **options,
    )


class _NdjsonBytes(NdjsonSerializer):
    """Bulk bodies are built as NDJSON bytes whose every line ends in a newline: they are sent
    as they are. The transport's own serializer copies each body twice (into a bytearray, then
    into bytes), 0.3 ms of a 1,000-item request's 1.2 ms of CPU."""

    def dumps(self, data: Any) -> bytes:
        if isinstance(data, bytes) and data.endswith(b"\n"):
            return data
        return super().dumps(data)


def _unverified_context(cfg: SinkConfig) -> ssl.SSLContext:
    try:
        return tls.context(
            verify=False, client_cert=cfg.tls.client_cert, client_key=cfg.tls.client_key
        )
    except ssl.SSLError as exc:
        raise tls.refusal(exc, "connecting to Elasticsearch", "sink.tls") from exc
    except OSError as exc:
        raise ConfigError(f"sink.tls: cannot read a TLS file: {exc}") from exc


class ElasticSink:
    """Writes document operations to Elasticsearch or OpenSearch."""

    def __init__(self, cfg: SinkConfig) -> None:
        self._cfg = cfg
        self._distribution: str | None = None
        """`elasticsearch` or `opensearch`, asked when an index is first created."""
        self._transport = Transport(
            [_node(u, cfg) for u in cfg.urls],
            max_retries=0,
            retry_on_timeout=False,
            # The pool's own dead-node timeout (up to 30 s) would delay the first request
            # after a heal; the connector's probing decides when to try again instead.
            dead_node_backoff_factor=0.1,
            max_dead_node_backoff=0.5,
            meta_header=False,
            # orjson parses a 1,000-item bulk response about ten times faster than json.
            serializers={
                "application/json": OrjsonSerializer(),
                "application/x-ndjson": _NdjsonBytes(),
            },
        )
        self.requests = 0
        """`_bulk` requests sent."""
        self._counting = threading.Lock()
        self._probing = threading.Lock()
        """Held by the one writer that probes a cluster which does not answer."""
        self._answered_at = float("-inf")
        """When a probe last found the cluster answering again (monotonic)."""
        self.on_request: Callable[[float], None] | None = None
        """Called with the duration of every `_bulk` request (metrics)."""
        self.on_items: Callable[[str, int], None] | None = None
        """Called with (outcome, count) after every `_bulk` response (metrics)."""

    # -- plumbing ---------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        ndjson: bool = False,
        timeout: float | None = None,
    ) -> tuple[int, Any]:
        """One HTTP request (`timeout`: seconds instead of `sink.request_timeout`); returns
        (status, decoded body). Raises SinkUnreachable on connection errors and timeouts,
        never for HTTP error statuses."""
        headers = {"accept": "application/json"}
        if body is not None:
            headers["content-type"] = "application/x-ndjson" if ndjson else "application/json"
        try:
            resp = self._transport.perform_request(
                method, path, body=body, headers=headers, request_timeout=timeout or DEFAULT
            )
        except TransportConnectionError as exc:
            refused = tls.failure(exc)
            if refused is not None:
                raise self._tls_refusal(refused) from exc
            raise SinkUnreachable(f"Elasticsearch unreachable: {exc.message}") from exc
        except TransportError as exc:
            raise SinkUnreachable(f"Elasticsearch request failed: {exc.message}") from exc
        return resp.meta.status, resp.body

    def _tls_refusal(self, refused: ssl.SSLError) -> CdcError:
        urls = self._cfg.urls
        # The transport does not say which node it tried; with one URL that is no question.
        server = urls[0] if len(urls) == 1 else f"one of {', '.join(urls)}"
        return tls.refusal(
            refused,
            "connecting to Elasticsearch",
            "sink.tls",
            server=server,
            plaintext="use an http:// URL for a cluster without TLS, or the cluster's HTTPS port",
        )

    def probe(self) -> None:
        """One cheap request (`HEAD /`, a short timeout); SinkUnreachable while the cluster
        does not answer."""
        self.request("HEAD", "/", timeout=min(PROBE_SECONDS, self._cfg.request_timeout))

    def _check_status(self, status: int, body: Any, what: str) -> None:
        if status < 300:
            return
        detail = describe_error(body.get("error")) if isinstance(body, dict) else str(body)[:300]
        if status in RETRY_STATUSES:
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

    def ensure_indices(
        self, mappings: Sequence[TableMapping], fields: Mapping[str, dict[str, Any]] | None = None
    ) -> list[str]:
        """Create missing targets as an index `<name>_v1` behind the alias `<name>`, with the
        configured settings and, for its mappings, `fields[name]` (the field mappings derived
        from the column types, `cdc.transform.fields`) under the configured ones (the alias is
        what `cdc snapshot --rebuild` swaps).

        Idempotent; returns the aliases it created. Indices or aliases that exist are left alone.
        """
        created = []
        for mapping in mappings:
            template = index_template(mapping.index)
            if template is not None:
                self.put_index_template(template, mapping, (fields or {}).get(mapping.index))
        for name in sorted({m.index for m in mappings if index_template(m.index) is None}):
            status, _ = self.request("HEAD", f"/{quote(name)}")
            if status == 200:
                continue
            if status != 404:
                self._check_status(status, {}, f"checking index {name}")
            mapping = next(m for m in mappings if m.index == name)
            typed = (fields or {}).get(name)
            if self.create_index(f"{name}_v1", mapping, alias=name, fields=typed):
                created.append(name)
                log.info("created index %s_v1 behind the alias %s", name, name)
        return created

    def create_index(
        self,
        name: str,
        mapping: TableMapping,
        alias: str | None = None,
        fields: dict[str, Any] | None = None,
    ) -> bool:
        """Create index `name` with the mapping's settings and mappings (`fields`: the derived
        field mappings they are merged over), and `alias` pointing at it as its write index.
        False when it already existed."""
        body: dict[str, Any] = {}
        if mapping.index_settings:
            body["settings"] = mapping.index_settings
        mappings = mapping.mappings_body(fields)
        if mappings:
            body["mappings"] = opensearch_types(mappings) if self._opensearch() else mappings
        if alias:
            body["aliases"] = {alias: {"is_write_index": True}}
        status, resp = self.request("PUT", f"/{quote(name)}", orjson.dumps(body))
        if status == 400 and "already_exists" in str(resp):
            return False
        self._check_status(status, resp, f"creating index {name}")
        return True

    def put_index_template(
        self, template: IndexTemplate, mapping: TableMapping, fields: dict[str, Any] | None
    ) -> None:
        """Create or update the index template that maps the indices of an index per period
        (`orders-*`) as `create_index` maps one index: the indices are created by the
        cluster on their first document. Idempotent."""
        body: dict[str, Any] = {}
        if mapping.index_settings:
            body["settings"] = mapping.index_settings
        mappings = mapping.mappings_body(fields)
        if mappings:
            body["mappings"] = opensearch_types(mappings) if self._opensearch() else mappings
        name = "cdc-" + re.sub(r"[^a-z0-9_.-]+", "-", template.pattern).strip("-")
        request = {"index_patterns": [template.pattern], "template": body, "priority": 100}
        status, resp = self.request("PUT", f"/_index_template/{quote(name)}", orjson.dumps(request))
        self._check_status(status, resp, f"creating index template {name}")

    def _opensearch(self) -> bool:
        """Whether the cluster is OpenSearch (asked once)."""
        if self._distribution is None:
            version = self.info().get("version")
            found = version.get("distribution") if isinstance(version, dict) else None
            self._distribution = str(found or "elasticsearch")
        return self._distribution == "opensearch"

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

    # -- reading documents back --------------------------------------------------------------

    def mget(
        self, index: str, ids: Sequence[str], routing: Mapping[str, str] | None = None
    ) -> dict[str, dict[str, Any]]:
        """The `_source` of each of `ids` that `index` holds (`_mget` reads in real time),
        each looked for on the shard of its `routing` value when given; ids it lacks are left
        out."""
        if not ids:
            return {}
        if routing:
            docs = [{"_id": i, "routing": routing[i]} if i in routing else {"_id": i} for i in ids]
            payload = orjson.dumps({"docs": docs})
        else:
            payload = orjson.dumps({"ids": list(ids)})
        status, body = self.request("POST", f"/{quote(index)}/_mget", payload)
        if _index_missing(status, body):
            return {}
        self._check_status(status, body, f"reading documents of {index}")
        found: dict[str, dict[str, Any]] = {}
        for doc in body.get("docs", []) if isinstance(body, dict) else []:
            if doc.get("found") and isinstance(doc.get("_source"), dict):
                found[str(doc["_id"])] = doc["_source"]
            elif "error" in doc and not _index_missing(404, doc):
                raise CdcError(
                    f"reading document {doc.get('_id')} of {index}: {describe_error(doc['error'])}"
                )
        return found

    def _until_reachable(
        self,
        failed_at: float,
        stop: threading.Event | None,
        on_retry: Callable[[BaseException], None] | None,
    ) -> None:
        """Probe a cluster that did not answer a request sent at `failed_at` every
        `PROBE_SECONDS` or so, instead of sending it the whole batch again, until it answers.
        With several requests in flight one writer probes; the others wait for its answer."""
        while not self._probing.acquire(timeout=0.2):
            if stop is not None and stop.is_set():
                raise Interrupted("stopping while Elasticsearch was unreachable")
        try:
            if self._answered_at > failed_at:
                return  # another writer's probe got an answer since this request was sent
            probing = Backoff(first=0.2)
            while True:
                probing.wait(stop)
                try:
                    self.probe()
                except SinkUnreachable as exc:
                    if on_retry is not None:
                        on_retry(exc)
                    continue
                self._answered_at = time.monotonic()
                return
        finally:
            self._probing.release()

    def scan_ids(
        self, index: str, page: int, keep_alive: float = 120.0
    ) -> Generator[list[str], None, None]:
        """Every document id of `index`, `page` ids at a time, from one scroll over a
        refreshed index (the scroll is cleared when the iteration ends or is abandoned). A
        missing index has none."""
        status, body = self.request("POST", f"/{quote(index)}/_refresh")
        if _index_missing(status, body):
            return
        self._check_status(status, body, f"refreshing index {index}")
        scroll = f"{max(1, int(keep_alive))}s"
        query = {"size": page, "_source": False, "sort": ["_doc"]}
        status, body = self.request(
            "POST", f"/{quote(index)}/_search?scroll={scroll}", orjson.dumps(query)
        )
        self._check_status(status, body, f"listing documents of {index}")
        scroll_id = body.get("_scroll_id")
        try:
            while True:
                hits = body.get("hits", {}).get("hits", [])
                if not hits:
                    return
                yield [str(hit["_id"]) for hit in hits]
                status, body = self.request(
                    "POST",
                    "/_search/scroll",
                    orjson.dumps({"scroll": scroll, "scroll_id": scroll_id}),
                )
                self._check_status(status, body, f"listing documents of {index}")
                scroll_id = body.get("_scroll_id", scroll_id)
        finally:
            if scroll_id:
                try:
                    self.request(
                        "DELETE", "/_search/scroll", orjson.dumps({"scroll_id": [scroll_id]})
                    )
                except SinkUnavailable:
                    log.debug("could not clear the scroll of %s; it expires in %s", index, scroll)

    # -- bulk -------------------------------------------------------------------------------

    def bulk_once(self, items: Sequence[BulkItem]) -> list[ItemResult]:
        """Send one `_bulk` request; per-item results in order. Raises SinkUnavailable when the
        request as a whole failed in a retryable way."""
        body = b"".join(item.body for item in items)
        started = time.monotonic()
        try:
            status, resp = self.request("POST", BULK_PATH, body, ndjson=True)
        finally:
            if self.on_request is not None:
                self.on_request(time.monotonic() - started)
        with self._counting:
            self.requests += 1
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
            return [OK] * len(items)
        return [classify(r) for r in results]

    def write(
        self,
        items: Sequence[BulkItem],
        stop: threading.Event | None = None,
        on_retry: Callable[[BaseException], None] | None = None,
    ) -> list[tuple[BulkItem, ItemResult]]:
        """Write every item until each is acknowledged or rejected; retries transient failures
        forever with capped exponential backoff and jitter, calling `on_retry` with each.

        Returns the rejected items with their results (empty when all were acknowledged).
        Raises `Interrupted` if `stop` is set while waiting to retry.
        """
        pending = list(items)
        rejected: list[tuple[BulkItem, ItemResult]] = []
        backoff = Backoff(first=0.1, cap=self._cfg.max_backoff)
        while pending:
            sent_at = time.monotonic()
            try:
                results = self.bulk_once(pending)
            except SinkUnreachable as exc:
                if on_retry is not None:
                    on_retry(exc)
                self._until_reachable(sent_at, stop, on_retry)
                continue
            except TransientError as exc:
                if on_retry is not None:
                    on_retry(exc)
                backoff.wait(stop)
                continue
            if self.on_items is not None:
                counts: dict[str, int] = {}
                for result in results:
                    name: str = "retried" if result.outcome == "retry" else result.outcome
                    counts[name] = counts.get(name, 0) + 1
                for name, count in counts.items():
                    self.on_items(name, count)
            retry: list[BulkItem] = []
            for item, result in zip(pending, results, strict=True):
                if result.outcome == "retry":
                    retry.append(item)
                elif result.outcome == "rejected":
                    rejected.append((item, result))
            if retry:
                if on_retry is not None:
                    first = next(r for r in results if r.outcome == "retry")
                    on_retry(SinkUnavailable(f"{len(retry)} items failed: {first.error}"))
                backoff.wait(stop)
            else:
                backoff.reset()
            pending = retry
        return rejected

    def close(self) -> None:
        self._transport.close()


def _index_missing(status: int, body: Any) -> bool:
    """A 404 (or an `_mget` entry) that says the index does not exist, not a document."""
    error = body.get("error") if isinstance(body, dict) else None
    return (
        status == 404
        and isinstance(error, dict)
        and error.get("type") == "index_not_found_exception"
    )


def opensearch_types(mappings: Any) -> Any:
    """The same mappings with Elasticsearch's `flattened` spelled as OpenSearch's
    `flat_object` (which takes no parameters)."""
    if isinstance(mappings, dict):
        if mappings.get("type") == "flattened":
            return {"type": "flat_object"}
        return {key: opensearch_types(value) for key, value in mappings.items()}
    if isinstance(mappings, list):
        return [opensearch_types(item) for item in mappings]
    return mappings
