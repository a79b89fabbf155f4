"""The `_bulk` protocol: encoding document operations and reading per-item results.

Every operation carries an external version (see `cdc.model.versions`). The per-item results
of `_bulk` are the truth: an item is acknowledged when it succeeded, when it was stale (409: the
document already holds a newer version), or when a delete found nothing. Items that failed with
429/5xx are to be retried, alone; items rejected for their content go to the dead-letter queue
(or stop the connector, with `sink.on_rejected: fail`).
Pure: `cdc.sink.elastic` sends the requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from cdc.errors import DocumentRejected
from cdc.transform.mapping import Action

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""Statuses that say "try again later", of a whole request or of one item."""


@dataclass(slots=True, init=False)
class BulkItem:
    """One encoded document operation plus what the dead-letter path needs to know about it.

    `body` is the operation's NDJSON lines (`encode`), encoded here unless given."""

    action: Action
    version: int
    table: str
    gtid: str | None
    id_columns: tuple[str, ...]
    body: bytes

    def __init__(
        self,
        action: Action,
        version: int,
        table: str,
        gtid: str | None = None,
        id_columns: tuple[str, ...] = (),
        body: bytes = b"",
    ) -> None:
        self.action = action
        self.version = version
        self.table = table
        self.gtid = gtid
        self.id_columns = id_columns
        self.body = body or encode(action, version)


_META_PREFIXES: dict[tuple[str, str], bytes] = {}


def encode(action: Action, version: int) -> bytes:
    """The two NDJSON lines (one for a delete) of a `_bulk` operation with an external version:
    `{"<op>":{"_index":...,"_id":...,"version":N,"version_type":"external"}}` and the document
    (with `routing` and `pipeline` in the first line when the action has them).

    Assembled from bytes around a cached per-(op, index) prefix, in one formatting: this runs
    for every change.
    """
    op = action.op
    prefix = _META_PREFIXES.get((op, action.index))
    if prefix is None:
        if len(_META_PREFIXES) > 10_000:
            _META_PREFIXES.clear()
        prefix = b'{"%s":{"_index":%s,"_id":' % (op.encode(), orjson.dumps(action.index))
        _META_PREFIXES[(op, action.index)] = prefix
    extra = b""
    if action.routing is not None:
        extra = b',"routing":' + orjson.dumps(action.routing)
    if action.pipeline is not None:
        extra += b',"pipeline":' + orjson.dumps(action.pipeline)
    if op == "delete":
        return b'%s%s%s,"version":%d,"version_type":"external"}}\n' % (
            prefix,
            orjson.dumps(action.doc_id),
            extra,
            version,
        )
    body = action.body
    return b'%s%s%s,"version":%d,"version_type":"external"}}\n%s\n' % (
        prefix,
        orjson.dumps(action.doc_id),
        extra,
        version,
        body if body is not None else orjson.dumps(action.source),
    )


Outcome = Literal["ok", "stale", "retry", "rejected"]


@dataclass(frozen=True, slots=True)
class ItemResult:
    """The outcome of one bulk item: `ok`, `stale` (409), `retry` (429/5xx) or `rejected`."""

    outcome: Outcome
    status: int
    error: str | None = None


OK = ItemResult("ok", 200)
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
    reason = describe_error(error) if error else f"HTTP {status}"
    if status == 409:
        return ItemResult("stale", status, reason)
    if status in RETRY_STATUSES:
        return ItemResult("retry", status, reason)
    return ItemResult("rejected", status, reason)


def describe_error(error: Any) -> str:
    if isinstance(error, dict):
        kind = error.get("type", "error")
        reason = error.get("reason", "")
        cause = error.get("caused_by")
        text = f"{kind}: {reason}"
        if isinstance(cause, dict) and cause.get("reason"):
            text += f" (caused by {cause.get('type')}: {cause.get('reason')})"
        return text
    return str(error)


def rejection_error(item: BulkItem, result: ItemResult) -> DocumentRejected:
    """The fatal error for a rejected document when `sink.on_rejected` is `fail`."""
    return DocumentRejected(
        f"Elasticsearch rejected {item.action.op} of document {item.action.doc_id!r} in index "
        f"{item.action.index!r} (from {item.table}): HTTP {result.status}: {result.error}",
        hint="fix the index mapping or the table mapping, then restart; the connector resumes "
        "from the last checkpoint and re-sends this document",
    )
