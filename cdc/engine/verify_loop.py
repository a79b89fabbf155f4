"""Continuous verification: the running connector verifies every index in the background.

With `verify.interval` set, a thread runs a full `Verifier` pass every interval (counted from
the start of one pass to the start of the next; the first one an interval after the start),
over a connection of its own and at `verify.max_rows_per_second`, and publishes the result:
the `cdc_verify_*` metrics and the `verify` line of `cdc status`. A pass waits while a
snapshot is being copied (its documents are not all there yet), and its result is discarded
if one started meanwhile. A pass that fails is logged and reported in the status; one that
failed for a link that is down is tried again 30 s later, any other runs as planned:
verification never stops the stream.
"""

from __future__ import annotations

import logging
import threading
import time

from cdc.config import ConnectorConfig
from cdc.engine.ports import Sink, Source
from cdc.engine.verify import KINDS, Report, Verifier, snapshotting
from cdc.errors import CdcError, Interrupted
from cdc.metrics import Metrics
from cdc.model.status import VerifySummary
from cdc.state.stores import Stores

log = logging.getLogger(__name__)

RETRY_SECONDS = 30.0
"""How soon a pass is tried again after waiting for a snapshot or failing to start."""


class VerifyLoop:
    """Runs verification passes on a daemon thread until closed."""

    def __init__(
        self,
        cfg: ConnectorConfig,
        source: Source,
        sink: Sink,
        stores: Stores,
        metrics: Metrics,
    ) -> None:
        self._cfg = cfg
        self._source = source
        self._sink = sink
        self._stores = stores
        self._metrics = metrics
        self._stop = threading.Event()
        self.last: VerifySummary | None = None
        """The last pass's result (read by the status)."""
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._cfg.verify.interval <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="verify", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread (a pass under way is interrupted) and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        interval = self._cfg.verify.interval
        delay = interval
        while not self._stop.wait(delay):
            began = time.monotonic()
            delay = min(RETRY_SECONDS, interval)
            if not self._ready():
                continue
            try:
                summary = self._pass()
            except Interrupted:
                return
            except CdcError as exc:
                self.last = VerifySummary(finished_at=time.time(), error=str(exc))
                if exc.transient:
                    log.warning("verification pass failed: %s; trying again soon", exc)
                    continue
                log.warning("verification pass failed: %s; the next one runs as planned", exc)
            except Exception as exc:
                log.exception("verification pass failed; the next one runs as planned")
                self.last = VerifySummary(finished_at=time.time(), error=repr(exc))
            else:
                if not self._ready():
                    # A snapshot started meanwhile: its documents were still being copied.
                    log.info("verification pass discarded: a snapshot started during it")
                    continue
                self.last = summary
                self._publish(summary)
            delay = max(0.0, interval - (time.monotonic() - began))

    def _ready(self) -> bool:
        """False (and logged) while a snapshot is copied or the snapshot store is down."""
        try:
            busy = snapshotting(self._stores.snapshots, None)
        except CdcError as exc:
            log.info("verification waits: %s", exc)
            return False
        if busy:
            log.info("verification waits for the snapshot of %s", ", ".join(busy))
            return False
        return True

    def _pass(self) -> VerifySummary:
        began = time.monotonic()
        settings = self._cfg.verify
        rows = self._source.rows()
        try:
            verifier = Verifier(
                self._cfg,
                rows,
                self._sink,
                self._stores.checkpoints,
                stop=self._stop,
                max_rows_per_second=settings.max_rows_per_second,
                settle_timeout=settings.settle_timeout,
            )
            report = verifier.run()
            repaired = 0
            if settings.repair and not report.equal:
                after = verifier.repair(report, self._sink)
                repaired = sum(len(r.repaired or []) for r in after.indices.values())
                self._metrics.verify_repaired.inc(repaired)
                report = after
        finally:
            rows.close()
        return _summarize(report, time.monotonic() - began, repaired)

    def _publish(self, summary: VerifySummary) -> None:
        m = self._metrics
        m.verify_rows.inc(summary.checked)
        for index, kinds in summary.differences.items():
            for kind, count in kinds.items():
                m.verify_mismatches.labels(index, kind).set(count)
        m.verify_last_pass.set(summary.finished_at)
        if summary.equal:
            log.info("verification: %s rows checked, every index equals MySQL", summary.checked)
        else:
            found = "; ".join(
                [
                    f"{index}: " + ", ".join(f"{n} {kind}" for kind, n in kinds.items() if n)
                    for index, kinds in sorted(summary.differences.items())
                    if any(kinds.values())
                ]
                + [f"not verified (no usable key): {t}" for t in summary.unverified]
            )
            log.warning(
                "verification: %s rows checked; %s%s (cdc verify lists the documents)",
                summary.checked,
                found,
                f"; {summary.repaired} repaired" if summary.repaired else "",
            )


def _summarize(report: Report, seconds: float, repaired: int) -> VerifySummary:
    return VerifySummary(
        finished_at=time.time(),
        seconds=round(seconds, 3),
        checked=sum(r.checked for r in report.indices.values()),
        differences={
            index: {kind: len(getattr(r, kind)) for kind in KINDS}
            for index, r in report.indices.items()
        },
        repaired=repaired,
        unverified=sorted(u["table"] for r in report.indices.values() for u in r.unverified),
    )
