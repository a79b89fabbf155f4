"""Only the transport's own errors mean "Elasticsearch is unavailable"; anything else a request
raises is a bug and surfaces as it is instead of being retried forever."""

from __future__ import annotations

from typing import Any

import pytest
from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout

from cdc.config import SinkConfig
from cdc.errors import SinkUnavailable
from cdc.sink.elastic import ElasticSink


def _sink(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> ElasticSink:
    sink = ElasticSink(SinkConfig(urls=["http://127.0.0.1:9"]))

    def perform_request(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(sink._transport, "perform_request", perform_request)
    return sink


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (TransportConnectionError("refused"), "Elasticsearch unreachable: refused"),
        (ConnectionTimeout("timed out"), "Elasticsearch request failed: timed out"),
    ],
)
def test_transport_errors_are_transient(
    monkeypatch: pytest.MonkeyPatch, error: BaseException, message: str
) -> None:
    with pytest.raises(SinkUnavailable, match=message) as raised:
        _sink(monkeypatch, error).info()
    assert raised.value.transient


def test_anything_else_is_raised_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ZeroDivisionError):
        _sink(monkeypatch, ZeroDivisionError("a bug")).info()
