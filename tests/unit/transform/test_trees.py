"""Document trees against an in-memory catalog: compile checks, affected documents, builds."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import pytest
from blog import BLOG, SCHEMAS, World, blog_world

from cdc.config import TableMapping
from cdc.model.events import ForeignKey, RowChange
from cdc.transform.trees import Tree, compile_tree

UTC = ZoneInfo("UTC")


def _tree(world: World, spec: dict[str, Any] = BLOG) -> Tree:
    tree, problems = compile_tree(TableMapping.model_validate(spec), world, UTC)
    assert problems == []
    assert tree is not None
    return tree


def _problems(spec: dict[str, Any], world: World | None = None) -> list[str]:
    tree, problems = compile_tree(TableMapping.model_validate(spec), world or World(), UTC)
    assert tree is None
    return [f"{'.'.join(map(str, p.loc))}: {p.message} | {p.hint}" for p in problems]


def _documents(tree: Tree, world: World, keys: list[int]) -> dict[str, Any]:
    built = tree.build([(k,) for k in keys], world.fetch)
    return {a.doc_id: a.source for _, actions in built for a in actions}


def test_documents_hold_arrays_in_order_objects_and_links() -> None:
    world = blog_world()
    tree = _tree(world)

    docs = _documents(tree, world, [10, 11, 12, 13])

    assert docs == {
        "10": {
            "id": 10,
            "author_id": 1,
            "title": "first",
            "comments": [
                {"id": 101, "body": "early", "created_at": 1},
                {"id": 100, "body": "late", "created_at": 5},
            ],
            "author": {"id": 1, "name": "ann"},
            "tags": [{"name": "b"}, {"name": "a"}],
        },
        "11": {
            "id": 11,
            "author_id": 1,
            "title": "second",
            "comments": [{"id": 102, "body": "only", "created_at": 3}],
            "author": {"id": 1, "name": "ann"},
            "tags": [{"name": "a"}],
        },
        "12": {
            "id": 12,
            "author_id": None,
            "title": "third",
            "comments": [],
            "author": None,
            "tags": [],
        },
        "13": None,  # no such post: a delete
    }


def test_one_read_per_table_for_a_whole_batch() -> None:
    world = blog_world()
    tree = _tree(world)

    _documents(tree, world, [10, 11, 12])

    assert sorted(t for t, _ in world.reads) == sorted(
        ["blog.posts", "blog.comments", "blog.users", "blog.post_tags", "blog.tags"]
    )


def _change(
    table: str, op: str, before: dict[str, Any] | None, after: dict[str, Any] | None
) -> RowChange:
    return RowChange(SCHEMAS[table], op, before, after)  # type: ignore[arg-type]


def _affected(tree: Tree, world: World, *changes: RowChange) -> set[int]:
    lookups: dict[Any, dict[tuple[Any, ...], int]] = {}
    for version, change in enumerate(changes, 1):
        for lookup, values in tree.lookups(change):
            lookups.setdefault(lookup, {})[values] = version
    return {k[0] for k in tree.resolve(lookups, world.fetch)}


def test_a_moved_comment_affects_both_posts() -> None:
    world = blog_world()
    tree = _tree(world)
    before = {"id": 102, "post_id": 11, "body": "only", "created_at": 3}

    assert _affected(
        tree, world, _change("blog.comments", "update", before, {**before, "post_id": 10})
    ) == {10, 11}


def test_renaming_a_user_affects_every_post_of_theirs_with_one_read() -> None:
    world = blog_world()
    tree = _tree(world)
    user = {"id": 1, "name": "ann", "email": "a@x"}

    affected = _affected(
        tree, world, _change("blog.users", "update", user, {**user, "name": "Ann"})
    )

    assert affected == {10, 11}
    assert world.reads == [("blog.posts", ("author_id",))]


def test_a_change_of_columns_no_document_uses_affects_nothing() -> None:
    world = blog_world()
    tree = _tree(world)
    user = {"id": 1, "name": "ann", "email": "a@x"}

    assert (
        _affected(tree, world, _change("blog.users", "update", user, {**user, "email": "new@x"}))
        == set()
    )
    assert world.reads == []


def test_tags_and_links_lead_to_their_posts() -> None:
    world = blog_world()
    tree = _tree(world)

    link = {"id": 3, "post_id": 11, "tag_id": 2}
    assert _affected(tree, world, _change("blog.post_tags", "delete", link, None)) == {11}
    tag = {"id": 2, "name": "a"}
    assert _affected(tree, world, _change("blog.tags", "update", tag, {"id": 2, "name": "z"})) == {
        10,
        11,
    }


def test_a_primary_key_change_of_a_post_affects_the_old_and_the_new_id() -> None:
    world = blog_world()
    tree = _tree(world)
    post = {"id": 12, "author_id": None, "title": "third"}

    assert _affected(tree, world, _change("blog.posts", "update", post, {**post, "id": 20})) == {
        12,
        20,
    }


def test_the_newest_change_naming_a_document_gives_its_version() -> None:
    world = blog_world()
    tree = _tree(world)
    user = {"id": 1, "name": "ann", "email": "a@x"}
    comment = {"id": 102, "post_id": 11, "body": "only", "created_at": 3}
    lookups: dict[Any, dict[tuple[Any, ...], int]] = {}
    for version, change in [
        (5, _change("blog.comments", "update", comment, {**comment, "body": "x"})),
        (3, _change("blog.users", "update", user, {**user, "name": "Ann"})),
    ]:
        for lookup, values in tree.lookups(change):
            found = lookups.setdefault(lookup, {})
            found[values] = max(version, found.get(values, 0))

    assert tree.resolve(lookups, world.fetch) == {(10,): 3, (11,): 5}


def test_three_levels_follow_a_change_at_the_bottom_up_to_the_root() -> None:
    world = blog_world()
    spec = {
        "table": "blog.users",
        "index": "users",
        "children": [
            {
                "table": "blog.posts",
                "field": "posts",
                "join": {"author_id": "id"},
                "children": [
                    {
                        "table": "blog.comments",
                        "field": "comments",
                        "join": {"post_id": "id"},
                        "include": ["body"],
                    }
                ],
            }
        ],
    }
    tree = _tree(world, spec)
    comment = {"id": 102, "post_id": 11, "body": "only", "created_at": 3}

    assert _affected(tree, world, _change("blog.comments", "delete", comment, None)) == {1}
    docs = _documents(tree, world, [1, 2])
    assert [p["id"] for p in docs["1"]["posts"]] == [10, 11]
    assert docs["1"]["posts"][0]["comments"] == [{"body": "late"}, {"body": "early"}]  # by id
    assert docs["2"]["posts"] == []


def test_a_join_is_read_from_the_foreign_key_when_omitted() -> None:
    world = World({"blog.comments": [ForeignKey(("post_id",), "blog.posts", ("id",))]})
    world.add("blog.posts", {"id": 1, "author_id": None, "title": "t"})
    world.add("blog.comments", {"id": 5, "post_id": 1, "body": "b", "created_at": 0})
    spec = {
        "table": "blog.posts",
        "index": "p",
        "children": [{"table": "blog.comments", "field": "c", "include": ["id"]}],
    }

    assert _documents(_tree(world, spec), world, [1])["1"]["c"] == [{"id": 5}]


@pytest.mark.parametrize(
    ("child", "expected"),
    [
        (
            {"table": "blog.coments", "field": "c", "join": {"post_id": "id"}},
            "children.0.table: names unknown table `blog.coments`",
        ),
        (
            {"table": "blog.comments", "field": "c", "join": {"postid": "id"}},
            "children.0.join: join names unknown column 'postid' of blog.comments",
        ),
        (
            {"table": "blog.notes", "field": "c", "join": {"post_id": "id"}},
            "children.0.join: joins blog.notes.post_id (string) with blog.posts.id (int)",
        ),
        (
            {"table": "blog.comments", "field": "title", "join": {"post_id": "id"}},
            "children.0.field: field `title` is already a field of blog.posts's documents",
        ),
        (
            {"table": "blog.comments", "field": "c"},
            "children.0: gives no `join`, and blog.comments and blog.posts have no FOREIGN KEY",
        ),
        (
            {
                "table": "blog.comments",
                "field": "c",
                "join": {"post_id": "id"},
                "children": [{"table": "blog.posts", "field": "p", "join": {"id": "post_id"}}],
            },
            "children.0.children.0.table: `blog.posts` is its own ancestor here (a cycle: "
            "blog.posts → blog.comments → blog.posts)",
        ),
        (
            {"table": "blog.comments", "field": "c", "join": {"post_id": "id"}, "order_by": "bdy"},
            "children.0.order_by: order_by names unknown column 'bdy' of blog.comments",
        ),
    ],
)
def test_problems_name_their_field_path(child: dict[str, Any], expected: str) -> None:
    found = _problems({"table": "blog.posts", "index": "p", "children": [child]})

    assert any(line.startswith(expected) for line in found), found


def test_a_join_without_an_index_names_the_create_index_that_fixes_it() -> None:
    world = World()
    spec = {
        "table": "blog.posts",
        "index": "p",
        "children": [{"table": "blog.users", "field": "u", "join": {"name": "title"}}],
    }

    found = _problems(spec, world)

    assert any("CREATE INDEX `users_name` ON `blog`.`users` (`name`)" in line for line in found), (
        found
    )
    assert any(
        "CREATE INDEX `posts_title` ON `blog`.`posts` (`title`)" in line for line in found
    ), found


def test_arrays_are_nested_in_the_index_mappings_unless_turned_off() -> None:
    spec = {
        **BLOG,
        "index_mappings": {"properties": {"title": {"type": "keyword"}}},
    }
    spec["children"] = [dict(BLOG["children"][0], nested=False), *BLOG["children"][1:]]

    body = TableMapping.model_validate(spec).mappings_body()

    assert body == {"properties": {"tags": {"type": "nested"}, "title": {"type": "keyword"}}}
