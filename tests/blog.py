"""A blog schema (posts, users, comments, tags, post_tags) in memory: a catalog and rows that
the tree tests read through `World.fetch`, counting the reads."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from cdc.model.events import Column, ForeignKey, Kind, TableSchema


def schema_of(name: str, *columns: tuple[str, Kind], key: Sequence[str] = ("id",)) -> TableSchema:
    schema, table = name.split(".")
    return TableSchema(
        schema,
        table,
        tuple(Column(c, k, is_primary=c in key) for c, k in columns),
        tuple(key),
    )


SCHEMAS = {
    s.name: s
    for s in (
        schema_of("blog.posts", ("id", Kind.INT), ("author_id", Kind.INT), ("title", Kind.STRING)),
        schema_of("blog.users", ("id", Kind.INT), ("name", Kind.STRING), ("email", Kind.STRING)),
        schema_of(
            "blog.comments",
            ("id", Kind.INT),
            ("post_id", Kind.INT),
            ("body", Kind.STRING),
            ("created_at", Kind.INT),
        ),
        schema_of("blog.tags", ("id", Kind.INT), ("name", Kind.STRING)),
        schema_of("blog.post_tags", ("id", Kind.INT), ("post_id", Kind.INT), ("tag_id", Kind.INT)),
        schema_of("blog.notes", ("id", Kind.INT), ("post_id", Kind.STRING)),
    )
}
INDEXES: dict[str, list[tuple[str, ...]]] = {
    "blog.posts": [("id",), ("author_id",)],
    "blog.users": [("id",)],
    "blog.comments": [("id",), ("post_id", "created_at")],
    "blog.tags": [("id",)],
    "blog.post_tags": [("id",), ("post_id",), ("tag_id",)],
    "blog.notes": [("id",)],
}
BLOG: dict[str, Any] = {
    "table": "blog.posts",
    "index": "posts",
    "children": [
        {
            "table": "blog.comments",
            "field": "comments",
            "join": {"post_id": "id"},
            "include": ["id", "body", "created_at"],
            "order_by": "created_at",
        },
        {
            "table": "blog.users",
            "field": "author",
            "relationship": "one_to_one",
            "join": {"id": "author_id"},
            "include": ["id", "name"],
        },
        {
            "table": "blog.tags",
            "field": "tags",
            "through": {
                "table": "blog.post_tags",
                "join": {"post_id": "id"},
                "to": {"tag_id": "id"},
            },
            "include": ["name"],
        },
    ],
}


class World:
    """A catalog and the rows of every table; counts the reads."""

    def __init__(self, foreign_keys: dict[str, list[ForeignKey]] | None = None) -> None:
        self.rows: dict[str, list[dict[str, Any]]] = {name: [] for name in SCHEMAS}
        self.fks = foreign_keys or {}
        self.reads: list[tuple[str, tuple[str, ...]]] = []

    def list_tables(self) -> list[str]:
        return sorted(SCHEMAS)

    def table_schema(self, schema: str, table: str) -> TableSchema:
        return SCHEMAS[f"{schema}.{table}"]

    def indexes(self, schema: str, table: str) -> list[tuple[str, ...]]:
        return INDEXES[f"{schema}.{table}"]

    def foreign_keys(self, schema: str, table: str) -> list[ForeignKey]:
        return self.fks.get(f"{schema}.{table}", [])

    def fetch(
        self,
        table: str,
        columns: Sequence[str],
        values: Iterable[tuple[Any, ...]],
        order: Sequence[tuple[str, bool]],
    ) -> tuple[TableSchema, list[dict[str, Any]]]:
        wanted = set(values)
        self.reads.append((table, tuple(columns)))
        found = [dict(r) for r in self.rows[table] if tuple(r[c] for c in columns) in wanted]
        for name, desc in reversed(order):
            found.sort(key=lambda r, n=name: r[n], reverse=desc)  # type: ignore[misc]
        return SCHEMAS[table], found

    def add(self, table: str, *rows: dict[str, Any]) -> None:
        self.rows[table] += rows


def blog_world() -> World:
    """Three posts (one without author), two users, comments, tags and links."""
    world = World()
    world.add(
        "blog.users",
        {"id": 1, "name": "ann", "email": "a@x"},
        {"id": 2, "name": "bob", "email": "b@x"},
    )
    world.add(
        "blog.posts",
        {"id": 10, "author_id": 1, "title": "first"},
        {"id": 11, "author_id": 1, "title": "second"},
        {"id": 12, "author_id": None, "title": "third"},
    )
    world.add(
        "blog.comments",
        {"id": 100, "post_id": 10, "body": "late", "created_at": 5},
        {"id": 101, "post_id": 10, "body": "early", "created_at": 1},
        {"id": 102, "post_id": 11, "body": "only", "created_at": 3},
    )
    world.add("blog.tags", {"id": 1, "name": "b"}, {"id": 2, "name": "a"})
    world.add(
        "blog.post_tags",
        {"id": 1, "post_id": 10, "tag_id": 2},
        {"id": 2, "post_id": 10, "tag_id": 1},
        {"id": 3, "post_id": 11, "tag_id": 2},
    )
    return world
