"""Computed fields and the per-document Python hook of a mapping.

`computed:` adds fields made from columns (excluded ones too): `concat` joins document values
as text (NULLs left out, as SQL's CONCAT_WS), `json_path` takes a value out of a JSON column
(`$.a.b[0]`; null when the path is absent), `date_format` formats a DATE, DATETIME or TIMESTAMP
column with `strftime` (DATETIME in its own time, TIMESTAMP in UTC), `constant` is fixed.
`transform: package.module:function` is called for every document with the document and the
row's values (as the binlog decodes them) and returns the document to index: for what
declarations cannot say. Pure, apart from importing the hook.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

import orjson

from cdc.config import Computed, FieldOptions
from cdc.errors import MappingError
from cdc.model.events import Kind, TableSchema
from cdc.transform.convert import ConvertOptions, field_converter

Row = dict[str, Any]
Hook = Callable[[dict[str, Any], Row], dict[str, Any]]

_STEP = re.compile(r"\.([A-Za-z_][\w-]*)|\[(\d+)\]")
DATE_KINDS = frozenset({Kind.DATE, Kind.DATETIME, Kind.TIMESTAMP})


def compile_computed(
    options: FieldOptions, table: TableSchema, opts: ConvertOptions
) -> Callable[[Row], dict[str, Any]] | None:
    """The function giving a row's computed fields; None when the options have none."""
    if not options.computed:
        return None
    makers = [(name, _maker(spec, table, opts, options)) for name, spec in options.computed.items()]

    def computed(row: Row) -> dict[str, Any]:
        return {name: make(row) for name, make in makers}

    return computed


def _maker(
    spec: Computed, table: TableSchema, opts: ConvertOptions, options: FieldOptions
) -> Callable[[Row], Any]:
    def convert(name: str) -> Callable[[Any], Any]:
        column = table.column(name)
        assert column is not None  # checked by cdc.transform.checks
        return field_converter(column, opts, options.json_columns)

    if spec.concat is not None:
        parts = [(name, convert(name)) for name in spec.concat.columns]
        separator = spec.concat.separator

        def concat(row: Row) -> Any:
            texts = [_text(to(row[name])) for name, to in parts]
            found = [t for t in texts if t is not None]
            return separator.join(found) if found else None

        return concat
    if spec.json_path is not None:
        name, to = spec.json_path.column, convert(spec.json_path.column)
        steps = [key if key else int(index) for key, index in _STEP.findall(spec.json_path.path)]
        return lambda row: _follow(to(row[name]), steps)
    if spec.date_format is not None:
        name, fmt = spec.date_format.column, spec.date_format.format
        return lambda row: None if row[name] is None else row[name].strftime(fmt)
    fixed = spec.constant
    return lambda row: fixed


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return orjson.dumps(value).decode()


def _follow(value: Any, steps: list[str | int]) -> Any:
    for step in steps:
        if isinstance(step, int):
            if not isinstance(value, list) or step >= len(value):
                return None
            value = value[step]
        else:
            if not isinstance(value, dict) or step not in value:
                return None
            value = value[step]
    return value


def load_hook(spec: str) -> Hook:
    """The function `package.module:function` names; MappingError saying why it cannot be
    used."""
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure of user code, reported as config
        raise MappingError(
            f"transform {spec!r}: cannot import {module_name!r}: {exc}",
            hint="install the module where the connector runs (or put it on PYTHONPATH)",
        ) from None
    hook = getattr(module, attribute, None)
    if not callable(hook):
        raise MappingError(
            f"transform {spec!r}: {module_name} has no function {attribute!r}",
            hint="name a function taking (document, row) and returning the document",
        )
    return hook  # type: ignore[no-any-return]


def apply_hook(hook: Hook, spec: str, document: dict[str, Any], row: Row) -> dict[str, Any]:
    """The hook's document; MappingError when it fails or returns something else."""
    try:
        result = hook(document, row)
    except Exception as exc:  # user code: any failure becomes the mapping error it is
        raise MappingError(
            f"transform {spec!r} failed: {type(exc).__name__}: {exc}",
            hint="fix the function (it is called with the document and the row's values)",
        ) from None
    if not isinstance(result, dict):
        raise MappingError(
            f"transform {spec!r} returned {type(result).__name__}, not a document (dict)",
            hint="return the document to index",
        )
    return result
