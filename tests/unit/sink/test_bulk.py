from __future__ import annotations

import orjson
import pytest

from cdc.sink.bulk import classify, encode
from cdc.transform.mapping import Action


@pytest.mark.parametrize(
    ("item", "outcome"),
    [
        ({"index": {"status": 201, "result": "created"}}, "ok"),
        ({"index": {"status": 200, "result": "updated"}}, "ok"),
        ({"delete": {"status": 200, "result": "deleted"}}, "ok"),
        ({"delete": {"status": 404, "result": "not_found"}}, "ok"),
        (
            {"index": {"status": 409, "error": {"type": "version_conflict_engine_exception"}}},
            "stale",
        ),
        (
            {"index": {"status": 429, "error": {"type": "es_rejected_execution_exception"}}},
            "retry",
        ),
        ({"index": {"status": 503, "error": {"type": "unavailable_shards_exception"}}}, "retry"),
        ({"index": {"status": 400, "error": {"type": "mapper_parsing_exception"}}}, "rejected"),
        ({"index": {"status": 404, "error": {"type": "index_not_found_exception"}}}, "rejected"),
    ],
)
def test_bulk_item_outcomes(item: dict[str, dict[str, object]], outcome: str) -> None:
    assert classify(item).outcome == outcome


def test_rejection_reason_includes_the_cause() -> None:
    result = classify(
        {
            "index": {
                "status": 400,
                "error": {
                    "type": "document_parsing_exception",
                    "reason": "failed to parse field [price]",
                    "caused_by": {"type": "number_format_exception", "reason": 'For input "x"'},
                },
            }
        }
    )
    assert result.error == (
        "document_parsing_exception: failed to parse field [price] "
        '(caused by number_format_exception: For input "x")'
    )


def test_encoded_operations_carry_external_versions() -> None:
    index = encode(Action("index", "orders", "7", {"a": 1}), 42)
    meta, doc, end = index.split(b"\n")
    assert orjson.loads(meta) == {
        "index": {"_index": "orders", "_id": "7", "version": 42, "version_type": "external"}
    }
    assert orjson.loads(doc) == {"a": 1}
    assert end == b""
    delete = encode(Action("delete", "orders", "7", None), 43)
    assert delete.count(b"\n") == 1
    assert orjson.loads(delete)["delete"]["version"] == 43
