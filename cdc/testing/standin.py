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
    POST /_bulk, /{index}/_bulk  NDJSON `index` and `delete` actions (see below)

Other paths answer 400 "no handler found", like Elasticsearch. `_bulk` accepts `index` and
`delete` actions with `_index`, `_id`, `version` and `version_type` (`external`,
`external_gte` or internal); `create` and `update` are refused with a 400 for the whole request
(the connector never sends them). Bulk writes create missing indices, as Elasticsearch does by
default. Request bodies may be gzip-encoded or chunked.

Two storage modes:

- `store=True` keeps documents with Elasticsearch's version semantics: an external-version
  write (index or delete) whose version is <= the current one (< for `external_gte`) fails
  that item with 409 version_conflict_engine_exception; a delete leaves a tombstone carrying its
  version (also when the document did not exist: 404 `not_found`), which later stale writes
  conflict with. Unlike Elasticsearch, tombstones are kept forever instead of for
  `index.gc_deletes` (60 s), so tests may wait without the rule weakening. A document line that
  is not a JSON object is rejected per item with 400 mapper_parsing_exception.
- `store=False` stores nothing and acknowledges every item (index 201 `created`, delete 200
  `deleted`), for throughput runs. Per item it costs two newline scans, one JSON parse of the
  action line (about 100 bytes) and one small dict in the response; document lines are neither
  copied nor parsed unless `reject_when` or a `fail_items` predicate needs them. Measured on
  CPython 3.11 here: about 4-6 µs of server CPU per item, some 150k items/s per core, several
  times what the connector's binlog decoding produces.

Fault controls, callable from any thread while the server runs: `fail_next`, `fail_items`,
`reject_when`, `slow`, `down`/`up`, `clear_faults`. Counters: `requests`, `bulk_requests`,
`failed_requests`, `bytes_received`, `items` (per outcome). Accessors: `docs`, `version`,
`indices`.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self, cast
from urllib.parse import unquote, urlsplit

import orjson

log = logging.getLogger(__name__)

VERSION = "8.15.0"

_SHARDS = {"total": 1, "successful": 1, "failed": 0}
_POLL_INTERVAL = 0.05

# The error type Elasticsearch uses for each whole-request failure status a test may inject.
_ERROR_TYPES = {
    400: "illegal_argument_exception",
    401: "security_exception",
    403: "security_exception",
    408: "request_timeout_exception",
    413: "content_too_long_exception",
    429: "es_rejected_execution_exception",
    500: "internal_server_error",
    502: "bad_gateway_exception",
    503: "unavailable_shards_exception",
    504: "gateway_timeout_exception",
}


@dataclass(frozen=True, slots=True)
class BulkOp:
    """One operation of a `_bulk` request, as `fail_items` predicates see it."""

    op: str
    """`index` or `delete`."""
    index: str
    doc_id: str
    version: int | None
    raw_source: bytes | None
    """The document line as sent; None for a delete."""

    def source(self) -> Any:
        """The decoded document (None for a delete); raises orjson.JSONDecodeError if the line
        is not JSON."""
        return None if self.raw_source is None else orjson.loads(self.raw_source)


@dataclass(slots=True)
class _Reply:
    status: int
    body: bytes


class _BadRequest(Exception):
    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass(slots=True)
class _Index:
    body: dict[str, Any]
    # doc id -> (version, source line); a None source is a delete tombstone.
    docs: dict[str, tuple[int, bytes | None]]
    seq_no: int = 0


def _error_body(status: int, kind: str, reason: str, **extra: Any) -> bytes:
    cause = {"type": kind, "reason": reason, **extra}
    return orjson.dumps({"error": {"root_cause": [cause], **cause}, "status": status})


def _item_error(kind: str, reason: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "reason": reason, **extra}


def _lookup(doc: Any, path: str) -> tuple[bool, Any]:
    """(found, value) of a dotted field path in a decoded document."""
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return False, None
        doc = doc[part]
    return True, doc


def _ack(op: str, index: str, doc_id: str, meta: dict[str, Any]) -> dict[str, Any]:
    """The item result of `store=False`: success without storing anything."""
    created = op == "index"
    return {
        "_index": index,
        "_id": doc_id,
        "_version": meta.get("version", 1),
        "result": "created" if created else "deleted",
        "_shards": _SHARDS,
        "_seq_no": 0,
        "_primary_term": 1,
        "status": 201 if created else 200,
    }


_ParsedOp = tuple[str, str, str, dict[str, Any], memoryview | None]


def _parse_bulk(body: bytes, default_index: str | None) -> list[_ParsedOp]:
    """(op, index, id, action metadata, document line) per operation; _BadRequest when the
    request is malformed, in which case Elasticsearch applies none of it."""
    if body and not body.endswith(b"\n"):
        raise _BadRequest(
            "illegal_argument_exception", "The bulk request must be terminated by a newline [\\n]"
        )
    view = memoryview(body)
    ops: list[_ParsedOp] = []
    pos, end_of_body, line_no = 0, len(body), 0
    while pos < end_of_body:
        end = body.index(b"\n", pos)
        line = view[pos:end]
        pos = end + 1
        line_no += 1
        if not line:
            continue
        try:
            action = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise _BadRequest(
                "x_content_parse_exception", f"Malformed action/metadata line [{line_no}]: {exc}"
            ) from exc
        if not isinstance(action, dict) or len(action) != 1:
            raise _BadRequest(
                "illegal_argument_exception",
                f"Malformed action/metadata line [{line_no}], expected a single action",
            )
        ((op, meta),) = action.items()
        if op not in ("index", "delete") or not isinstance(meta, dict):
            raise _BadRequest(
                "illegal_argument_exception",
                f"Malformed action/metadata line [{line_no}], the stand-in supports only "
                f"[index, delete] but found [{op}]",
            )
        index = meta.get("_index", default_index)
        if not isinstance(index, str) or not index:
            raise _BadRequest("action_request_validation_exception", "index is missing")
        doc_id = meta.get("_id")
        doc: memoryview | None = None
        if op == "index":
            if pos >= end_of_body:
                raise _BadRequest(
                    "illegal_argument_exception", f"no document line after line [{line_no}]"
                )
            end = body.index(b"\n", pos)
            doc = view[pos:end]
            pos = end + 1
            line_no += 1
            if doc_id is None:
                doc_id = uuid.uuid4().hex[:20]
        if not isinstance(doc_id, str) or not doc_id:
            raise _BadRequest("action_request_validation_exception", "id is missing")
        ops.append((op, index, doc_id, meta, doc))
    return ops


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], standin: EsStandIn) -> None:
        self.standin = standin
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

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
            reply = _Reply(500, _error_body(500, "internal_server_error", repr(exc)))
        delay = standin._delay
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

    The port is bound in the constructor and kept across `down()`/`up()`. Use as a context
    manager, or call `start()` and `close()`. All methods are thread-safe.
    """

    def __init__(self, port: int = 0, *, host: str = "127.0.0.1", store: bool = True) -> None:
        self.store = store
        self._host = host
        self._lock = threading.Lock()
        self._life = threading.Lock()
        self._indices: dict[str, _Index] = {}
        self._fail_next = 0
        self._fail_next_status = 429
        self._item_rule: Callable[[BulkOp], bool] | None = None
        self._item_status = 429
        self._rejects: list[tuple[str, Any]] = []
        self._delay = 0.0
        self._closed = False
        self._started = False
        self._thread: threading.Thread | None = None
        self._server: _Server | None = _Server((host, port), self)
        self._port: int = self._server.server_address[1]
        self.requests = 0
        """HTTP requests answered, of any kind."""
        self.bulk_requests = 0
        """`_bulk` requests received, including those failed by `fail_next`."""
        self.failed_requests = 0
        """`_bulk` requests answered with a `fail_next` error."""
        self.bytes_received = 0
        """Request body bytes received, as sent (before gzip decoding)."""
        self._items: dict[str, int] = {}

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        return self._host, self._port

    @property
    def url(self) -> str:
        """The base URL to give the connector, e.g. `http://127.0.0.1:41234`."""
        return f"http://{self._host}:{self._port}"

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
                self._server = _Server((self._host, self._port), self)
            if self._started and self._thread is None:
                self._serve()

    @property
    def is_up(self) -> bool:
        return self._server is not None

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
                self._item_rule, self._item_status = (lambda _op: True), rule
            else:
                self._item_rule, self._item_status = rule, status

    def reject_when(self, field: str, value: Any) -> None:
        """Reject (400 mapper_parsing_exception) every indexed document whose `field` (a dotted
        path) equals `value`. Rules accumulate until `clear_faults()`."""
        with self._lock:
            self._rejects.append((field, value))

    def slow(self, seconds: float) -> None:
        """Wait `seconds` before sending each response; 0 stops. The request is applied first,
        so a client that times out has still written its items, as with a slow cluster."""
        if seconds < 0:
            raise ValueError("delay must not be negative")
        self._delay = seconds

    def clear_faults(self) -> None:
        """Undo `fail_next`, `fail_items`, `reject_when` and `slow`, and `up()` if down."""
        with self._lock:
            self._fail_next = 0
            self._item_rule = None
            self._rejects.clear()
        self._delay = 0.0
        self.up()

    # -- accessors --------------------------------------------------------------------------

    @property
    def items(self) -> dict[str, int]:
        """Bulk items by outcome: created, updated, deleted, not_found, conflict, rejected
        (reject_when or a bad document), failed (fail_items)."""
        with self._lock:
            return dict(self._items)

    def indices(self) -> list[str]:
        """Names of the existing indices, sorted."""
        with self._lock:
            return sorted(self._indices)

    def docs(self, index: str) -> dict[str, Any]:
        """Live documents of `index` by id, decoded (empty if the index does not exist, and
        always empty with `store=False`)."""
        with self._lock:
            idx = self._indices.get(index)
            stored = dict(idx.docs) if idx else {}
        return {k: orjson.loads(src) for k, (_, src) in stored.items() if src is not None}

    def version(self, index: str, doc_id: str) -> int | None:
        """The version of a document, or of its tombstone if deleted; None if never written."""
        with self._lock:
            idx = self._indices.get(index)
            entry = idx.docs.get(doc_id) if idx else None
        return entry[0] if entry else None

    # -- request handling (server threads) --------------------------------------------------

    def _handle(self, method: str, target: str, body: bytes, wire_bytes: int) -> _Reply:
        with self._lock:
            self.requests += 1
            self.bytes_received += wire_bytes
        parts = [unquote(p) for p in urlsplit(target).path.split("/") if p]
        if not parts and method in ("GET", "HEAD"):
            return _Reply(200, self._info())
        if parts[-1:] == ["_bulk"] and len(parts) <= 2 and method in ("POST", "PUT"):
            return self._bulk(body, parts[0] if len(parts) == 2 else None)
        if parts and not parts[0].startswith("_"):
            name = parts[0]
            if len(parts) == 1:
                return self._index_api(method, name, body)
            if parts[1] == "_refresh" and len(parts) == 2 and method in ("POST", "GET"):
                return self._with_index(name, lambda _: {"_shards": _SHARDS})
            if parts[1] == "_count" and len(parts) == 2 and method in ("POST", "GET"):
                return self._with_index(
                    name,
                    lambda idx: {
                        "count": sum(1 for _, s in idx.docs.values() if s is not None),
                        "_shards": _SHARDS,
                    },
                )
            if parts[1] == "_doc" and len(parts) == 3 and method == "GET":
                return self._get_doc(name, parts[2])
        return _Reply(
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

    @staticmethod
    def _missing(name: str) -> _Reply:
        return _Reply(
            404,
            _error_body(
                404,
                "index_not_found_exception",
                f"no such index [{name}]",
                index=name,
                **{"resource.type": "index_or_alias", "resource.id": name},
            ),
        )

    def _with_index(self, name: str, answer: Callable[[_Index], Any]) -> _Reply:
        with self._lock:
            idx = self._indices.get(name)
            if idx is None:
                return self._missing(name)
            return _Reply(200, orjson.dumps(answer(idx)))

    def _index_api(self, method: str, name: str, body: bytes) -> _Reply:
        with self._lock:
            idx = self._indices.get(name)
            if method == "HEAD":
                return _Reply(200 if idx else 404, b"")
            if method == "GET":
                if idx is None:
                    return self._missing(name)
                return _Reply(200, orjson.dumps({name: {"aliases": {}, **idx.body}}))
            if method == "DELETE":
                if self._indices.pop(name, None) is None:
                    return self._missing(name)
                return _Reply(200, b'{"acknowledged":true}')
            if method != "PUT":
                return _Reply(405, _error_body(405, "illegal_argument_exception", "bad method"))
            if idx is not None:
                return _Reply(
                    400,
                    _error_body(
                        400,
                        "resource_already_exists_exception",
                        f"index [{name}/stand-in] already exists",
                        index=name,
                    ),
                )
            if name != name.lower() or name[0] in "-_+":
                return _Reply(
                    400,
                    _error_body(
                        400, "invalid_index_name_exception", f"Invalid index name [{name}]"
                    ),
                )
            try:
                spec = orjson.loads(body) if body.strip() else {}
            except orjson.JSONDecodeError as exc:
                return _Reply(400, _error_body(400, "parse_exception", str(exc)))
            if not isinstance(spec, dict):
                return _Reply(400, _error_body(400, "parse_exception", "body is not an object"))
            self._indices[name] = _Index(
                body={
                    "mappings": spec.get("mappings", {}),
                    "settings": spec.get("settings", {}),
                },
                docs={},
            )
            return _Reply(
                200,
                orjson.dumps({"acknowledged": True, "shards_acknowledged": True, "index": name}),
            )

    def _get_doc(self, name: str, doc_id: str) -> _Reply:
        with self._lock:
            idx = self._indices.get(name)
            if idx is None:
                return self._missing(name)
            entry = idx.docs.get(doc_id)
        source = entry[1] if entry else None
        if entry is None or source is None:
            return _Reply(404, orjson.dumps({"_index": name, "_id": doc_id, "found": False}))
        return _Reply(
            200,
            b'{"_index":%b,"_id":%b,"_version":%d,"found":true,"_source":%b}'
            % (orjson.dumps(name), orjson.dumps(doc_id), entry[0], source),
        )

    def _bulk(self, body: bytes, default_index: str | None) -> _Reply:
        started = time.monotonic()
        with self._lock:
            self.bulk_requests += 1
            if self._fail_next > 0:
                self._fail_next -= 1
                self.failed_requests += 1
                status = self._fail_next_status
                kind = _ERROR_TYPES.get(status, "stand_in_injected_failure")
                return _Reply(
                    status,
                    _error_body(status, kind, f"injected by the stand-in (HTTP {status})"),
                )
        try:
            ops = _parse_bulk(body, default_index)
        except _BadRequest as exc:
            return _Reply(400, _error_body(400, exc.kind, exc.reason))
        with self._lock:
            try:
                items = self._apply(ops)
            except _BadRequest as exc:
                return _Reply(400, _error_body(400, exc.kind, exc.reason))
        errors = any("error" in next(iter(item.values())) for item in items)
        took = int((time.monotonic() - started) * 1000)
        return _Reply(200, orjson.dumps({"errors": errors, "took": took, "items": items}))

    def _apply(self, ops: list[_ParsedOp]) -> list[dict[str, Any]]:
        """Per-item results of a parsed bulk request; caller holds the lock."""
        if not self.store and self._item_rule is None and not self._rejects:
            return self._ack_all(ops)
        if self.store:
            self._check_versions(ops)
        items: list[dict[str, Any]] = []
        rule = self._item_rule
        for op, index, doc_id, meta, doc in ops:
            raw = None if doc is None else bytes(doc)
            if rule is not None and rule(BulkOp(op, index, doc_id, meta.get("version"), raw)):
                items.append({op: self._failed(index, doc_id)})
                continue
            rejected = None
            if raw is not None and (self.store or self._rejects):
                rejected = self._check_document(index, doc_id, raw)
            items.append({op: rejected or self._write(op, index, doc_id, meta, raw)})
        return items

    def _ack_all(self, ops: list[_ParsedOp]) -> list[dict[str, Any]]:
        items = [{op: _ack(op, index, doc_id, meta)} for op, index, doc_id, meta, _ in ops]
        created = sum(1 for op, *_ in ops if op == "index")
        self._count("created", created)
        self._count("deleted", len(ops) - created)
        return items

    @staticmethod
    def _check_versions(ops: list[_ParsedOp]) -> None:
        for op, _, _, meta, _ in ops:
            vtype = meta.get("version_type", "internal")
            version = meta.get("version")
            if vtype in ("external", "external_gte"):
                if not isinstance(version, int) or version < 0:
                    raise _BadRequest(
                        "action_request_validation_exception",
                        "Validation Failed: 1: illegal version value "
                        f"[{version}] for version type [{vtype.upper()}];",
                    )
            elif vtype != "internal":
                raise _BadRequest("illegal_argument_exception", f"No version type match [{vtype}]")
            elif version is not None:
                raise _BadRequest(
                    "action_request_validation_exception",
                    "Validation Failed: 1: internal versioning can not be used for optimistic "
                    f"concurrency control (in {op}). Please use `if_seq_no` and "
                    "`if_primary_term` instead;",
                )

    def _failed(self, index: str, doc_id: str) -> dict[str, Any]:
        self._count("failed")
        status = self._item_status
        return {
            "_index": index,
            "_id": doc_id,
            "status": status,
            "error": _item_error(
                _ERROR_TYPES.get(status, "stand_in_injected_failure"),
                f"injected by the stand-in (HTTP {status})",
            ),
        }

    def _check_document(self, index: str, doc_id: str, raw: bytes) -> dict[str, Any] | None:
        """A 400 item result if the document is not an object or matches a `reject_when`
        rule, else None."""
        try:
            source = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            source, reason = None, f"failed to parse: {exc}"
        else:
            reason = "" if isinstance(source, dict) else "the document is not a JSON object"
        if not reason:
            for field, value in self._rejects:
                found, actual = _lookup(source, field)
                if found and actual == value:
                    reason = (
                        f"failed to parse field [{field}] in document with id '{doc_id}'. "
                        f"Preview of field's value: '{actual}' (reject_when rule)"
                    )
                    break
        if not reason:
            return None
        self._count("rejected")
        return {
            "_index": index,
            "_id": doc_id,
            "status": 400,
            "error": _item_error(
                "mapper_parsing_exception",
                reason,
                caused_by={"type": "illegal_argument_exception", "reason": reason},
            ),
        }

    def _write(
        self, op: str, index: str, doc_id: str, meta: dict[str, Any], raw: bytes | None
    ) -> dict[str, Any]:
        """Apply one operation with Elasticsearch's version rules; caller holds the lock."""
        if not self.store:
            self._count("created" if op == "index" else "deleted")
            return _ack(op, index, doc_id, meta)
        idx = self._indices.get(index)
        if idx is None:
            idx = self._indices[index] = _Index(body={"mappings": {}, "settings": {}}, docs={})
        current = idx.docs.get(doc_id)
        live = current is not None and current[1] is not None
        vtype = meta.get("version_type", "internal")
        if vtype == "internal":
            version = (current[0] if current else 0) + 1
        else:
            version = meta["version"]
            if current is not None and (
                version < current[0] if vtype == "external_gte" else version <= current[0]
            ):
                self._count("conflict")
                relation = "higher than" if vtype == "external_gte" else "higher or equal to"
                return {
                    "_index": index,
                    "_id": doc_id,
                    "status": 409,
                    "error": _item_error(
                        "version_conflict_engine_exception",
                        f"[{doc_id}]: version conflict, current version [{current[0]}] is "
                        f"{relation} the one provided [{version}]",
                        index=index,
                        shard="0",
                    ),
                }
        idx.docs[doc_id] = (version, raw if op == "index" else None)
        if op == "index":
            result, status = ("updated", 200) if live else ("created", 201)
        else:
            result, status = ("deleted", 200) if live else ("not_found", 404)
        self._count(result)
        seq_no = idx.seq_no
        idx.seq_no += 1
        return {
            "_index": index,
            "_id": doc_id,
            "_version": version,
            "result": result,
            "_shards": _SHARDS,
            "_seq_no": seq_no,
            "_primary_term": 1,
            "status": status,
        }

    def _count(self, outcome: str, n: int = 1) -> None:
        if n:
            self._items[outcome] = self._items.get(outcome, 0) + n
