"""What a table mapping names, held against a table: every problem, each at its field path.

The same checks run up front, against the live schema (`cdc check`, and `cdc run` before it
streams: `cdc.engine.startup.check_mappings`), and when a `Mapper` is built for a table map
the stream delivers (the first row after a DDL), so a mistake is reported with the same words
wherever it is found. Pure: the table comes in as a `TableSchema`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from cdc.config import FieldOptions, TableMapping
from cdc.config.mappings import index_template
from cdc.errors import MappingError
from cdc.model.events import Column, Kind, TableSchema
from cdc.transform import filters
from cdc.transform.computed import load_hook

_UNKNOWN_HINT = "correct the column name in the mapping (names are case-sensitive)"
_JSON_TEXT_KINDS = frozenset({Kind.STRING, Kind.BINARY, Kind.JSON})
_PERIOD_KINDS = frozenset({Kind.DATE, Kind.DATETIME, Kind.TIMESTAMP})


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a mapping for one table."""

    loc: tuple[str | int, ...]
    """The field path inside the mapping, e.g. `("include", 1)`."""
    message: str
    hint: str
    suggestion: str | None = None
    """An existing name close to the one given, when there is one."""

    def error(self, where: str) -> MappingError:
        """The problem as the error `where` (which mapping, which table) raises."""
        return MappingError(f"{where}: {self.message}", hint=self.hint)


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice most like `word`, if one is close enough to be a likely typo."""
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


def problems(mapping: TableMapping, table: TableSchema) -> list[Problem]:
    """Everything `mapping` gets wrong for `table`, in the order a reader meets it: columns it
    names that the table lacks, a missing document id, fields that collide, and options that do
    not fit their column's type. (Its children are checked by `cdc.transform.trees`.)"""
    found = _unknown_columns(mapping, table)
    if not (mapping.id_columns or table.primary_key):
        found.append(
            Problem(
                (),
                "the table has no primary key, so documents would have no id",
                "set id_columns in the mapping to columns that identify a row uniquely",
            )
        )
    if found:
        return found  # the rest would only repeat these
    return (
        _collisions(mapping, table)
        + _json_ids(mapping, table)
        + _type_misfits(mapping, table)
        + _filter_misfits(mapping, table)
    )


def _filter_misfits(mapping: TableMapping, table: TableSchema) -> list[Problem]:
    if mapping.where is None:
        return []
    why = filters.check(mapping.where, table)
    if why is None:
        return []
    return [Problem(("where",), f"where {why}", "correct the expression for the table's columns")]


def field_problems(options: FieldOptions, table: TableSchema) -> list[Problem]:
    """What the field options of a child mapping get wrong for its table: unknown columns,
    colliding fields, JSON options on columns that cannot hold JSON text."""
    return _unknown_columns(options, table) or (
        _collisions(options, table) + _type_misfits(options, table)
    )


def field_columns(options: FieldOptions, table: TableSchema) -> list[Column]:
    """The columns that become fields: every column, minus `exclude`, restricted to
    `include` when given, in table order."""
    include = None if options.include is None else set(options.include)
    exclude = set(options.exclude)
    return [
        column
        for column in table.columns
        if column.name not in exclude and (include is None or column.name in include)
    ]


def field_names(options: FieldOptions, table: TableSchema) -> list[str]:
    """The fields the options make of the table's columns, in column order."""
    return [options.rename.get(c.name, c.name) for c in field_columns(options, table)]


def _unknown_columns(mapping: FieldOptions, table: TableSchema) -> list[Problem]:
    id_columns = mapping.id_columns if isinstance(mapping, TableMapping) else None
    routing = mapping.routing if isinstance(mapping, TableMapping) else None
    template = index_template(mapping.index) if isinstance(mapping, TableMapping) else None
    period = template.columns if template is not None else []
    soft_delete = mapping.soft_delete if isinstance(mapping, TableMapping) else None
    named: list[tuple[str, list[tuple[tuple[str | int, ...], str]]]] = [
        ("id_columns", [(("id_columns", i), c) for i, c in enumerate(id_columns or [])]),
        ("include", [(("include", i), c) for i, c in enumerate(mapping.include or [])]),
        ("exclude", [(("exclude", i), c) for i, c in enumerate(mapping.exclude)]),
        ("rename", [(("rename", c), c) for c in mapping.rename]),
        (
            "soft_delete.column",
            [(("soft_delete", "column"), soft_delete.column)] if soft_delete else [],
        ),
        ("json_columns", [(("json_columns", i), c) for i, c in enumerate(mapping.json_columns)]),
        ("string_fields", [(("string_fields", c), c) for c in mapping.string_fields]),
        ("routing", [(("routing",), routing)] if routing else []),
        (
            "computed",
            [
                (("computed", field, kind), column)
                for field, spec in mapping.computed.items()
                for kind in ("concat", "json_path", "date_format")
                if getattr(spec, kind) is not None
                for column in spec.columns()
            ],
        ),
        ("index", [(("index",), c) for c in period]),
    ]
    known = [col.name for col in table.columns]
    found = []
    for setting, columns in named:
        for loc, name in columns:
            if name not in known:
                found.append(
                    Problem(
                        loc,
                        f"{setting} names unknown column {name!r}; "
                        f"the table's columns are: {', '.join(known)}",
                        _UNKNOWN_HINT,
                        closest(name, known),
                    )
                )
    return found


def _collisions(mapping: FieldOptions, table: TableSchema) -> list[Problem]:
    sources: dict[str, str] = {}
    found = []
    for column in field_columns(mapping, table):
        name = mapping.rename.get(column.name, column.name)
        if name in sources:
            found.append(
                Problem(
                    ("rename", column.name) if column.name in mapping.rename else (),
                    f"columns {sources[name]!r} and {column.name!r} would both become field "
                    f"{name!r}",
                    "rename one of them or exclude one",
                )
            )
        sources.setdefault(name, column.name)
    for name in mapping.computed:
        if name in sources:
            found.append(
                Problem(
                    ("computed", name),
                    f"computed field {name!r} collides with the field of column {sources[name]!r}",
                    "rename the computed field, or rename or exclude the column",
                )
            )
    static = mapping.static if isinstance(mapping, TableMapping) else {}
    for name in static:
        if name in sources:
            found.append(
                Problem(
                    ("static", name),
                    f"static field {name!r} collides with the field of column {sources[name]!r}",
                    "rename the static field, or rename or exclude the column",
                )
            )
    return found


def _json_ids(mapping: TableMapping, table: TableSchema) -> list[Problem]:
    found = []
    for i, name in enumerate(mapping.id_columns or table.primary_key):
        column = table.column(name)
        if column is not None and (column.kind is Kind.JSON or name in mapping.json_columns):
            found.append(
                Problem(
                    ("id_columns", i) if mapping.id_columns else (),
                    f"id column {name!r} holds JSON, which cannot form a document id",
                    "set id_columns to scalar columns that identify a row uniquely",
                )
            )
    return found


def _type_misfits(mapping: FieldOptions, table: TableSchema) -> list[Problem]:
    found = []
    for i, name in enumerate(mapping.json_columns):
        column = table.column(name)
        if column is not None and column.kind not in _JSON_TEXT_KINDS:
            found.append(
                Problem(
                    ("json_columns", i),
                    f"json_columns names column {name!r}, which is {_kind(column)}: only text "
                    "columns can hold JSON text",
                    "list only CHAR, VARCHAR, TEXT or BLOB columns holding JSON in json_columns",
                )
            )
    for name, spec in mapping.computed.items():
        if spec.date_format is not None:
            column = table.column(spec.date_format.column)
            if column is not None and column.kind not in _PERIOD_KINDS:
                found.append(
                    Problem(
                        ("computed", name, "date_format", "column"),
                        f"date_format needs a DATE, DATETIME or TIMESTAMP column; "
                        f"{column.name!r} is {_kind(column)}",
                        "name a date column",
                    )
                )
        if spec.json_path is not None:
            column = table.column(spec.json_path.column)
            if column is not None and not (
                column.kind is Kind.JSON or column.name in mapping.json_columns
            ):
                found.append(
                    Problem(
                        ("computed", name, "json_path", "column"),
                        f"json_path needs a JSON column (or one in json_columns); "
                        f"{column.name!r} is {_kind(column)}",
                        "name a JSON column, or list the text column in json_columns",
                    )
                )
    hook = mapping.transform if isinstance(mapping, TableMapping) else None
    if hook is not None:
        try:
            load_hook(hook)
        except MappingError as exc:
            found.append(Problem(("transform",), exc.message, exc.hint or ""))
    for name in mapping.string_fields:
        column = table.column(name)
        if column is not None and column.kind is not Kind.STRING:
            found.append(
                Problem(
                    ("string_fields", name),
                    f"string_fields names column {name!r}, which is {_kind(column)}, not text",
                    "list only CHAR, VARCHAR and TEXT columns in string_fields",
                )
            )
    template = index_template(mapping.index) if isinstance(mapping, TableMapping) else None
    for name in template.columns if template is not None else []:
        column = table.column(name)
        if column is not None and column.kind not in _PERIOD_KINDS:
            found.append(
                Problem(
                    ("index",),
                    f"index names column {name!r} for its period, which is {_kind(column)}: "
                    "only DATE, DATETIME and TIMESTAMP columns have periods",
                    "name a date column in the index, e.g. orders-{created_at:%Y.%m}",
                )
            )
    routing = mapping.routing if isinstance(mapping, TableMapping) else None
    column = table.column(routing) if routing else None
    if column is not None and column.kind is Kind.JSON:
        found.append(
            Problem(("routing",), f"routing column {routing!r} holds JSON", "route by a scalar")
        )
    rule = mapping.soft_delete if isinstance(mapping, TableMapping) else None
    column = table.column(rule.column) if rule is not None else None
    if rule is not None and column is not None:
        for i, value in enumerate(rule.values):
            if not _can_hold(column, value):
                found.append(
                    Problem(
                        ("soft_delete", "values", i),
                        f"soft_delete value {value!r} can never equal a value of column "
                        f"{column.name!r}, which is {_kind(column)}",
                        _VALUE_HINTS.get(column.kind, "give values of the column's type"),
                    )
                )
    return found


_VALUE_HINTS = {
    Kind.INT: "write the value as a number, without quotes",
    Kind.YEAR: "write the year as a number, without quotes",
    Kind.BIT: "write the bits as a number, without quotes",
    Kind.FLOAT: "write the value as a number, without quotes",
    Kind.DECIMAL: "write the value as a number",
    Kind.SET: "write the value as a list of the set's members, e.g. [a, b]",
}


def _can_hold(column: Column, value: Any) -> bool:
    """Whether a soft-delete value can ever equal the column's document value."""
    kind = column.kind
    if value is None or kind is Kind.JSON:
        return True
    if kind in (Kind.INT, Kind.YEAR, Kind.BIT):
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is Kind.FLOAT:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is Kind.DECIMAL:
        if isinstance(value, bool):
            return False
        try:
            Decimal(str(value))
        except InvalidOperation:
            return False
        return True
    if kind is Kind.SET:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    # Text, ENUM, dates and times, and binary (as base64) are strings in documents.
    return isinstance(value, str)


def _kind(column: Column) -> str:
    names = {Kind.STRING: "text", Kind.INT: "an integer", Kind.FLOAT: "a float"}
    return names.get(column.kind, f"a {column.kind.value.upper()} column")
