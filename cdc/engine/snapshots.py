"""Snapshot chunks merged into the stream, and rebuilds written twice.

A chunk read at binlog position P gets the version `(N, COPY_SLOT)`, where N is the counter
of the last transaction at or before P: higher than every change the chunk already reflects,
lower than every transaction after it, so Elasticsearch keeps whichever of chunk and stream is
newer. This module remembers the counters of recent commits to find N, holds a chunk until the
stream has read past its position, and turns it into bulk items then. Chunks are served only
between transactions, so that dropping a half-read transaction never drops chunk rows. See
"Lock-free snapshots merged with the stream" in docs/design.md.

During `cdc snapshot --rebuild` the rows go to a new index behind the alias, and every stream
change is written to both indices until the alias is swapped.
"""

from __future__ import annotations

import bisect
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import replace

from cdc.config import ConnectorConfig
from cdc.engine.ports import Sink, Source
from cdc.engine.snapshotter import Chunk, Snapshotter, request, resolve_tables
from cdc.metrics import Metrics
from cdc.model.progress import Progress
from cdc.model.versions import COPY_SLOT, MAX_COUNTER, version
from cdc.sink.bulk import BulkItem
from cdc.state.stores import SnapshotStore
from cdc.transform.mapping import Mappers
from cdc.transform.trees import Tree

log = logging.getLogger(__name__)


def _nothing() -> None:
    return None


COMMIT_HISTORY = 200_000
"""Commits remembered to version chunks read at an earlier binlog position."""


class Snapshots:
    """The main loop's side of snapshots: history, held chunks, rebuild targets."""

    def __init__(
        self,
        cfg: ConnectorConfig,
        source: Source,
        store: SnapshotStore,
        sink: Sink,
        mappers: Mappers,
        metrics: Metrics,
        trees: dict[str, Tree] | None = None,
    ) -> None:
        self._cfg = cfg
        self._trees = trees if trees is not None else {}
        """Compiled mappings with children by root table (filled at startup)."""
        self._source = source
        self._store = store
        self._sink = sink
        self._mappers = mappers
        self._metrics = metrics
        self._point: tuple[str, int] | None = None
        """How far the stream has read, as (file, offset): the last commit or heartbeat."""
        self._history: deque[tuple[str, int, int]] = deque(maxlen=COMMIT_HISTORY)
        """(file, offset, counter) of recent commits."""
        self._counter = 0
        """The counter of the last commit read."""
        self._inbox: queue.Queue[Chunk] = queue.Queue()
        """Chunks read, not seen by the main loop yet (the snapshotter bounds how many)."""
        self._held: list[Chunk] = []
        """Chunks waiting for the stream to read past their position."""
        self._sent: list[Chunk] = []
        """Chunks whose items are in the batch."""
        self._inflight: list[Chunk] = []
        """Chunks whose items were sent, not acknowledged yet."""
        self.rebuilds: dict[str, str] = {}
        """alias -> the new index, while a rebuild fills it: changes go to both."""
        self.progress: Progress | None = None
        """The snapshot worked on last, for the status."""
        self._stop = threading.Event()
        self._snapshotter: Snapshotter | None = None
        self.on_chunk: Callable[[], None] = _nothing
        """Called on the snapshotter's thread after each chunk read (wakes the main loop)."""

    # -- startup ----------------------------------------------------------------------------

    def start(self, fresh: bool) -> None:
        """Request the snapshots the config asks for (`fresh`: no checkpoint existed), resume
        the rebuilds under way, and start serving snapshot requests."""
        modes = [m.snapshot or self._cfg.snapshot.mode for m in self._cfg.tables]
        if (fresh and "initial" in modes) or "when_needed" in modes:
            reader = self._source.rows()
            try:
                tables = resolve_tables(self._cfg, reader)
            finally:
                reader.close()
            known = self._store.load_all()
            wanted = []
            for table in tables:
                mapping = self._cfg.mapping_for(*table.split(".", 1))
                assert mapping is not None
                mode = mapping.snapshot or self._cfg.snapshot.mode
                if (mode == "initial" and fresh) or (mode == "when_needed" and table not in known):
                    wanted.append(table)
            if wanted:
                log.info("snapshot requested for %s", ", ".join(wanted))
                request(self._store, wanted)
        # Rebuilds get stream changes from before streaming starts: the stream may replay
        # changes their earlier chunks do not hold.
        for progress in self._store.load_all().values():
            if progress.target_index and progress.active:
                mapping = self._cfg.mapping_for(*progress.table.split(".", 1))
                if mapping is not None:
                    self.rebuilds[mapping.index] = progress.target_index
        if self._snapshotter is None:
            self._snapshotter = Snapshotter(
                self._cfg,
                self._source.rows,
                self._store,
                self._submit,
                self._stop,
                self._on_progress,
                self.rebuilds.__setitem__,
                self._rebuilt,
                self._trees,
            )
            self._snapshotter.start()

    def _submit(self, chunk: Chunk) -> None:
        """Called by the snapshotter thread."""
        self._inbox.put(chunk)
        self.on_chunk()

    def _on_progress(self, progress: Progress) -> None:
        """Called by the snapshotter thread."""
        self.progress = progress
        self._metrics.snapshot_rows.labels(progress.table).set(progress.rows_done)

    def _rebuilt(self, alias: str, target: str) -> None:
        """Called by the snapshotter thread when every table feeding `target` is copied: point
        the alias at the new index atomically and stop writing changes twice."""
        old = self._sink.alias_target(alias)
        if old is not None and old != target:
            self._sink.swap_alias(alias, old, target)
            log.warning(
                "rebuild done: alias %s now points at %s; the old index %s is left for "
                "you to delete",
                alias,
                target,
                old,
            )
        self.rebuilds.pop(alias, None)

    # -- the stream -------------------------------------------------------------------------

    def resume_at(self, file: str | None, offset: int | None, counter: int) -> None:
        """The stream starts after the commit at `file:offset` with `counter`."""
        self._counter = counter
        if file and offset is not None:
            self._history.append((file, offset, counter))
            self._point = (file, offset)

    def committed(self, file: str | None, offset: int | None, counter: int) -> None:
        """The stream read the commit ending at `file:offset`, which got `counter`."""
        self._counter = counter
        if file and offset is not None:
            self._history.append((file, offset, counter))
            self.reached(file, offset)

    def reached(self, file: str, offset: int) -> None:
        """The server sent everything before `file:offset` (a commit or a heartbeat)."""
        point = (file, offset)
        if self._point is None or point > self._point:
            self._point = point

    def ready(self) -> list[BulkItem]:
        """The items of every chunk the stream has read past (only call between transactions).
        A chunk older than the remembered history is dropped, to be read again."""
        while True:
            try:
                self._held.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        items: list[BulkItem] = []
        waiting = []
        for chunk in self._held:
            counter = self._counter_at(chunk.position)
            if counter is None:
                waiting.append(chunk)
            elif counter < 0:
                chunk.dropped = True
                chunk.done.set()
            else:
                items += self._items(chunk, counter)
                self._sent.append(chunk)
        self._held = waiting
        return items

    def _counter_at(self, position: tuple[str, int]) -> int | None:
        """The counter of the last transaction at or before `position`; None while the stream
        has not read that far, -1 when it is older than the remembered history."""
        point = self._point
        if point is None or point < position:
            return None
        history = self._history
        if not history or history[-1][:2] <= position:
            return self._counter
        at = bisect.bisect_right(history, (*position, MAX_COUNTER)) - 1
        return history[at][2] if at >= 0 else -1

    def _items(self, chunk: Chunk, counter: int) -> list[BulkItem]:
        mapper = self._mappers.with_mapping(chunk.mapping, chunk.schema)
        chunk_version = version(counter, COPY_SLOT)
        items = []
        documents = chunk.actions if chunk.actions is not None else map(mapper.map_row, chunk.rows)
        for actions in documents:
            for action in actions:
                if chunk.target_index is not None:
                    action = replace(action, index=chunk.target_index)
                items.append(BulkItem(action, chunk_version, chunk.table, None, mapper.id_columns))
        return items

    def take_sent(self) -> list[Chunk]:
        """The chunks whose items the batch holds, as it is being sent."""
        chunks = self._sent
        self._sent = []
        self._inflight += chunks
        return chunks

    def acknowledged(self, chunks: list[Chunk]) -> int:
        """`chunks` (from `take_sent`) and everything sent before them are acknowledged;
        returns their rows."""
        rows = 0
        for chunk in chunks:
            rows += len(chunk.rows)
            chunk.done.set()
        done = {id(chunk) for chunk in chunks}
        self._inflight = [c for c in self._inflight if id(c) not in done]
        return rows

    def check(self) -> None:
        """Raise what stopped the snapshotter, if something did (a bug)."""
        s = self._snapshotter
        if s is not None and s.failure is not None:
            raise s.failure

    def quiet(self) -> bool:
        """True when no snapshot is requested, running or in flight."""
        s = self._snapshotter
        if s is None:
            return True
        self.check()
        return (
            s.idle.is_set()
            and not self._held
            and self._inbox.empty()
            and not self._sent
            and not self._inflight
        )

    def close(self) -> None:
        """Stop the snapshotter; chunks not acknowledged are read again next time."""
        self._stop.set()
        for chunk in self._held + self._sent + self._inflight:
            chunk.dropped = True
            chunk.done.set()
        if self._snapshotter is not None:
            self._snapshotter.join(5.0)
