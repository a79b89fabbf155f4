"""The document store behind `EsStandIn` (`cdc.testing.standin`): indices, documents and the
`_bulk` semantics, without HTTP, threads or lifecycle.

`parse_bulk` reads a `_bulk` body; `DocumentStore.apply` turns its operations into per-item
results; the rest builds Elasticsearch-shaped response bodies and errors. `_bulk` accepts
`index` and `delete` actions with `_index`, `_id`, `version` and `version_type` (`external`,
`external_gte` or internal); `create` and `update` are refused with a 400 for the whole request
(the connector never sends them). Bulk writes create missing indices, as Elasticsearch does by
default.

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

The functions hold no state; `DocumentStore` is not thread-safe, and `EsStandIn` calls it and reads
its attributes only under its own lock.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

SHARDS = {"total": 1, "successful": 1, "failed": 0}

# The error type Elasticsearch uses for each whole-request failure status a test may inject.
ERROR_TYPES = {
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
class Reply:
    status: int
    body: bytes


class BadRequest(Exception):
    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass(slots=True)
class Index:
    body: dict[str, Any]
    # doc id -> (version, source line); a None source is a delete tombstone.
    docs: dict[str, tuple[int, bytes | None]]
    seq_no: int = 0


def error_body(status: int, kind: str, reason: str, **extra: Any) -> bytes:
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
        "_shards": SHARDS,
        "_seq_no": 0,
        "_primary_term": 1,
        "status": 201 if created else 200,
    }


ParsedOp = tuple[str, str, str, dict[str, Any], memoryview | None]


def parse_bulk(body: bytes, default_index: str | None) -> list[ParsedOp]:
    """(op, index, id, action metadata, document line) per operation; BadRequest when the
    request is malformed, in which case Elasticsearch applies none of it."""
    if body and not body.endswith(b"\n"):
        raise BadRequest(
            "illegal_argument_exception", "The bulk request must be terminated by a newline [\\n]"
        )
    view = memoryview(body)
    ops: list[ParsedOp] = []
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
            raise BadRequest(
                "x_content_parse_exception", f"Malformed action/metadata line [{line_no}]: {exc}"
            ) from exc
        if not isinstance(action, dict) or len(action) != 1:
            raise BadRequest(
                "illegal_argument_exception",
                f"Malformed action/metadata line [{line_no}], expected a single action",
            )
        ((op, meta),) = action.items()
        if op not in ("index", "delete") or not isinstance(meta, dict):
            raise BadRequest(
                "illegal_argument_exception",
                f"Malformed action/metadata line [{line_no}], the stand-in supports only "
                f"[index, delete] but found [{op}]",
            )
        index = meta.get("_index", default_index)
        if not isinstance(index, str) or not index:
            raise BadRequest("action_request_validation_exception", "index is missing")
        doc_id = meta.get("_id")
        doc: memoryview | None = None
        if op == "index":
            if pos >= end_of_body:
                raise BadRequest(
                    "illegal_argument_exception", f"no document line after line [{line_no}]"
                )
            end = body.index(b"\n", pos)
            doc = view[pos:end]
            pos = end + 1
            line_no += 1
            if doc_id is None:
                doc_id = uuid.uuid4().hex[:20]
        if not isinstance(doc_id, str) or not doc_id:
            raise BadRequest("action_request_validation_exception", "id is missing")
        ops.append((op, index, doc_id, meta, doc))
    return ops


def bulk_reply(
    items: list[dict[str, Any]], started: float, paths: list[tuple[str, ...]] | None = None
) -> Reply:
    """The 200 answer to a `_bulk` request whose handling began at `time.monotonic()`
    `started`, cut to `paths` (`filter_path`) when given."""
    errors = any("error" in next(iter(item.values())) for item in items)
    took = int((time.monotonic() - started) * 1000)
    if paths is None:
        return Reply(200, orjson.dumps({"errors": errors, "took": took, "items": items}))
    fields = _item_fields(paths)
    if fields is None:
        body = filtered({"errors": errors, "took": took, "items": items}, paths)
    else:
        # The usual filter keeps some fields of every item: cut each item directly.
        body = filtered({"errors": errors, "took": took}, [p for p in paths if p[0] != "items"])
        kept = [
            {op: {k: v for k, v in result.items() if k in fields}}
            for item in items
            for op, result in item.items()
        ]
        if kept:
            body["items"] = kept
    return Reply(200, orjson.dumps(body))


def filter_paths(spec: str | None) -> list[tuple[str, ...]] | None:
    """The paths of a `filter_path` query parameter (comma-separated; each dot-separated
    names, `*` for any one name); None when there is none."""
    if not spec:
        return None
    return [tuple(path.split(".")) for path in spec.split(",") if path]


def filtered(value: Any, paths: list[tuple[str, ...]]) -> dict[str, Any]:
    """A response body cut to what `paths` name, as Elasticsearch's `filter_path` does: a path
    that ends at a field keeps all of it, lists are walked through, and fields that keep
    nothing are left out (`{}` when nothing is left)."""
    kept = _kept(value, paths)
    return kept if isinstance(kept, dict) else {}


_NOTHING = object()


def _kept(value: Any, paths: list[tuple[str, ...]]) -> Any:
    if any(not path for path in paths):
        return value
    if isinstance(value, list):
        items = [k for k in (_kept(v, paths) for v in value) if k is not _NOTHING]
        return items if items else _NOTHING
    if isinstance(value, dict):
        out = {}
        for key, field in value.items():
            rest = [path[1:] for path in paths if path[0] in ("*", key)]
            if rest:
                k = _kept(field, rest)
                if k is not _NOTHING:
                    out[key] = k
        return out if out else _NOTHING
    return _NOTHING


def _item_fields(paths: list[tuple[str, ...]]) -> frozenset[str] | None:
    """The field names X when every path into `items` is `items.*.X`; None otherwise."""
    into = [path for path in paths if path[0] in ("items", "*")]
    if not into or any(len(p) != 3 or p[:2] != ("items", "*") or p[2] == "*" for p in into):
        return None
    return frozenset(p[2] for p in into)


def missing_index(name: str) -> Reply:
    return Reply(
        404,
        error_body(
            404,
            "index_not_found_exception",
            f"no such index [{name}]",
            index=name,
            **{"resource.type": "index_or_alias", "resource.id": name},
        ),
    )


def doc_reply(name: str, doc_id: str, entry: tuple[int, bytes | None] | None) -> Reply:
    """The answer to GET /{name}/_doc/{doc_id}, given the document's store entry."""
    source = entry[1] if entry else None
    if entry is None or source is None:
        return Reply(404, orjson.dumps({"_index": name, "_id": doc_id, "found": False}))
    return Reply(
        200,
        b'{"_index":%b,"_id":%b,"_version":%d,"found":true,"_source":%b}'
        % (orjson.dumps(name), orjson.dumps(doc_id), entry[0], source),
    )


class DocumentStore:
    """The indices and documents of one stand-in, and its per-item outcome counts.

    Not thread-safe: the caller serialises every call and every access to the attributes.
    """

    def __init__(self, store: bool) -> None:
        self.store = store
        """Keep documents (`store=True`) or acknowledge every item without storing it."""
        self.indices: dict[str, Index] = {}
        self.item_rule: Callable[[BulkOp], bool] | None = None
        """Items it returns True for fail with `item_status` (`EsStandIn.fail_items`)."""
        self.item_status = 429
        self.rejects: list[tuple[str, Any]] = []
        """(dotted field path, value) rules of `EsStandIn.reject_when`."""
        self.counts: dict[str, int] = {}
        """Bulk items by outcome (`EsStandIn.items`)."""
        self.pipelines: dict[str, list[dict[str, Any]]] = {}
        """Ingest pipelines by id: their processors (`set`, `lowercase`, `remove`)."""
        self.scrolls: dict[str, tuple[str, list[str], int, int]] = {}
        """Open scrolls: id -> (index, the live document ids when it started, page size, where
        the current page starts)."""

    # -- index APIs -------------------------------------------------------------------------

    def with_index(self, name: str, answer: Callable[[Index], Any]) -> Reply:
        idx = self.indices.get(name)
        if idx is None:
            return missing_index(name)
        return Reply(200, orjson.dumps(answer(idx)))

    def refresh(self, name: str) -> Reply:
        return self.with_index(name, lambda _: {"_shards": SHARDS})

    def count(self, name: str) -> Reply:
        return self.with_index(
            name,
            lambda idx: {
                "count": sum(1 for _, s in idx.docs.values() if s is not None),
                "_shards": SHARDS,
            },
        )

    def mget(self, name: str, body: bytes) -> Reply:
        """`POST /{name}/_mget` with `{"ids": [...]}`: each document, or `found: false`."""
        idx = self.indices.get(name)
        if idx is None:
            return missing_index(name)
        try:
            ids = orjson.loads(body or b"{}").get("ids")
        except (orjson.JSONDecodeError, AttributeError):
            ids = None
        if not isinstance(ids, list):
            return Reply(400, error_body(400, "action_request_validation_exception", "no ids"))
        docs = []
        for doc_id in ids:
            entry = idx.docs.get(str(doc_id))
            if entry is None or entry[1] is None:
                docs.append(orjson.dumps({"_index": name, "_id": str(doc_id), "found": False}))
            else:
                docs.append(
                    b'{"_index":%b,"_id":%b,"_version":%d,"found":true,"_source":%b}'
                    % (orjson.dumps(name), orjson.dumps(str(doc_id)), entry[0], entry[1])
                )
        return Reply(200, b'{"docs":[' + b",".join(docs) + b"]}")

    def scroll_start(self, name: str, body: bytes) -> Reply:
        """`POST /{name}/_search?scroll=...`: the first page of the live document ids (only
        `size` is honoured; hits carry `_id` and no source)."""
        idx = self.indices.get(name)
        if idx is None:
            return missing_index(name)
        try:
            size = int(orjson.loads(body or b"{}").get("size", 10))
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            return Reply(400, error_body(400, "parse_exception", "bad search body"))
        live = sorted(doc_id for doc_id, (_, s) in idx.docs.items() if s is not None)
        scroll_id = uuid.uuid4().hex
        self.scrolls[scroll_id] = (name, live, size, 0)
        return self._page(scroll_id, 0)

    def scroll_next(self, body: bytes) -> Reply:
        """`POST /_search/scroll` with `{"scroll_id": ...}`: the next page."""
        try:
            scroll_id = str(orjson.loads(body or b"{}").get("scroll_id"))
        except (orjson.JSONDecodeError, AttributeError):
            scroll_id = ""
        if scroll_id not in self.scrolls:
            return Reply(
                404, error_body(404, "search_context_missing_exception", "no search context")
            )
        return self._page(scroll_id, 1)

    def scroll_clear(self, body: bytes) -> Reply:
        """`DELETE /_search/scroll` with `{"scroll_id": [...]}`."""
        try:
            ids = orjson.loads(body or b"{}").get("scroll_id") or []
        except (orjson.JSONDecodeError, AttributeError):
            ids = []
        freed = sum(self.scrolls.pop(str(i), None) is not None for i in ids)
        return Reply(200, orjson.dumps({"succeeded": True, "num_freed": freed}))

    def _page(self, scroll_id: str, advance: int) -> Reply:
        name, live, size, offset = self.scrolls[scroll_id]
        if advance:
            offset += size
            self.scrolls[scroll_id] = (name, live, size, offset)
        page = live[offset : offset + size]
        hits = [{"_index": name, "_id": doc_id, "_score": None} for doc_id in page]
        return Reply(
            200,
            orjson.dumps(
                {
                    "_scroll_id": scroll_id,
                    "took": 0,
                    "timed_out": False,
                    "hits": {"total": {"value": len(live), "relation": "eq"}, "hits": hits},
                }
            ),
        )

    def index_api(self, method: str, name: str, body: bytes) -> Reply:
        idx = self.indices.get(name)
        if method == "HEAD":
            return Reply(200 if idx else 404, b"")
        if method == "GET":
            if idx is None:
                return missing_index(name)
            return Reply(200, orjson.dumps({name: {"aliases": {}, **idx.body}}))
        if method == "DELETE":
            if self.indices.pop(name, None) is None:
                return missing_index(name)
            return Reply(200, b'{"acknowledged":true}')
        if method != "PUT":
            return Reply(405, error_body(405, "illegal_argument_exception", "bad method"))
        if idx is not None:
            return Reply(
                400,
                error_body(
                    400,
                    "resource_already_exists_exception",
                    f"index [{name}/stand-in] already exists",
                    index=name,
                ),
            )
        if name != name.lower() or name[0] in "-_+":
            return Reply(
                400,
                error_body(400, "invalid_index_name_exception", f"Invalid index name [{name}]"),
            )
        try:
            spec = orjson.loads(body) if body.strip() else {}
        except orjson.JSONDecodeError as exc:
            return Reply(400, error_body(400, "parse_exception", str(exc)))
        if not isinstance(spec, dict):
            return Reply(400, error_body(400, "parse_exception", "body is not an object"))
        self.indices[name] = Index(
            body={
                "mappings": spec.get("mappings", {}),
                "settings": spec.get("settings", {}),
            },
            docs={},
        )
        return Reply(
            200,
            orjson.dumps({"acknowledged": True, "shards_acknowledged": True, "index": name}),
        )

    # -- bulk -------------------------------------------------------------------------------

    def put_pipeline(self, name: str, body: bytes) -> Reply:
        """Store an ingest pipeline of `set`, `lowercase` and `remove` processors."""
        try:
            processors = orjson.loads(body).get("processors")
        except (orjson.JSONDecodeError, AttributeError):
            processors = None
        known = ("set", "lowercase", "remove")
        if not isinstance(processors, list) or not all(
            isinstance(p, dict) and len(p) == 1 and next(iter(p)) in known for p in processors
        ):
            return Reply(
                400,
                error_body(400, "parse_exception", f"the stand-in runs only {known} processors"),
            )
        self.pipelines[name] = processors
        return Reply(200, orjson.dumps({"acknowledged": True}))

    def _run_pipeline(self, name: str, raw: bytes) -> bytes | str:
        """The document after the pipeline, or why it failed."""
        processors = self.pipelines.get(name)
        if processors is None:
            return f"pipeline with id [{name}] does not exist"
        doc = orjson.loads(raw)
        for processor in processors:
            ((kind, spec),) = processor.items()
            field = spec["field"]
            if kind == "set":
                doc[field] = spec["value"]
            elif kind == "remove":
                doc.pop(field, None)
            elif isinstance(doc.get(field), str):
                doc[field] = doc[field].lower()
        return orjson.dumps(doc)

    def apply(self, ops: list[ParsedOp]) -> list[dict[str, Any]]:
        """Per-item results of a parsed bulk request; caller holds the lock."""
        pipelined = any("pipeline" in meta for _, _, _, meta, _ in ops)
        if not self.store and self.item_rule is None and not self.rejects and not pipelined:
            return self._ack_all(ops)
        if self.store:
            self._check_versions(ops)
        items: list[dict[str, Any]] = []
        rule = self.item_rule
        for op, index, doc_id, meta, doc in ops:
            raw = None if doc is None else bytes(doc)
            if rule is not None and rule(BulkOp(op, index, doc_id, meta.get("version"), raw)):
                items.append({op: self._failed(index, doc_id)})
                continue
            rejected = None
            if raw is not None and "pipeline" in meta:
                ran = self._run_pipeline(str(meta["pipeline"]), raw)
                if isinstance(ran, str):
                    self._count("rejected")
                    error = _item_error("illegal_argument_exception", ran)
                    items.append(
                        {op: {"_index": index, "_id": doc_id, "status": 400, "error": error}}
                    )
                    continue
                raw = ran
            if raw is not None and (self.store or self.rejects):
                rejected = self._check_document(index, doc_id, raw)
            items.append({op: rejected or self._write(op, index, doc_id, meta, raw)})
        return items

    def _ack_all(self, ops: list[ParsedOp]) -> list[dict[str, Any]]:
        items = [{op: _ack(op, index, doc_id, meta)} for op, index, doc_id, meta, _ in ops]
        created = sum(1 for op, *_ in ops if op == "index")
        self._count("created", created)
        self._count("deleted", len(ops) - created)
        return items

    @staticmethod
    def _check_versions(ops: list[ParsedOp]) -> None:
        for op, _, _, meta, _ in ops:
            vtype = meta.get("version_type", "internal")
            version = meta.get("version")
            if vtype in ("external", "external_gte"):
                if not isinstance(version, int) or version < 0:
                    raise BadRequest(
                        "action_request_validation_exception",
                        "Validation Failed: 1: illegal version value "
                        f"[{version}] for version type [{vtype.upper()}];",
                    )
            elif vtype != "internal":
                raise BadRequest("illegal_argument_exception", f"No version type match [{vtype}]")
            elif version is not None:
                raise BadRequest(
                    "action_request_validation_exception",
                    "Validation Failed: 1: internal versioning can not be used for optimistic "
                    f"concurrency control (in {op}). Please use `if_seq_no` and "
                    "`if_primary_term` instead;",
                )

    def _failed(self, index: str, doc_id: str) -> dict[str, Any]:
        self._count("failed")
        status = self.item_status
        return {
            "_index": index,
            "_id": doc_id,
            "status": status,
            "error": _item_error(
                ERROR_TYPES.get(status, "stand_in_injected_failure"),
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
            for field, value in self.rejects:
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
        idx = self.indices.get(index)
        if idx is None:
            idx = self.indices[index] = Index(body={"mappings": {}, "settings": {}}, docs={})
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
            "_shards": SHARDS,
            "_seq_no": seq_no,
            "_primary_term": 1,
            "status": status,
        }

    def _count(self, outcome: str, n: int = 1) -> None:
        if n:
            self.counts[outcome] = self.counts.get(outcome, 0) + n
