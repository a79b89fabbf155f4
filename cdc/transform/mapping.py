"""Turn row changes into Elasticsearch document operations, following a table mapping.

A `Mapper` is compiled once per table map (mapping + table schema): it checks every column the
mapping names against the table and builds one converter per field, so that `map()` does only
per-value work. Everything here is pure: no I/O.

Documents: every column, minus `exclude`, restricted to `include` when given, renamed by
`rename`, converted by `cdc.transform.convert` (columns in `json_columns` parsed as JSON), in
table column order, followed by the `static` fields.

Document ids: the id columns (`id_columns`, default the primary key) rendered as text and joined
with `id_separator`. Integers (also YEAR and BIT) in decimal, DECIMAL as fixed-point text with
its scale, dates and times as in documents (ISO 8601), strings and ENUMs as is, SETs as their
sorted members joined with ",", BINARY and GEOMETRY as lowercase hex (a BINARY(16) UUID gives
its 32 hex digits). Id columns need not be document fields. A NULL (or zero date) id part is a
MappingError.

Operations: insert -> index; delete -> delete of the old id; update -> index, preceded by a
delete of the old id when the id changed (a primary key update). With `soft_delete`, a new row
image whose converted column value is in `soft_delete.values` is a delete of its id instead of
an index (an update that also changes the id deletes both ids). Deletes of ids the index does
not hold are expected (e.g. a row inserted already soft-deleted).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from zoneinfo import ZoneInfo

import orjson

from cdc.config import FieldOptions, TableMapping
from cdc.config.mappings import index_template
from cdc.errors import MappingError
from cdc.model.events import Column, Kind, RowChange, TableSchema
from cdc.transform import docnative
from cdc.transform.checks import field_columns, problems
from cdc.transform.computed import Hook, apply_hook, compile_computed, load_hook
from cdc.transform.convert import (
    Converter,
    ConvertOptions,
    always_omits,
    converter_for,
    field_converter,
    passes_through,
)
from cdc.transform.filters import RowFilter


@dataclass(slots=True, unsafe_hash=True)
class Action:
    """One document operation: index `source` under `doc_id`, or delete `doc_id`.

    Never changed once built (`dataclasses.replace` makes a changed copy); not frozen because
    one is built for every row change, and a frozen dataclass costs four times as much to build.
    """

    op: Literal["index", "delete"]
    index: str
    doc_id: str
    source: dict[str, Any] | None
    """The document for "index", None for "delete" (and for an index whose document the
    compiled path encoded: `body`)."""
    key: tuple[str, ...] = field(default=(), compare=False)
    """The rendered values of the id columns (`Mapper.id_columns`), to find the row again."""
    routing: str | None = None
    """The shard routing value (the mapping's `routing` column), if any."""
    pipeline: str | None = None
    """The ingest pipeline an index goes through (the mapping's `pipeline`), if any."""
    body: bytes | None = None
    """The document of an index as JSON, when compiled code encoded it instead of building
    `source` (mappers made with `encoded=True`, the streaming path's)."""

    def document(self) -> dict[str, Any] | None:
        """The document of an index as values, read back from `body` when it came encoded;
        None for a delete."""
        if self.body is not None:
            loaded: dict[str, Any] = orjson.loads(self.body)
            return loaded
        return self.source


class Mapper:
    """Compiled mapping of one TableMapping applied to one TableSchema.

    Build it again whenever the table map changes (a new TableSchema). The constructor raises
    MappingError with the first problem `cdc.transform.checks.problems` finds: a column the
    table lacks, no id columns (no primary key and no `id_columns`), two fields with one name,
    an id column that cannot form an id (JSON), an option that does not fit its column.
    """

    def __init__(
        self,
        mapping: TableMapping,
        table: TableSchema,
        time_zone: ZoneInfo,
        encoded: bool = False,
    ) -> None:
        self.mapping = mapping
        self.table = table
        self.table_name = table.name
        """`schema.table`, for counts and dead letters."""
        self.index = mapping.index
        self._where = f"mapping {mapping.table!r} (table {table.name})"
        self._check_columns()
        opts = _options(mapping, time_zone)
        self._document = document_builder(mapping, table, time_zone, mapping.static)
        self._id_parts = self._compile_id(time_zone)
        self._single_id = self._id_parts[0] if len(self._id_parts) == 1 else None
        """The one id column and its renderer, when the id has a single part."""
        self.id_columns: tuple[str, ...] = tuple(name for name, _ in self._id_parts)
        """The columns whose rendered values form the document id (and `Action.key`)."""
        self._separator = mapping.id_separator
        self._soft_delete = self._compile_soft_delete(opts)
        self.filter = RowFilter(mapping.where, table) if mapping.where else None
        """The mapping's `where`, bound to the table (rows outside it have no document)."""
        self._pipeline = mapping.pipeline
        self._placement = self._compile_placement(time_zone)
        self.placed = self._placement is not None
        """Whether a document's index or routing depends on its row (not only its id)."""
        self.hook: Hook | None = load_hook(mapping.transform) if mapping.transform else None
        """The mapping's `transform` function (applied by the tree for a mapping with
        children, after the children are in the document)."""
        if self.hook is not None and not mapping.children:
            self._document = self._hooked(self._document, self.hook, mapping.transform or "")
        self._encode: docnative.Encode | None = None
        if encoded and self.hook is None and not mapping.computed and not mapping.children:
            fields = _document_fields(mapping, table, time_zone)
            self._encode = docnative.encoder_for(fields, dict(mapping.static), self._document)

    def map(self, change: RowChange) -> list[Action]:
        """The document operations for one row change of this mapper's table, in order.

        Raises MappingError (naming the table and column) when a value cannot be converted or
        an id part is NULL.
        """
        try:
            if self.filter is not None:
                return self._filtered(change, self.filter)
            return self._map(change)
        except MappingError as exc:
            raise MappingError(f"{self.table.name}: {exc.message}", hint=exc.hint) from None
        except KeyError as exc:
            raise MappingError(
                f"{self.table.name}: row image lacks column {exc.args[0]!r}",
                hint="the table's binlog rows do not match its table map; "
                "check binlog_row_image=FULL",
            ) from None

    def _map(self, change: RowChange) -> list[Action]:
        op = change.op
        if op == "delete":
            before = _image(change.before, "before")
            return [self._delete(self._key(before), before)]
        after = _image(change.after, "after")
        new_key = self._key(after)
        actions = []
        if op == "update":
            before = _image(change.before, "before")
            old_key = self._key(before)
            # A new id, another shard (routing) or another index (period): the old document
            # is deleted where it is.
            if old_key != new_key or (
                self._placement is not None and self._placement(before) != self._placement(after)
            ):
                actions.append(self._delete(old_key, before))
        if self._soft_delete is not None and self._soft_delete(after):
            actions.append(self._delete(new_key, after))
        else:
            placement = self._placement
            index, routing = (self.index, None) if placement is None else placement(after)
            doc_id = new_key[0] if len(new_key) == 1 else self._separator.join(new_key)
            if self._encode is not None:
                body = self._encode(after)
                actions.append(
                    Action("index", index, doc_id, None, new_key, routing, self._pipeline, body)
                )
            else:
                source = self._document(after)
                actions.append(
                    Action("index", index, doc_id, source, new_key, routing, self._pipeline)
                )
        return actions

    def _filtered(self, change: RowChange, where: RowFilter) -> list[Action]:
        """`_map` under a `where`: a row outside the filter has no document, so an insert or
        update outside it writes nothing unless the row was inside before (then its document
        is deleted), and a delete deletes only a row that was inside."""
        was = change.before is not None and where.matches(change.before)
        now = change.after is not None and where.matches(change.after)
        if now:
            if change.op == "update" and not was:
                # Entering the filter: the old id (if the key changed) has no document.
                change = RowChange(change.table, "insert", None, change.after, change.size)
            return self._map(change)
        if was:
            before = _image(change.before, "before")
            return [self._delete(self._key(before), before)]
        return []

    def map_row(self, row: dict[str, Any]) -> list[Action]:
        """The operations that make the index hold `row` as it is now (a row read by a snapshot
        or a replay rather than streamed): an index, or a delete when it is soft-deleted or
        outside the mapping's `where`."""
        if self.filter is not None and not self.filter.matches(row):
            return [self._delete(self._key(row), row)]
        return self.map(RowChange(self.table, "insert", None, row))

    def doc_id(self, row: dict[str, Any]) -> str:
        """The document id of a row (only its id columns are needed)."""
        return self._join(self._key(row))

    def key(self, row: dict[str, Any]) -> tuple[str, ...]:
        """The rendered id column values of a row (only its id columns are needed), as in
        `Action.key`; MappingError when one is NULL."""
        return self._key(row)

    def delete(self, key: tuple[str, ...]) -> Action:
        """The delete of the document with this key (of a mapping whose documents are placed
        by their id alone: no `routing`, no index per period)."""
        assert self._placement is None
        return self._delete(key, None)

    def _key(self, row: dict[str, Any]) -> tuple[str, ...]:
        if self._single_id is not None:
            column, render = self._single_id
            part = render(row[column])
            if part is not None:
                return (part,)
        parts = []
        for column, render in self._id_parts:
            part = render(row[column])
            if part is None:
                raise MappingError(
                    f"id column {column!r} is NULL, so the row has no document id",
                    hint="choose id_columns that are NOT NULL and never hold zero dates",
                )
            parts.append(part)
        return tuple(parts)

    def _join(self, key: tuple[str, ...]) -> str:
        return key[0] if len(key) == 1 else self._separator.join(key)

    def _delete(self, key: tuple[str, ...], row: dict[str, Any] | None) -> Action:
        index, routing = self._place(row) if row is not None else (self.index, None)
        return Action("delete", index, self._join(key), None, key, routing)

    @staticmethod
    def _hooked(
        document: Callable[[dict[str, Any]], dict[str, Any]], hook: Hook, spec: str
    ) -> Callable[[dict[str, Any]], dict[str, Any]]:
        return lambda row: apply_hook(hook, spec, document(row), row)

    def _place(self, row: dict[str, Any]) -> tuple[str, str | None]:
        """The index and the routing of a row's document."""
        if self._placement is None:
            return self.index, None
        return self._placement(row)

    def _compile_placement(
        self, time_zone: ZoneInfo
    ) -> Callable[[dict[str, Any]], tuple[str, str | None]] | None:
        """Where a row's document lives, when that depends on the row: its routing value (the
        `routing` column rendered as an id part is) and its index (an index per period)."""
        mapping = self.mapping
        template = index_template(mapping.index)
        if mapping.routing is None and template is None:
            return None
        route = None
        if mapping.routing is not None:
            column = self.table.column(mapping.routing)
            assert column is not None  # checked by _check_columns
            route = _id_renderer(column, time_zone)
        name = mapping.routing or ""
        fixed = mapping.index

        def place(row: dict[str, Any]) -> tuple[str, str | None]:
            index = fixed if template is None else template.render(row)
            return index, None if route is None else route(row[name])

        return place

    def _check_columns(self) -> None:
        found = problems(self.mapping, self.table)
        if found:
            raise found[0].error(self._where)

    def _compile_id(self, time_zone: ZoneInfo) -> list[tuple[str, Callable[[Any], str | None]]]:
        names = self.mapping.id_columns or list(self.table.primary_key)
        parts = []
        for name in names:
            column = self.table.column(name)
            if column is None:
                raise MappingError(
                    f"{self._where}: primary key column {name!r} is not among the table's "
                    f"columns: {', '.join(c.name for c in self.table.columns)}",
                    hint="the table map is incomplete; check binlog_row_metadata=FULL",
                )
            parts.append((name, _id_renderer(column, time_zone)))
        return parts

    def _compile_soft_delete(self, opts: ConvertOptions) -> Callable[[dict[str, Any]], bool] | None:
        rule = self.mapping.soft_delete
        if rule is None:
            return None
        name = rule.column
        column = self.table.column(name)
        assert column is not None  # checked by _check_columns
        if column.kind is Kind.DECIMAL:
            # Converted decimals are text or opaque fragments; compare numerically instead so
            # that `values: [1]` matches a DECIMAL 1.00.
            wanted = [d for d in map(_as_decimal, rule.values) if d is not None]
            return lambda row: row[name] in wanted
        # Base64 even when binary fields are skipped: the rule must still see the value.
        convert = _converter(self.mapping, column, replace(opts, binary="base64"))
        values = list(rule.values)
        return lambda row: convert(row[name]) in values


def _options(mapping: FieldOptions, time_zone: ZoneInfo) -> ConvertOptions:
    return ConvertOptions(decimal=mapping.decimal, binary=mapping.binary, time_zone=time_zone)


def _converter(options: FieldOptions, column: Column, opts: ConvertOptions) -> Converter:
    return field_converter(column, opts, options.json_columns)


def document_builder(
    options: FieldOptions,
    table: TableSchema,
    time_zone: ZoneInfo,
    static: dict[str, Any] | None = None,
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The function turning a row of `table` into the fields `options` make of it (the part of
    a document one table gives), followed by `static` and the computed fields. The columns it
    names must exist (checked by `cdc.transform.checks`); raises KeyError on a row image that
    lacks one."""
    opts = _options(options, time_zone)
    document = _compile_document(_document_fields(options, table, time_zone), dict(static or {}))
    computed = compile_computed(options, table, opts)
    if computed is None:
        return document

    def with_computed(row: dict[str, Any]) -> dict[str, Any]:
        built = document(row)
        built.update(computed(row))
        return built

    return with_computed


def _document_fields(
    options: FieldOptions, table: TableSchema, time_zone: ZoneInfo
) -> list[tuple[str, str, Converter]]:
    """(column, field name, converter) of each column `options` make a field of, in order."""
    opts = _options(options, time_zone)
    return [
        (
            column.name,
            options.rename.get(column.name, column.name),
            _converter(options, column, opts),
        )
        for column in field_columns(options, table)
    ]


def _compile_document(
    fields: list[tuple[str, str, Converter]], static: dict[str, Any]
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The document builder of a mapping: one generated function that reads every field's
    column from a row image and converts it, in field order, then adds the static fields.

    Generated rather than looped because it runs for every row change: it skips the calls of
    pass-through converters and the fields that are always omitted. Raises KeyError when the
    row image lacks a column.
    """
    env: dict[str, Any] = {}
    entries = []
    for i, (column, name, convert) in enumerate(fields):
        if always_omits(convert):
            continue
        value = f"row[{column!r}]"
        if not passes_through(convert):
            env[f"convert{i}"] = convert
            value = f"convert{i}({value})"
        entries.append(f"{name!r}: {value}")
    for i, (name, fixed) in enumerate(static.items()):
        env[f"static{i}"] = fixed
        entries.append(f"{name!r}: static{i}")
    source = f"def document(row):\n    return {{{', '.join(entries)}}}\n"
    exec(compile(source, "<document builder>", "exec"), env)
    document: Callable[[dict[str, Any]], dict[str, Any]] = env["document"]
    return document


def _image(row: dict[str, Any] | None, which: str) -> dict[str, Any]:
    if row is None:
        raise MappingError(f"row change has no {which} image")
    return row


def _as_decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _id_renderer(column: Column, time_zone: ZoneInfo) -> Callable[[Any], str | None]:
    kind = column.kind
    if kind is Kind.BINARY or kind is Kind.GEOMETRY:
        return _hex
    convert = converter_for(column, ConvertOptions(decimal="string", time_zone=time_zone))
    if kind is Kind.SET:

        def render_set(value: Any) -> str | None:
            members = convert(value)
            return None if members is None else ",".join(members)

        return render_set
    if kind is Kind.STRING or kind is Kind.ENUM:
        return convert
    if passes_through(convert):
        return _text_or_none

    def render(value: Any) -> str | None:
        text = convert(value)
        return None if text is None else str(text)

    return render


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _hex(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = value.encode("utf-8")
    return bytes(value).hex()


class Mappers:
    """Every mapper the connector uses, built once and found again by identity.

    The binlog source hands out one `TableSchema` object per table map, so a mapper is found by
    the schema object itself (hashing a whole schema for every row change cost more than
    mapping the row). A new schema object (after a DDL) gets a new mapper.
    """

    _LIMIT = 10_000

    def __init__(
        self,
        mapping_for: Callable[[str, str], TableMapping | None],
        time_zone: ZoneInfo,
    ) -> None:
        self._mapping_for = mapping_for
        self._zone = time_zone
        self._by_schema: dict[int, tuple[TableSchema, Mapper | None]] = {}
        self._by_mapping: dict[tuple[int, TableSchema], Mapper] = {}

    def of(self, table: TableSchema) -> Mapper | None:
        """The mapper of a streamed table schema; None when no mapping covers the table, or
        when its mapping has children (its documents are rebuilt, not mapped). Its index
        actions carry their documents encoded (`Action.body`) where compiled code can do it."""
        entry = self._by_schema.get(id(table))
        if entry is not None and entry[0] is table:
            return entry[1]
        mapping = self._mapping_for(table.schema, table.table)
        # The documents of a mapping with children are rebuilt whole (`cdc.engine.rebuilds`).
        mapper = (
            None
            if mapping is None or mapping.children
            else Mapper(mapping, table, self._zone, encoded=True)
        )
        if len(self._by_schema) > self._LIMIT:
            self._by_schema.clear()
        self._by_schema[id(table)] = (table, mapper)
        return mapper

    def with_mapping(self, mapping: TableMapping, table: TableSchema) -> Mapper:
        """The mapper of `mapping` on a table described by a catalog read (snapshot rows)."""
        key = (id(mapping), table)
        mapper = self._by_mapping.get(key)
        if mapper is None:
            if len(self._by_mapping) > self._LIMIT:
                self._by_mapping.clear()
            mapper = self._by_mapping[key] = Mapper(mapping, table, self._zone)
        return mapper
