"""Denormalized documents in the main loop: rebuilt at flushes with the newest change's version,
the checkpoint behind them, and never from a snapshot that does not hold what they rebuild."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pytest
from blog import BLOG, SCHEMAS, World, blog_world
from fakes import Clock, FakeRecorder, FakeSink, ScriptedFeed, position

from cdc.config import ConnectorConfig, TableMapping
from cdc.engine.loop import Loop, Outages
from cdc.engine.rebuilds import Rebuilds
from cdc.errors import Interrupted, SourceUnavailable
from cdc.metrics import Metrics
from cdc.model.checkpoint import Checkpoint
from cdc.model.events import Begin, Commit, Event, RowChange, TableSchema
from cdc.model.versions import ROW_BITS, version
from cdc.retry import Outage
from cdc.testing.memory import memory_stores
from cdc.transform.mapping import Mappers
from cdc.transform.trees import Tree, compile_tree

T = TypeVar("T")
START = Checkpoint(position(0), counter=500, server="server_id=1", written_at=1.0)
FRESH = ("bin.000001", 10**9)
"""A snapshot position after everything the tests stream."""


class Rows:
    """`TreeRows` over a sequence of states of the world: read `n` sees `states[n]` (the last
    one from then on), at `positions[n]`."""

    def __init__(self, states: list[World], positions: list[tuple[str, int]]) -> None:
        self.states = states
        self.positions = positions
        self.reads = 0
        self.fail: BaseException | None = None

    def _now(self) -> World:
        return self.states[min(self.reads, len(self.states) - 1)]

    def fetch_in(
        self,
        schema: str,
        table: str,
        columns: Sequence[str],
        values: Sequence[tuple[Any, ...]],
        order: Sequence[tuple[str, bool]] = (),
    ) -> tuple[TableSchema, list[dict[str, Any]]]:
        return self._now().fetch(f"{schema}.{table}", columns, values, order)

    def consistent_read(self, read: Callable[[], T]) -> tuple[T, tuple[str, int]]:
        if self.fail is not None:
            failure, self.fail = self.fail, None
            raise failure
        try:
            return read(), self.positions[min(self.reads, len(self.positions) - 1)]
        finally:
            self.reads += 1

    def forget(self) -> None:
        return None

    def close(self) -> None:
        return None


def _config(max_actions: int = 1000) -> ConnectorConfig:
    bulk = {"flush_interval_ms": 10_000, "max_actions": max_actions}
    return ConnectorConfig.model_validate(
        {
            "name": "unit",
            "source": {"user": "cdc", "server_id": 7},
            "sink": {"urls": ["http://es.invalid:9200"], "bulk": bulk},
            "checkpoint": {"file": {"path": "unused"}},
            "tables": [BLOG],
        }
    )


class Rig:
    def __init__(self, rows: Rows, max_actions: int = 1000) -> None:
        cfg = _config(max_actions)
        self.clock = Clock()
        self.sink = FakeSink(self.clock)
        self.recorder = FakeRecorder()
        self.stop = threading.Event()
        tree, problems = compile_tree(cfg.tables[0], blog_world(), ZoneInfo("UTC"))
        assert tree is not None, problems
        self.tree: Tree = tree
        self.rows = rows
        self.rebuilds = Rebuilds([tree], lambda: rows, self.stop, self.clock)
        self.loop = Loop(
            cfg,
            START,
            "server_id=1",
            self.sink,
            self.recorder,
            memory_stores().letters,
            Outages(Outage("source"), Outage("sink"), Outage("store")),
            Metrics(),
            self.stop,
            Mappers(cfg.mapping_for, ZoneInfo("UTC")),
            clock=self.clock,
            trees=self.rebuilds,
        )

    def play(self, *events: list[Event]) -> None:
        feed = ScriptedFeed(self.clock, *((0.0, e) for e in events))
        original = feed.get

        def get(timeout: float) -> Any:
            if feed.empty():
                self.stop.set()
            return original(timeout)

        feed.get = get  # type: ignore[method-assign]
        try:
            self.loop.consume(feed, position(10_000))
        finally:
            self.loop.inflight.drain(None)

    def flush(self) -> None:
        """Send the batch and wait for the answers."""
        self.loop.flush()
        self.loop.inflight.drain(None)

    def docs(self) -> dict[str, dict[str, Any]]:
        return self.sink.live("posts")


def _txn(seq: int, *changes: RowChange) -> list[Event]:
    return [Begin(f"0-1-{seq}"), *changes, Commit(position(seq), timestamp=0)]


def _change(table: str, op: str, before: Any, after: Any) -> RowChange:
    return RowChange(SCHEMAS[table], op, before, after)  # type: ignore[arg-type]


ANN = {"id": 1, "name": "ann", "email": "a@x"}


def _renamed(world: World, name: str) -> World:
    after = copy.deepcopy(world)
    after.rows["blog.users"][0]["name"] = name
    return after


def test_a_rename_rebuilds_every_post_of_the_user_with_the_change_version() -> None:
    old = blog_world()
    rig = Rig(Rows([_renamed(old, "Ann")], [FRESH]))
    rig.play(_txn(1, _change("blog.users", "update", ANN, {**ANN, "name": "Ann"})))

    sent = rig.sink.sent()
    assert sorted(i.action.doc_id for i in sent) == ["10", "11"]
    assert {i.version for i in sent} == {version(501, 0)}
    assert rig.docs()["10"]["author"] == {"id": 1, "name": "Ann"}
    assert rig.loop.acked.position == position(1)


def test_many_rebuilt_documents_go_out_in_requests_within_the_bulk_limits() -> None:
    rig = Rig(Rows([_renamed(blog_world(), "Ann")], [FRESH]), max_actions=1)
    rig.play(_txn(1, _change("blog.users", "update", ANN, {**ANN, "name": "Ann"})))

    assert [len(r.items) for r in rig.sink.requests] == [1, 1]
    assert rig.loop.acked.position == position(1)


def test_a_rebuild_never_uses_a_snapshot_older_than_the_changes_it_rebuilds() -> None:
    # The first snapshot is taken before the rename is visible (it is at a position before
    # the rename's commit): its rows still say "ann". Rebuilding from it would index the old
    # name with the rename's version, and nothing later would correct it.
    old = blog_world()
    stale = ("bin.000001", position(1).offset - 50)  # type: ignore[operator]
    rows = Rows([old, _renamed(old, "Ann")], [stale, FRESH])
    rig = Rig(rows)
    rig.play(_txn(1, _change("blog.users", "update", ANN, {**ANN, "name": "Ann"})))
    rig.flush()

    assert rows.reads == 2
    assert all(i.action.source["author"]["name"] == "Ann" for i in rig.sink.sent())  # type: ignore[index]
    assert rig.docs()["11"]["author"]["name"] == "Ann"


class _Ticking(threading.Event):
    """A stop event whose waits pass on the fake clock instead of real time."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock

    def wait(self, timeout: float | None = None) -> bool:
        self.clock.now += timeout or 0
        return self.is_set()


def test_a_source_whose_snapshots_never_catch_up_is_an_outage() -> None:
    old = blog_world()
    stale = ("bin.000001", 1)
    rows = Rows([old], [stale])
    clock = Clock()
    rebuilds = Rebuilds([Rig(rows).tree], lambda: rows, _Ticking(clock), clock)
    rebuilds.touch(
        rebuilds.trees_of(SCHEMAS["blog.users"]),
        _change("blog.users", "update", ANN, {**ANN, "name": "Ann"}),
        version(501, 0),
        None,
    )
    rebuilds.commit("bin.000001", 5000)

    with pytest.raises(SourceUnavailable, match="still before the commit"):
        rebuilds.build()
    assert rebuilds.pending > 0  # kept for the retry


def test_the_checkpoint_waits_for_the_rebuild_and_a_lost_source_is_retried() -> None:
    rows = Rows([_renamed(blog_world(), "Ann")], [FRESH])
    rows.fail = SourceUnavailable("MySQL went away")
    rig = Rig(rows)
    with pytest.raises(Interrupted):  # stopped while MySQL was failing
        rig.play(_txn(1, _change("blog.users", "update", ANN, {**ANN, "name": "Ann"})))

    assert rig.sink.sent() == []
    assert rig.loop.acked.position == position(0)
    rig.stop.clear()
    rig.flush()

    assert rig.docs()["10"]["author"]["name"] == "Ann"
    assert rig.loop.acked.position == position(1)


def test_changes_no_document_uses_rebuild_nothing_and_the_checkpoint_moves_on() -> None:
    rows = Rows([blog_world()], [FRESH])
    rig = Rig(rows)
    rig.play(_txn(1, _change("blog.users", "update", ANN, {**ANN, "email": "new@x"})))

    assert rig.sink.sent() == []
    assert rows.reads == 0
    assert rig.loop.acked.position == position(1)


def test_documents_named_by_several_transactions_are_read_once_with_the_newest_version() -> None:
    world = blog_world()
    world.rows["blog.comments"][2]["body"] = "edited"
    rows = Rows([_renamed(world, "Ann")], [FRESH])
    rig = Rig(rows)
    comment = {"id": 102, "post_id": 11, "body": "only", "created_at": 3}
    rig.play(
        _txn(1, _change("blog.users", "update", ANN, {**ANN, "name": "Ann"})),
        _txn(2, _change("blog.comments", "update", comment, {**comment, "body": "edited"})),
    )
    rig.flush()

    mask = (1 << ROW_BITS) - 1
    sent = {i.action.doc_id: (i.version >> ROW_BITS, i.version & mask) for i in rig.sink.sent()}
    assert sent == {"10": (501, 0), "11": (502, 0)}
    assert rows.reads == 1
    assert rig.docs()["11"]["comments"][0]["body"] == "edited"


def test_a_root_that_is_gone_is_deleted() -> None:
    world = blog_world()
    world.rows["blog.posts"] = [p for p in world.rows["blog.posts"] if p["id"] != 12]
    rig = Rig(Rows([world], [FRESH]))
    rig.sink.live("posts")["12"] = {"stale": True}
    post = {"id": 12, "author_id": None, "title": "third"}
    rig.play(_txn(1, _change("blog.posts", "delete", post, None)))
    rig.flush()

    assert [(i.action.op, i.action.doc_id) for i in rig.sink.sent()] == [("delete", "12")]


def test_the_mapping_of_a_tree_root_is_not_applied_row_by_row() -> None:
    mapping = TableMapping.model_validate(BLOG)
    mappers = Mappers(lambda s, t: mapping if f"{s}.{t}" == "blog.posts" else None, ZoneInfo("UTC"))

    assert mappers.of(SCHEMAS["blog.posts"]) is None
