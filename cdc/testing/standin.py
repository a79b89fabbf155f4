"""An in-process Elasticsearch stand-in with injectable faults.

`EsStandIn` is a threaded HTTP/1.1 server (keep-alive, one thread per connection) that answers
the part of the Elasticsearch API the connector uses, shaped like Elasticsearch 8.15:

    GET  /                       cluster info (version.number "8.15.0", tagline)
    HEAD /{index}                200 if the index exists, else 404
    PUT  /{index}                create it; 400 resource_already_exists_exception if it exists
    GET  /{index}                the settings and mappings it was created with
    DELETE /{index}              drop it and its documents
    POST /{index}/_refresh       200 (404 index_not_found_exception if missing)
    GET  /{index}/_count         live documents
    GET  /{index}/_doc/{id}      one document, or 404
    POST /{index}/_mget          documents by id (`{"ids": [...]}`)
    POST /{index}/_search?scroll=...  the ids of every live document, page by page (`size`);
    POST|DELETE /_search/scroll  the next page, or the end of a scroll
    POST /_bulk, /{index}/_bulk  NDJSON `index` and `delete` actions (`filter_path` honoured)

Other paths answer 400 "no handler found", like Elasticsearch. Request bodies may be
gzip-encoded or chunked. With an `ssl_context` it serves HTTPS, each connection's handshake in
that connection's thread. The indices, documents and `_bulk` semantics, including the two
storage modes (`store=True` keeps documents with external-version semantics, `store=False`
stores nothing and acknowledges every item, for throughput runs), are in
`cdc.testing.documents`; this module holds the server, the request routing and the controls.

Fault controls, callable from any thread while the server runs: `fail_next`, `fail_items`,
`reject_when`, `slow`, `delay_when` (late answers to chosen requests), `down`/`up`,
`clear_faults`. Counters: `requests`, `bulk_requests`,
`failed_requests`, `bytes_received`, `items` (per outcome). Accessors: `docs`, `version`,
`indices`.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self, cast
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from cdc.testing.documents import (
    ERROR_TYPES,
    BadRequest,
    DocumentStore,
    Reply,
    bulk_reply,
    doc_reply,
    error_body,
    filter_paths,
    filtered,
    missing_index,
    parse_bulk,
)
from cdc.testing.documents import BulkOp as BulkOp

log = logging.getLogger(__name__)

VERSION = "8.15.0"

_POLL_INTERVAL = 0.05


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], standin: EsStandIn, context: ssl.SSLContext | None
    ) -> None:
        self.standin = standin
        self.context = context
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.context is None:
            return sock, address
        # The handshake waits for the client's first bytes: not on the accepting thread, where
        # one silent client would hold up every other.
        wrapped = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return wrapped, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients vanishing mid-response (timeouts, down()) are part of the job.
        log.debug("stand-in connection from %s failed", client_address, exc_info=True)

    def drop_connections(self) -> None:
        with self.connections_lock:
            for sock in self.connections:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "es-stand-in"
    sys_version = ""

    @property
    def _server(self) -> _Server:
        return cast(_Server, self.server)

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without NODELAY, Nagle plus the client's
        # delayed ACK would add ~40 ms to every keep-alive response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._server.connections_lock:
            self._server.connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self._server.connections_lock:
                self._server.connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            body = b"".join(parts)
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return body

    def _dispatch(self) -> None:
        standin = self._server.standin
        raw = self._read_body()
        body = raw
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            body = gzip.decompress(raw)
        try:
            reply = standin._handle(self.command, self.path, body, len(raw))
        except Exception as exc:
            log.exception("stand-in failed on %s %s", self.command, self.path)
            reply = Reply(500, error_body(500, "internal_server_error", repr(exc)))
        delay = standin._delay_of(self.command, self.path, body)
        if delay > 0:
            time.sleep(delay)
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("X-elastic-product", "Elasticsearch")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)


class EsStandIn:
    """An Elasticsearch-API stand-in on `host:port` (`port=0` picks a free port).

    The port is bound in the constructor and kept across `down()`/`up()`. With `ssl_context`
    (a server-side context holding the certificate) it speaks HTTPS. Use as a context manager,
    or call `start()` and `close()`. All methods are thread-safe.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        store: bool = True,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._host = host
        self._context = ssl_context
        self._lock = threading.Lock()
        self._life = threading.Lock()
        self._docs = DocumentStore(store)
        """Indices, documents, item outcomes and per-item fault rules; guarded by `_lock`."""
        self._fail_next = 0
        self._fail_next_status = 429
        self._delay = 0.0
        self._delay_rule: Callable[[str, str, bytes], float] | None = None
        self._closed = False
        self._started = False
        self._thread: threading.Thread | None = None
        self._server: _Server | None = _Server((host, port), self, ssl_context)
        self._port: int = self._server.server_address[1]
        self.requests = 0
        """HTTP requests answered, of any kind."""
        self.bulk_requests = 0
        """`_bulk` requests received, including those failed by `fail_next`."""
        self.failed_requests = 0
        """`_bulk` requests answered with a `fail_next` error."""
        self.bytes_received = 0
        """Request body bytes received, as sent (before gzip decoding)."""

    @property
    def store(self) -> bool:
        """Whether documents are kept (see `cdc.testing.documents`); may be changed."""
        return self._docs.store

    @store.setter
    def store(self, store: bool) -> None:
        self._docs.store = store

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        return self._host, self._port

    @property
    def url(self) -> str:
        """The base URL to give the connector, e.g. `http://127.0.0.1:41234` (`https://` with
        an `ssl_context`)."""
        scheme = "http" if self._context is None else "https"
        return f"{scheme}://{self._host}:{self._port}"

    def start(self) -> Self:
        """Start serving. Idempotent; returns the stand-in."""
        with self._life:
            if self._closed:
                raise RuntimeError("the stand-in is closed")
            if not self._started:
                self._started = True
                self._serve()
        return self

    def close(self) -> None:
        """Stop serving, drop every connection and release the port. Idempotent."""
        with self._life:
            self._closed = True
            self._stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def down(self) -> None:
        """Close the listening socket and every open connection: new connections are refused
        until `up()`. Idempotent."""
        with self._life:
            self._stop()

    def up(self) -> None:
        """Listen again on the same port after `down()`. Idempotent."""
        with self._life:
            if self._closed:
                raise RuntimeError("the stand-in is closed")
            if self._server is None:
                self._server = _Server((self._host, self._port), self, self._context)
            if self._started and self._thread is None:
                self._serve()

    def _serve(self) -> None:
        server = self._server
        if server is None:
            return
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL},
            name=f"es-stand-in:{self._port}",
            daemon=True,
        )
        self._thread.start()

    def _stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        if thread is not None:
            server.shutdown()
            thread.join()
        server.server_close()
        server.drop_connections()

    # -- fault controls ---------------------------------------------------------------------

    def fail_next(self, n: int, status: int = 429) -> None:
        """Answer the next `n` `_bulk` requests with `status` and an Elasticsearch-shaped error
        body, applying none of their items. Replaces an earlier `fail_next`."""
        with self._lock:
            self._fail_next = n
            self._fail_next_status = status

    def fail_items(self, rule: Callable[[BulkOp], bool] | int | None, *, status: int = 429) -> None:
        """Fail individual `_bulk` items (not applied, per-item error in the response).

        `rule` is either an HTTP status, failing every item with it, or a predicate over
        `BulkOp`, failing the items it returns True for with `status`; None stops failing
        items. The predicate runs in a server thread, under the stand-in's lock.
        """
        with self._lock:
            if isinstance(rule, int):
                self._docs.item_rule, self._docs.item_status = (lambda _op: True), rule
            else:
                self._docs.item_rule, self._docs.item_status = rule, status

    def reject_when(self, field: str, value: Any) -> None:
        """Reject (400 mapper_parsing_exception) every indexed document whose `field` (a dotted
        path) equals `value`. Rules accumulate until `clear_faults()`."""
        with self._lock:
            self._docs.rejects.append((field, value))

    def slow(self, seconds: float) -> None:
        """Wait `seconds` before sending each response; 0 stops. The request is applied first,
        so a client that times out has still written its items, as with a slow cluster."""
        if seconds < 0:
            raise ValueError("delay must not be negative")
        self._delay = seconds

    def delay_when(self, rule: Callable[[str, str, bytes], float] | None) -> None:
        """Wait `rule(method, path, body)` seconds before sending each response (added to
        `slow`'s delay), so that chosen requests are answered late, after later ones; None
        stops. As with `slow`, the request is applied first. The rule runs in a server
        thread, one per connection, so requests on other connections are not held up."""
        self._delay_rule = rule

    def _delay_of(self, method: str, path: str, body: bytes) -> float:
        rule = self._delay_rule
        return self._delay + (rule(method, path, body) if rule is not None else 0.0)

    def clear_faults(self) -> None:
        """Undo `fail_next`, `fail_items`, `reject_when`, `slow` and `delay_when`, and `up()`
        if down."""
        with self._lock:
            self._fail_next = 0
            self._docs.item_rule = None
            self._docs.rejects.clear()
        self._delay = 0.0
        self._delay_rule = None
        self.up()

    # -- accessors --------------------------------------------------------------------------

    @property
    def items(self) -> dict[str, int]:
        """Bulk items by outcome: created, updated, deleted, not_found, conflict, rejected
        (reject_when or a bad document), failed (fail_items)."""
        with self._lock:
            return dict(self._docs.counts)

    def indices(self) -> list[str]:
        """Names of the existing indices, sorted."""
        with self._lock:
            return sorted(self._docs.indices)

    @property
    def open_scrolls(self) -> int:
        """Scrolls started and not yet cleared."""
        with self._lock:
            return len(self._docs.scrolls)

    def docs(self, index: str) -> dict[str, Any]:
        """Live documents of `index` by id, decoded (empty if the index does not exist, and
        always empty with `store=False`)."""
        with self._lock:
            idx = self._docs.indices.get(index)
            stored = dict(idx.docs) if idx else {}
        return {k: orjson.loads(src) for k, (_, src) in stored.items() if src is not None}

    def version(self, index: str, doc_id: str) -> int | None:
        """The version of a document, or of its tombstone if deleted; None if never written."""
        with self._lock:
            idx = self._docs.indices.get(index)
            entry = idx.docs.get(doc_id) if idx else None
        return entry[0] if entry else None

    # -- request handling (server threads) --------------------------------------------------

    def _handle(self, method: str, target: str, body: bytes, wire_bytes: int) -> Reply:
        with self._lock:
            self.requests += 1
            self.bytes_received += wire_bytes
        parts = [unquote(p) for p in urlsplit(target).path.split("/") if p]
        if not parts and method in ("GET", "HEAD"):
            return Reply(200, self._info())
        if parts[-1:] == ["_bulk"] and len(parts) <= 2 and method in ("POST", "PUT"):
            paths = filter_paths(parse_qs(urlsplit(target).query).get("filter_path", [""])[0])
            reply = self._bulk(body, parts[0] if len(parts) == 2 else None, paths)
            if paths is None or reply.status == 200:
                return reply
            return Reply(reply.status, orjson.dumps(filtered(orjson.loads(reply.body), paths)))
        if parts and not parts[0].startswith("_"):
            name = parts[0]
            if len(parts) == 1:
                with self._lock:
                    return self._docs.index_api(method, name, body)
            if parts[1] == "_refresh" and len(parts) == 2 and method in ("POST", "GET"):
                with self._lock:
                    return self._docs.refresh(name)
            if parts[1] == "_count" and len(parts) == 2 and method in ("POST", "GET"):
                with self._lock:
                    return self._docs.count(name)
            if parts[1] == "_doc" and len(parts) == 3 and method == "GET":
                return self._get_doc(name, parts[2])
            if parts[1] == "_mget" and len(parts) == 2 and method in ("POST", "GET"):
                with self._lock:
                    return self._docs.mget(name, body)
            if parts[1] == "_search" and len(parts) == 2 and "scroll=" in target:
                with self._lock:
                    return self._docs.scroll_start(name, body)
        if parts[:2] == ["_ingest", "pipeline"] and len(parts) == 3 and method == "PUT":
            with self._lock:
                return self._docs.put_pipeline(parts[2], body)
        if parts == ["_search", "scroll"] and method in ("POST", "GET"):
            with self._lock:
                return self._docs.scroll_next(body)
        if parts == ["_search", "scroll"] and method == "DELETE":
            with self._lock:
                return self._docs.scroll_clear(body)
        return Reply(
            400,
            orjson.dumps({"error": f"no handler found for uri [{target}] and method [{method}]"}),
        )

    def _info(self) -> bytes:
        return orjson.dumps(
            {
                "name": "es-stand-in",
                "cluster_name": "cdc-stand-in",
                "cluster_uuid": "c0ffee00c0ffee00c0ffee",
                "version": {
                    "number": VERSION,
                    "build_flavor": "default",
                    "build_type": "stand-in",
                    "lucene_version": "9.11.1",
                    "minimum_wire_compatibility_version": "7.17.0",
                    "minimum_index_compatibility_version": "7.0.0",
                },
                "tagline": "You Know, for Search",
            }
        )

    def _get_doc(self, name: str, doc_id: str) -> Reply:
        with self._lock:
            idx = self._docs.indices.get(name)
            if idx is None:
                return missing_index(name)
            entry = idx.docs.get(doc_id)
        return doc_reply(name, doc_id, entry)

    def _bulk(
        self, body: bytes, default_index: str | None, paths: list[tuple[str, ...]] | None = None
    ) -> Reply:
        started = time.monotonic()
        with self._lock:
            self.bulk_requests += 1
            if self._fail_next > 0:
                self._fail_next -= 1
                self.failed_requests += 1
                status = self._fail_next_status
                kind = ERROR_TYPES.get(status, "stand_in_injected_failure")
                return Reply(
                    status,
                    error_body(status, kind, f"injected by the stand-in (HTTP {status})"),
                )
        try:
            ops = parse_bulk(body, default_index)
        except BadRequest as exc:
            return Reply(400, error_body(400, exc.kind, exc.reason))
        with self._lock:
            try:
                items = self._docs.apply(ops)
            except BadRequest as exc:
                return Reply(400, error_body(400, exc.kind, exc.reason))
        return bulk_reply(items, started, paths)
