"""The one retry policy: capped exponential backoff with jitter that resets, stops when asked,
retries only transient errors, and logs an outage once when it starts and once when it ends."""

from __future__ import annotations

import logging
import threading

import pytest

from cdc.errors import CdcError, Interrupted, SinkUnavailable
from cdc.metrics import Metrics
from cdc.retry import Backoff, Outage, retry


def test_backoff_doubles_to_its_cap_with_jitter_and_resets(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr("cdc.retry.time.sleep", slept.append)
    backoff = Backoff(first=0.1, cap=0.5)

    for _ in range(5):
        backoff.wait()
    backoff.reset()
    backoff.wait()

    delays = [0.1, 0.2, 0.4, 0.5, 0.5, 0.1]
    assert all(d / 2 <= s <= d for s, d in zip(slept, delays, strict=True)), slept


def test_backoff_raises_interrupted_as_soon_as_stop_is_set() -> None:
    stop = threading.Event()
    threading.Timer(0.05, stop.set).start()

    with pytest.raises(Interrupted):
        Backoff(first=30, cap=30).wait(stop)


def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    outage = Outage("Elasticsearch", "sink", metrics)

    with caplog.at_level(logging.WARNING, logger="cdc.retry"):
        for attempt in range(5):
            outage.failed(SinkUnavailable(f"refused ({attempt})"))
        assert metrics.degraded.labels("sink")._value.get() == 1
        outage.recovered()
        outage.recovered()

    assert [r.getMessage().split(" after ")[0] for r in caplog.records] == [
        "Elasticsearch unavailable: refused (0); retrying with backoff",
        "Elasticsearch recovered",
    ]
    assert " and 5 retries" in caplog.records[1].getMessage()
    assert metrics.degraded.labels("sink")._value.get() == 0
    assert metrics.reconnects.labels("sink")._value.get() == 5
    assert not outage.down


def test_retry_calls_again_after_transient_errors_only() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise SinkUnavailable("not yet")
        return "done"

    outage = Outage("Elasticsearch")
    assert retry(flaky, outage, None, Backoff(first=0.001, cap=0.001)) == "done"
    assert len(calls) == 3 and not outage.down

    def broken() -> None:
        raise CdcError("wrong credentials")

    with pytest.raises(CdcError, match="wrong credentials"):
        retry(broken, outage, None)


def test_retry_gives_up_with_interrupted_when_stopped() -> None:
    stop = threading.Event()
    stop.set()

    def down() -> None:
        raise SinkUnavailable("refused")

    with pytest.raises(Interrupted):
        retry(down, Outage("Elasticsearch"), stop)
