"""Denormalized documents: one document built from the rows of several tables.

A table mapping with `children` is a tree. Its root table gives the documents (their ids, their
own fields); each child adds a field to its parent's object: an array of the matching rows
(one-to-many, or many-to-many through a link table) or one object (one-to-one), and a child's
own children nest inside it. `compile_tree` holds the mapping against the live schema once (a
`Catalog`) and reports every problem at its field path; the `Tree` it returns knows, for a row
change of any of its tables, which documents it affects (`Tree.lookups`, `Tree.resolve`) and
how to build documents from the rows MySQL holds now (`Tree.build`).

Reads are injected (`Fetch`): every step reads one table once for all the rows of a batch
(`WHERE cols IN (...)`), through an index the compile step insisted on, never by a scan. The
engine (`cdc.engine.rebuilds`) decides when to read and with which version to write; nothing
here does I/O of its own.

Arrays hold one object per matching row in `order_by` order, ties broken by the child's primary
key (and, through a link table, by the link's); `[]` when there is none. A one-to-one field holds
the matching row's object, or null. Join values are compared as the binlog decodes them, so
text joins match exactly, not by the column's collation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from cdc.config import ChildMapping, TableMapping
from cdc.errors import MappingError
from cdc.model.events import ForeignKey, RowChange, TableSchema
from cdc.transform.checks import Problem, closest, field_columns, field_names, field_problems
from cdc.transform.computed import apply_hook
from cdc.transform.mapping import Action, Mapper, document_builder

Row = dict[str, Any]
Values = tuple[Any, ...]
Loc = tuple[str | int, ...]


class Catalog(Protocol):
    """What compiling a tree reads about the source's tables (`cdc.source.rows.RowReader`)."""

    def list_tables(self) -> list[str]: ...

    def table_schema(self, schema: str, table: str) -> TableSchema: ...

    def indexes(self, schema: str, table: str) -> list[tuple[str, ...]]: ...

    def foreign_keys(self, schema: str, table: str) -> list[ForeignKey]: ...


Fetch = Callable[
    [str, Sequence[str], Iterable[Values], Sequence[tuple[str, bool]]],
    tuple[TableSchema, list[Row]],
]
"""`fetch(table, columns, values, order)`: the schema of `table` (`schema.table`) and its rows
whose `columns` equal one of `values`, ordered by (column, descending) pairs."""


@dataclass(frozen=True, slots=True)
class Link:
    """The link table of a many-to-many child."""

    table: str
    parent_side: tuple[str, ...]
    """Link columns equal to the parent's `parent_cols`."""
    child_side: tuple[str, ...]
    """Link columns equal to the child's `child_cols`."""
    key: tuple[str, ...]
    """The link table's primary key (orders elements that share a child row)."""
    used: frozenset[str]


@dataclass(eq=False)
class Node:
    """One table of a tree: the root (`parent` None) or a child."""

    table: str
    options: TableMapping | ChildMapping
    loc: Loc
    """Where the node is written inside the root mapping, e.g. `("children", 0)`."""
    key: tuple[str, ...]
    """The root's id columns; a child's primary key."""
    parent: Node | None = None
    field_name: str = ""
    """The parent's field holding this child."""
    many: bool = False
    child_cols: tuple[str, ...] = ()
    """This node's columns matched to the parent (directly, or through `link.child_side`)."""
    parent_cols: tuple[str, ...] = ()
    """The parent's columns they are matched with (`link.parent_side` pairs with them)."""
    link: Link | None = None
    order: tuple[tuple[str, bool], ...] = ()
    """ORDER BY of an array: `order_by`, then the primary key."""
    children: list[Node] = field(default_factory=list)
    depth: int = 0
    schema: TableSchema | None = None
    """The table as the catalog described it when the tree was compiled."""
    used: frozenset[str] = frozenset()
    """Columns whose change can change a document."""
    _builders: dict[TableSchema, Callable[[Row], Row]] = field(default_factory=dict)

    @property
    def up_cols(self) -> tuple[str, ...]:
        """The columns an affected row of this node is followed up by."""
        return self.key if self.parent is None else self.child_cols

    def fields(self, schema: TableSchema, zone: ZoneInfo) -> Callable[[Row], Row]:
        """The builder of this node's own fields for rows described by `schema`."""
        build = self._builders.get(schema)
        if build is None:
            if len(self._builders) > 100:
                self._builders.clear()
            build = self._builders[schema] = document_builder(self.options, schema, zone)
        return build


@dataclass(frozen=True, slots=True)
class Lookup:
    """ "The rows of `node` whose `columns` equal `values` are affected" (`link`: the rows of
    the node's link table)."""

    node: Node
    link: bool
    columns: tuple[str, ...]


@dataclass
class Tree:
    """A compiled tree mapping; see the module docstring."""

    mapping: TableMapping
    root: Node
    zone: ZoneInfo
    members: dict[str, list[tuple[Node, bool]]]
    """`schema.table` -> (node, whether as its link table) for every table of the tree."""
    _mappers: dict[TableSchema, Mapper] = field(default_factory=dict)

    @property
    def index(self) -> str:
        return self.mapping.index

    @property
    def tables(self) -> list[str]:
        return list(self.members)

    def mapper(self, schema: TableSchema) -> Mapper:
        """The root's mapper for rows described by `schema` (ids, own fields, soft deletes)."""
        mapper = self._mappers.get(schema)
        if mapper is None:
            if len(self._mappers) > 100:
                self._mappers.clear()
            mapper = self._mappers[schema] = Mapper(self.mapping, schema, self.zone)
        return mapper

    # -- which documents a change affects ---------------------------------------------------

    def lookups(self, change: RowChange) -> list[tuple[Lookup, Values]]:
        """What a row change of one of the tree's tables affects, from its row images alone:
        root keys directly (a `Lookup` of the root by its key), else the rows of the parent
        (or link table) to follow up. An update of columns no document uses affects nothing."""
        found: list[tuple[Lookup, Values]] = []
        images = [image for image in (change.before, change.after) if image is not None]
        for node, as_link in self.members.get(change.table.name, ()):
            used = node.link.used if as_link and node.link is not None else node.used
            if change.op == "update" and _same(change.before, change.after, used):
                continue
            for image in images:
                if as_link:
                    link = node.link
                    assert link is not None and node.parent is not None
                    target = Lookup(node.parent, False, node.parent_cols)
                    found.append((target, tuple(image[c] for c in link.parent_side)))
                else:
                    found.append(_up(node, tuple(image[c] for c in node.up_cols)))
        return found

    def moves(self, change: RowChange) -> list[Action]:
        """The deletes a change of the root table makes where its document was, when the
        documents are placed by their rows (`routing`, an index per period): a deleted root,
        or one whose id, routing or period changed. (Rebuilds write where the row is now; a
        root gone by then is not deleted by them, so these deletes must come from the row
        image.)"""
        if change.table.name != self.mapping.table or change.before is None:
            return []
        mapper = self.mapper(change.table)
        if not mapper.placed:
            return []
        return [a for a in mapper.map(change) if a.op == "delete"]

    def resolve(self, lookups: dict[Lookup, dict[Values, Any]], fetch: Fetch) -> dict[Values, Any]:
        """The root keys (id column values) the lookups come to, each with the greatest tag
        (a version) of the lookups that led to it. Reads each table once per level, deepest
        first; `lookups` is consumed."""
        keys: dict[Values, Any] = {}
        while lookups:
            lookup = max(lookups, key=lambda x: (x.node.depth, x.link))
            wanted = lookups.pop(lookup)
            node = lookup.node
            if node.parent is None and lookup.columns == node.key:
                for values, tag in wanted.items():
                    if None not in values:
                        _keep(keys, values, tag)
                continue
            if lookup.link:
                link = node.link
                assert link is not None and node.parent is not None
                _, rows = fetch(link.table, lookup.columns, wanted, ())
                target = Lookup(node.parent, False, node.parent_cols)
                for row in rows:
                    tag = _tag(wanted, tuple(row[c] for c in lookup.columns))
                    _keep(
                        lookups.setdefault(target, {}), tuple(row[c] for c in link.parent_side), tag
                    )
                continue
            _, rows = fetch(node.table, lookup.columns, wanted, ())
            for row in rows:
                tag = _tag(wanted, tuple(row[c] for c in lookup.columns))
                up, values = _up(node, tuple(row[c] for c in node.up_cols))
                if up.node is node:  # the root, by its key
                    _keep(keys, values, tag)
                else:
                    _keep(lookups.setdefault(up, {}), values, tag)
        return keys

    # -- building documents -----------------------------------------------------------------

    def build(self, keys: Iterable[Values], fetch: Fetch) -> list[tuple[Values, list[Action]]]:
        """The operations that make the index hold the documents of the root rows with these
        id column values as MySQL has them now: an index of the whole document, or a delete
        when the row is gone (or soft-deleted; a gone row of placed documents gives none:
        see `moves`)."""
        wanted = list(dict.fromkeys(keys))
        schema, rows = fetch(self.root.table, self.root.key, wanted, ())
        done = {
            tuple(row[c] for c in self.root.key): actions
            for row, actions in zip(rows, self.documents(schema, rows, fetch), strict=True)
        }
        mapper = self.mapper(schema)
        result = []
        for values in wanted:
            actions = done.get(values)
            if actions is None:
                # Gone: deleted here, unless its place depends on the row, which `moves`
                # deleted from the row image.
                key = mapper.key(dict(zip(self.root.key, values, strict=True)))
                actions = [] if mapper.placed else [mapper.delete(key)]
            result.append((values, actions))
        return result

    def documents(self, schema: TableSchema, rows: list[Row], fetch: Fetch) -> list[list[Action]]:
        """The operations for root rows read now (a snapshot chunk, a verify chunk), aligned
        with `rows`: their children are read with `fetch`."""
        mapper = self.mapper(schema)
        extra = self._children(self.root, rows, fetch)
        hook, spec = mapper.hook, self.mapping.transform or ""
        out = []
        for row, fields in zip(rows, extra, strict=True):
            actions = mapper.map_row(row)
            for number, action in enumerate(actions):
                if action.source is not None:
                    action.source.update(fields)
                    if hook is not None:
                        source = apply_hook(hook, spec, action.source, row)
                        actions[number] = replace(action, source=source)
            out.append(actions)
        return out

    def _children(self, node: Node, rows: list[Row], fetch: Fetch) -> list[Row]:
        """For each row of `node`, the fields its children give it."""
        extra: list[Row] = [{} for _ in rows]
        for child in node.children:
            parents = [tuple(row[c] for c in child.parent_cols) for row in rows]
            groups = self._group(child, parents, fetch)
            for fields, values in zip(extra, parents, strict=True):
                found = groups.get(values, [])
                if child.many:
                    fields[child.field_name] = found
                else:
                    fields[child.field_name] = found[0] if found else None
        return extra

    def _group(self, child: Node, parents: list[Values], fetch: Fetch) -> dict[Values, list[Row]]:
        """The child objects of each parent's join values, in order."""
        link = child.link
        if link is None:
            schema, rows = fetch(child.table, child.child_cols, parents, child.order)
            docs = self._objects(child, schema, rows, fetch)
            groups: dict[Values, list[Row]] = {}
            for row, doc in zip(rows, docs, strict=True):
                groups.setdefault(tuple(row[c] for c in child.child_cols), []).append(doc)
            return groups
        _, links = fetch(link.table, link.parent_side, parents, tuple((c, False) for c in link.key))
        schema, rows = fetch(
            child.table,
            child.child_cols,
            [tuple(r[c] for c in link.child_side) for r in links],
            child.order,
        )
        docs = self._objects(child, schema, rows, fetch)
        by_child: dict[Values, list[tuple[int, Row]]] = {}
        for place, (row, doc) in enumerate(zip(rows, docs, strict=True)):
            by_child.setdefault(tuple(row[c] for c in child.child_cols), []).append((place, doc))
        pairs: dict[Values, list[tuple[int, int, Row]]] = {}
        for number, row in enumerate(links):
            parent = tuple(row[c] for c in link.parent_side)
            for place, doc in by_child.get(tuple(row[c] for c in link.child_side), ()):
                pairs.setdefault(parent, []).append((place, number, doc))
        return {
            parent: [doc for _, _, doc in sorted(found, key=lambda p: p[:2])]
            for parent, found in pairs.items()
        }

    def _objects(self, node: Node, schema: TableSchema, rows: list[Row], fetch: Fetch) -> list[Row]:
        build = node.fields(schema, self.zone)
        docs = [build(row) for row in rows]
        if node.children:
            for doc, fields in zip(docs, self._children(node, rows, fetch), strict=True):
                doc.update(fields)
        return docs


def _up(node: Node, values: Values) -> tuple[Lookup, Values]:
    """Where a row of `node` with these `up_cols` values leads."""
    if node.parent is None:
        return Lookup(node, False, node.key), values
    if node.link is not None:
        return Lookup(node, True, node.link.child_side), values
    return Lookup(node.parent, False, node.parent_cols), values


def _tag(wanted: dict[Values, Any], values: Values) -> Any:
    """The tag of the lookup a fetched row answers; the server may match values this code
    sees as different (a case-insensitive collation), and then the greatest tag is safe."""
    tag = wanted.get(values)
    return tag if tag is not None else max(wanted.values())


def _keep(found: dict[Values, Any], values: Values, tag: Any) -> None:
    if None in values:
        return
    old = found.get(values)
    if old is None or tag > old:
        found[values] = tag


def _same(before: Row | None, after: Row | None, used: frozenset[str]) -> bool:
    if before is None or after is None:
        return False
    return all(before.get(c) == after.get(c) for c in used)


# -- compiling a tree against the live schema -------------------------------------------------


@dataclass
class _Compiler:
    mapping: TableMapping
    catalog: Catalog
    problems: list[Problem] = field(default_factory=list)
    schemas: dict[str, TableSchema | None] = field(default_factory=dict)
    tables: list[str] | None = None

    def schema(self, name: str, loc: Loc) -> TableSchema | None:
        if self.tables is None:
            self.tables = self.catalog.list_tables()
        if name not in self.schemas:
            self.schemas[name] = (
                self.catalog.table_schema(*name.split(".", 1)) if name in self.tables else None
            )
        found = self.schemas[name]
        if found is None:
            near = closest(name, self.tables)
            self.problems.append(
                Problem(
                    loc,
                    f"names unknown table `{name}`",
                    "correct the table name (`schema.table`, case-sensitive) or create it",
                    near,
                )
            )
        return found

    def add(self, loc: Loc, message: str, hint: str, suggestion: str | None = None) -> None:
        self.problems.append(Problem(loc, message, hint, suggestion))

    def columns(self, schema: TableSchema, names: Iterable[str], loc: Loc, what: str) -> bool:
        known = [c.name for c in schema.columns]
        ok = True
        for name in names:
            if name not in known:
                ok = False
                self.add(
                    loc,
                    f"{what} names unknown column {name!r} of {schema.name}; its columns are: "
                    f"{', '.join(known)}",
                    "correct the column name (names are case-sensitive)",
                    closest(name, known),
                )
        return ok

    def index(self, schema: TableSchema, columns: tuple[str, ...], loc: Loc, why: str) -> None:
        """`columns` must lead an index of the table: every lookup by them is an IN query."""
        if not columns:
            return
        for index in self.catalog.indexes(schema.schema, schema.table):
            if set(index[: len(columns)]) == set(columns):
                return
        cols = ", ".join(f"`{c}`" for c in columns)
        name = f"{schema.table}_{'_'.join(columns)}"[:64]
        self.add(
            loc,
            f"{schema.name} has no index on ({', '.join(columns)}), so {why} would scan the table",
            f"add one: CREATE INDEX `{name}` ON `{schema.schema}`.`{schema.table}` ({cols})",
        )

    def same_types(
        self, a: TableSchema, a_cols: Sequence[str], b: TableSchema, b_cols: Sequence[str], loc: Loc
    ) -> None:
        for x, y in zip(a_cols, b_cols, strict=True):
            cx, cy = a.column(x), b.column(y)
            if cx is not None and cy is not None and cx.kind is not cy.kind:
                self.add(
                    loc,
                    f"joins {a.name}.{x} ({cx.kind.value}) with {b.name}.{y} ({cy.kind.value}): "
                    "columns of different types never match reliably",
                    "join columns of the same type (convert one column, or join other columns)",
                )

    def inferred(self, child: str, parent: str, loc: Loc, what: str) -> dict[str, str] | None:
        """child column -> parent column from the one FOREIGN KEY between the tables."""
        found: list[dict[str, str]] = []
        c_schema, c_table = child.split(".", 1)
        for fk in self.catalog.foreign_keys(c_schema, c_table):
            if fk.references == parent:
                found.append(dict(zip(fk.columns, fk.referenced, strict=True)))
        if not found:
            p_schema, p_table = parent.split(".", 1)
            for fk in self.catalog.foreign_keys(p_schema, p_table):
                if fk.references == child:
                    found.append(dict(zip(fk.referenced, fk.columns, strict=True)))
        if len(found) == 1:
            return found[0]
        self.add(
            loc,
            f"gives no `{what}`, and {child} and {parent} have "
            + ("no FOREIGN KEY between them" if not found else f"{len(found)} FOREIGN KEYs"),
            f"give `{what}: {{{child.split('.')[1]} column: {parent.split('.')[1]} column}}`",
        )
        return None


def compile_tree(
    mapping: TableMapping, catalog: Catalog, zone: ZoneInfo
) -> tuple[Tree | None, list[Problem]]:
    """The tree of a mapping with children, checked against the live schema; or None and every
    problem found, each at its field path inside the mapping: unknown tables and columns,
    joins that cannot be inferred, joins of different types, a table below itself (a cycle),
    fields that collide, and join columns without the index their lookups need."""
    c = _Compiler(mapping, catalog)
    schema = c.schema(mapping.table, ("table",))
    if schema is None:
        return None, c.problems
    key = tuple(mapping.id_columns or schema.primary_key)
    if not key:
        return None, c.problems  # the plain mapping checks report it
    root = Node(mapping.table, mapping, (), key, schema=schema)
    c.index(schema, key, ("table",), "reading documents by id")
    members: dict[str, list[tuple[Node, bool]]] = {mapping.table: [(root, False)]}
    parent_fields = field_names(mapping, schema) + list(mapping.static)
    for i, spec in enumerate(mapping.children):
        _child(c, root, schema, spec, ("children", i), [mapping.table], parent_fields, members)
    root.used = frozenset(
        _own_columns(mapping, schema)
        + list(key)
        + ([mapping.soft_delete.column] if mapping.soft_delete else [])
        + [col for child in root.children for col in child.parent_cols]
    )
    if c.problems:
        return None, c.problems
    return Tree(mapping, root, zone, members), []


def _own_columns(options: TableMapping | ChildMapping, schema: TableSchema) -> list[str]:
    return [column.name for column in field_columns(options, schema)]


def _child(
    c: _Compiler,
    parent: Node,
    parent_schema: TableSchema,
    spec: ChildMapping,
    loc: Loc,
    path: list[str],
    parent_fields: list[str],
    members: dict[str, list[tuple[Node, bool]]],
) -> None:
    if spec.field in parent_fields:
        c.add(
            (*loc, "field"),
            f"field `{spec.field}` is already a field of {parent.table}'s documents",
            "choose another field name, or exclude or rename the column",
        )
    if spec.table in path:
        cycle = " → ".join([*path[path.index(spec.table) :], spec.table])
        c.add(
            (*loc, "table"),
            f"`{spec.table}` is its own ancestor here (a cycle: {cycle})",
            "a tree names each table at most once on every path from the root",
        )
        return
    schema = c.schema(spec.table, (*loc, "table"))
    if schema is None:
        return
    for problem in field_problems(spec, schema):
        c.problems.append(
            Problem((*loc, *problem.loc), problem.message, problem.hint, problem.suggestion)
        )
    order = spec.order_terms()
    c.columns(schema, [name for name, _ in order], (*loc, "order_by"), "order_by")
    many = spec.is_array()
    if many and not schema.primary_key:
        c.add(
            (*loc, "table"),
            f"{spec.table} has no primary key, which keeps the order of the array stable",
            "add a primary key to the table",
        )
    link: Link | None = None
    if spec.through is None:
        join = spec.join or c.inferred(spec.table, parent.table, (*loc,), "join")
        if join is None:
            return
        ok = c.columns(schema, join.keys(), (*loc, "join"), "join")
        ok = c.columns(parent_schema, join.values(), (*loc, "join"), "join") and ok
        if not ok:
            return
        child_cols, parent_cols = tuple(join), tuple(join.values())
        c.same_types(schema, child_cols, parent_schema, parent_cols, (*loc, "join"))
        c.index(
            schema, child_cols, (*loc, "join"), f"finding the {spec.field} of a {parent.table} row"
        )
        if parent.parent is not None or parent_cols != parent.key:
            c.index(
                parent_schema,
                parent_cols,
                (*loc, "join"),
                f"finding the {parent.table} rows of a changed {spec.table} row",
            )
    else:
        through = spec.through
        tloc = (*loc, "through")
        if through.table in path or through.table == spec.table:
            c.add(
                (*tloc, "table"),
                f"`{through.table}` cannot link a table to itself here",
                "name a link table that is neither the parent nor the child",
            )
            return
        link_schema = c.schema(through.table, (*tloc, "table"))
        if link_schema is None:
            return
        join = through.join or c.inferred(through.table, parent.table, tloc, "join")
        to = through.to or c.inferred(through.table, spec.table, tloc, "to")
        if join is None or to is None:
            return
        ok = c.columns(link_schema, join.keys(), (*tloc, "join"), "through.join")
        ok = c.columns(parent_schema, join.values(), (*tloc, "join"), "through.join") and ok
        ok = c.columns(link_schema, to.keys(), (*tloc, "to"), "through.to") and ok
        ok = c.columns(schema, to.values(), (*tloc, "to"), "through.to") and ok
        if not ok:
            return
        if not link_schema.primary_key:
            c.add(
                (*tloc, "table"),
                f"{through.table} has no primary key, which keeps the order of the array stable",
                "add a primary key to the link table",
            )
        parent_side, parent_cols = tuple(join), tuple(join.values())
        child_side, child_cols = tuple(to), tuple(to.values())
        c.same_types(link_schema, parent_side, parent_schema, parent_cols, (*tloc, "join"))
        c.same_types(link_schema, child_side, schema, child_cols, (*tloc, "to"))
        c.index(
            link_schema, parent_side, (*tloc, "join"), f"finding the links of a {parent.table} row"
        )
        c.index(link_schema, child_side, (*tloc, "to"), f"finding the links of a {spec.table} row")
        c.index(schema, child_cols, (*tloc, "to"), f"reading the linked {spec.table} rows")
        if parent.parent is not None or parent_cols != parent.key:
            c.index(
                parent_schema,
                parent_cols,
                (*tloc, "join"),
                f"finding the {parent.table} rows of a changed link",
            )
        link = Link(
            through.table,
            parent_side,
            child_side,
            link_schema.primary_key,
            frozenset(parent_side + child_side + link_schema.primary_key),
        )
    node = Node(
        spec.table,
        spec,
        loc,
        schema.primary_key,
        parent=parent,
        field_name=spec.field,
        many=many,
        child_cols=child_cols,
        parent_cols=parent_cols,
        link=link,
        order=tuple(order) + tuple((k, False) for k in schema.primary_key if k not in dict(order)),
        depth=parent.depth + 1,
        schema=schema,
    )
    if link is not None:
        members.setdefault(link.table, []).append((node, True))
    parent.children.append(node)
    members.setdefault(spec.table, []).append((node, False))
    own_fields = field_names(spec, schema)
    for i, grandchild in enumerate(spec.children):
        _child(
            c,
            node,
            schema,
            grandchild,
            (*loc, "children", i),
            [*path, spec.table],
            own_fields,
            members,
        )
    node.used = frozenset(
        _own_columns(spec, schema)
        + list(child_cols)
        + [name for name, _ in order]
        + list(schema.primary_key)
        + [col for grandchild in node.children for col in grandchild.parent_cols]
    )


def build_problem(mapping: TableMapping, problem: Problem) -> MappingError:
    """A tree problem as the error a run stops with."""
    return MappingError(f"{mapping.locate(*problem.loc)}: {problem.message}", hint=problem.hint)
