"""Index field mappings derived from column types: what the connector creates an index with.

Dynamic mapping guesses a field's type from the first value it sees, so the second document
of another shape is rejected (`{"n": [1, 2.5]}` makes `n` a `long`), and DECIMAL kept as exact
text becomes `text` that cannot be range-queried. So every field of a created index gets the
type its column and the mapping's options call for:

- TINYINT … BIGINT, BIT: `long` (`unsigned_long` for BIGINT UNSIGNED); YEAR: `short`.
- DECIMAL: `keyword` (exact text); with `decimal: number`, `scaled_float` (scale ≤ 4 and
  precision ≤ 15, exact for every value) or else `double`.
- FLOAT / DOUBLE: `float` / `double`.
- DATE: `date` (`strict_date`); DATETIME, TIMESTAMP: `date` (`strict_date_optional_time`, the
  ISO 8601 the connector writes).
- TIME: `keyword` (durations such as `-838:59:59`); ENUM, SET: `keyword`.
- CHAR, VARCHAR, TEXT: `text` with a `keyword` sub-field (`string_fields` chooses per column).
- JSON (and `json_columns`): `flattened` (`json_fields: object` or `disabled` instead).
- BINARY, BLOB, GEOMETRY: `binary` (left out with `binary: skip`).
- Computed fields: `concat` as text, `date_format` as keyword; the others by dynamic mapping.

Children add their fields inside an object (one-to-one) or a `nested` array. `flattened` is
Elasticsearch's name; the sink (`cdc.sink.elastic`) writes `flat_object` for OpenSearch.
Pure.
"""

from __future__ import annotations

import re
from typing import Any

from cdc.config import ChildMapping, FieldOptions
from cdc.model.events import Column, Kind, TableSchema
from cdc.transform.checks import field_columns
from cdc.transform.trees import Node, Tree

KEYWORD_IGNORE_ABOVE = 256
"""Longer text is not put in the `keyword` sub-field (it is still searchable as text)."""

_DECIMAL = re.compile(r"decimal\((\d+),(\d+)\)")


def field_mapping(column: Column, options: FieldOptions) -> dict[str, Any] | None:
    """The mapping of the field a column becomes; None when it becomes no field."""
    kind = column.kind
    if kind is Kind.JSON or column.name in options.json_columns:
        if options.json_fields == "object":
            return {"type": "object"}
        if options.json_fields == "disabled":
            return {"type": "object", "enabled": False}
        return {"type": "flattened"}
    if kind is Kind.INT:
        big = column.sql_type.startswith("bigint")
        return {"type": "unsigned_long" if big and column.unsigned else "long"}
    if kind is Kind.BIT:
        return {"type": "long"}
    if kind is Kind.YEAR:
        return {"type": "short"}
    if kind is Kind.DECIMAL:
        return _decimal(column, options)
    if kind is Kind.FLOAT:
        return {"type": "float" if column.sql_type.startswith("float") else "double"}
    if kind is Kind.DATE:
        return {"type": "date", "format": "strict_date"}
    if kind is Kind.DATETIME or kind is Kind.TIMESTAMP:
        return {"type": "date", "format": "strict_date_optional_time"}
    if kind is Kind.TIME or kind is Kind.ENUM or kind is Kind.SET:
        return {"type": "keyword"}
    if kind is Kind.STRING:
        how = options.string_fields.get(column.name, "text_keyword")
        if how == "keyword":
            return {"type": "keyword", "ignore_above": KEYWORD_IGNORE_ABOVE}
        if how == "text":
            return {"type": "text"}
        keyword = {"type": "keyword", "ignore_above": KEYWORD_IGNORE_ABOVE}
        return {"type": "text", "fields": {"keyword": keyword}}
    if options.binary == "skip":
        return None
    return {"type": "binary"}


def _decimal(column: Column, options: FieldOptions) -> dict[str, Any]:
    if options.decimal == "string":
        return {"type": "keyword"}
    found = _DECIMAL.match(column.sql_type)
    precision, scale = (int(found[1]), int(found[2])) if found else (65, 30)
    if precision <= 15 and scale <= 4:
        # Stored as a long of value × 10^scale: exact for every value the column holds.
        return {"type": "scaled_float", "scaling_factor": 10**scale}
    return {"type": "double"}


def table_properties(options: FieldOptions, table: TableSchema) -> dict[str, Any]:
    """`properties` of the fields the options make of the table's columns."""
    properties: dict[str, Any] = {}
    for column in field_columns(options, table):
        spec = field_mapping(column, options)
        if spec is not None:
            properties[options.rename.get(column.name, column.name)] = spec
    for name, computed in options.computed.items():
        if computed.concat is not None:
            keyword = {"type": "keyword", "ignore_above": KEYWORD_IGNORE_ABOVE}
            properties[name] = {"type": "text", "fields": {"keyword": keyword}}
        elif computed.date_format is not None:
            properties[name] = {"type": "keyword"}
    return properties


def tree_properties(tree: Tree) -> dict[str, Any]:
    """`properties` of a tree's documents: the root's fields and every child's, nested."""
    return _node_properties(tree.root)


def _node_properties(node: Node) -> dict[str, Any]:
    properties = table_properties(node.options, node.schema) if node.schema else {}
    for child in node.children:
        spec: dict[str, Any] = {"properties": _node_properties(child)}
        options = child.options
        if child.many and isinstance(options, ChildMapping) and options.nested:
            spec["type"] = "nested"
        properties[child.field_name] = spec
    return properties
