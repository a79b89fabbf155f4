"""Reading documents back (what `cdc verify` compares): `_mget` and the scroll of ids behave
the same against osmem-server and against the stand-in, including for a missing index."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from rig import Osmem

from cdc.config import SinkConfig
from cdc.sink.bulk import BulkItem
from cdc.sink.elastic import ElasticSink
from cdc.testing import EsStandIn
from cdc.transform.mapping import Action


@pytest.fixture(params=["osmem", "standin"])
def target(
    request: pytest.FixtureRequest, osmem: Osmem, es_index: str
) -> Iterator[tuple[ElasticSink, str, EsStandIn | None]]:
    """A sink, an index name of the test's own, and the stand-in when it is the target."""
    if request.param == "osmem":
        sink = ElasticSink(SinkConfig.model_validate({"urls": [osmem.start().url]}))
        yield sink, es_index, None
        sink.close()
        return
    with EsStandIn() as standin:
        standin.start()
        sink = ElasticSink(SinkConfig.model_validate({"urls": [standin.url]}))
        yield sink, es_index, standin
        sink.close()


def _fill(sink: ElasticSink, index: str) -> None:
    items = [BulkItem(Action("index", index, str(i), {"n": i}), 100 + i, "t") for i in range(1, 26)]
    items.append(BulkItem(Action("delete", index, "3", None), 200, "t"))
    assert sink.write(items) == []


def test_documents_are_read_back_by_id(target: tuple[ElasticSink, str, EsStandIn | None]) -> None:
    sink, index, _ = target
    _fill(sink, index)

    found = sink.mget(index, ["1", "3", "25", "99"])

    assert found == {"1": {"n": 1}, "25": {"n": 25}}
    assert sink.mget(index, []) == {}


def test_every_id_is_listed_once_page_by_page_and_the_scroll_is_cleared(
    target: tuple[ElasticSink, str, EsStandIn | None],
) -> None:
    sink, index, standin = target
    _fill(sink, index)

    pages = list(sink.scan_ids(index, 10))
    abandoned = sink.scan_ids(index, 10)
    first = next(abandoned)
    abandoned.close()

    assert [len(page) for page in pages] == [10, 10, 4]
    assert sorted(i for page in pages for i in page) == sorted(
        str(i) for i in range(1, 26) if i != 3
    )
    assert len(first) == 10
    if standin is not None:
        assert standin.open_scrolls == 0


def test_a_missing_index_holds_no_documents(
    target: tuple[ElasticSink, str, EsStandIn | None],
) -> None:
    sink, index, _ = target

    assert sink.mget(index, ["1", "2"]) == {}
    assert list(sink.scan_ids(index, 10)) == []
