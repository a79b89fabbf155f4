"""Row filters: `where:` on a mapping decides which rows are in the index.

The expression is SQL-like: comparisons (`=`, `!=`, `<>`, `<`, `<=`, `>`, `>=`) of a column with
a literal or another column, `in (...)` and `not in (...)`, `is null` and `is not null`,
combined with `and`, `or`, `not` and parentheses. Literals are numbers, 'quoted strings'
(`''` inside is a quote), `true`, `false` and `null`. Keywords are case-insensitive; column
names are as in the table (backquotes allowed).

`cdc.config.expressions` holds the syntax (checked at config load). `RowFilter` binds an
expression to a table: it checks every column and literal against the column types,
evaluates the filter on row images
in the stream, and renders it as SQL for the snapshot's SELECT, with the same meaning on both
sides: SQL's three-valued logic (a comparison with NULL is unknown, and a row matches only when
the whole expression is true), text compared exactly (as `BINARY`, not by collation), numbers
by value, dates and times as values (TIMESTAMP literals in UTC, as the connector's sessions
read them). JSON, binary, SET and BIT columns can only be tested with `is [not] null`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from cdc.config.expressions import (
    Col,
    Compare,
    FilterError,
    In,
    IsNull,
    Lit,
    Logic,
    Node,
    parse,
)
from cdc.model.events import Column, Kind, TableSchema

Row = dict[str, Any]
Truth = bool | None
"""SQL truth: True, False or unknown (None)."""

_NUMERIC = {Kind.INT, Kind.DECIMAL, Kind.FLOAT, Kind.YEAR}
_TEXT = {Kind.STRING, Kind.ENUM}
_TEMPORAL = {Kind.DATE, Kind.DATETIME, Kind.TIMESTAMP, Kind.TIME}


class RowFilter:
    """A parsed expression bound to one table; see the module docstring."""

    def __init__(self, text: str, table: TableSchema) -> None:
        self.text = text
        self._table = table
        self._tree = parse(text)
        self._test = self._compile(self._tree)
        self._render(self._tree, lambda name: name)  # every literal fits before any SQL is asked

    def matches(self, row: Row) -> bool:
        """Whether the row is in the index: the expression is true (not false, not unknown)."""
        return self._test(row) is True

    def sql(self, quote: Callable[[str], str]) -> tuple[str, list[Any]]:
        """The expression as a WHERE condition with `%s` parameters, of the same meaning;
        `quote` quotes a column name (the source's dialect)."""
        return self._render(self._tree, quote)

    # -- binding ------------------------------------------------------------------------------

    def _col(self, col: Col) -> Column:
        column = self._table.column(col.name)
        if column is None:
            known = ", ".join(c.name for c in self._table.columns)
            raise FilterError(
                f"names unknown column {col.name!r}; the table's columns are: {known}"
            )
        return column

    def _value(self, column: Column, lit: Lit) -> Any:
        """A literal as a value comparable with the column's binlog values."""
        value, kind = lit.value, column.kind
        if value is None:
            return None
        if kind in _NUMERIC:
            if isinstance(value, bool):
                return int(value)
            if isinstance(value, str):
                raise FilterError(f"compares number column {column.name!r} with text {value!r}")
            return float(value) if kind is Kind.FLOAT else Decimal(value)
        if kind in _TEXT:
            if not isinstance(value, str):
                raise FilterError(f"compares text column {column.name!r} with {value!r}; quote it")
            return value
        if kind in _TEMPORAL:
            if not isinstance(value, str):
                raise FilterError(
                    f"compares {kind.value.upper()} column {column.name!r} with {value!r}; write "
                    "dates and times as quoted text, e.g. '2024-01-31 12:00:00'"
                )
            return _temporal(kind, value, column.name)
        raise FilterError(
            f"column {column.name!r} is {kind.value.upper()}: it can only be tested with "
            "`is null` or `is not null`"
        )

    def _compile(self, node: Node) -> Callable[[Row], Truth]:
        if isinstance(node, Logic):
            parts = [self._compile(p) for p in node.parts]
            if node.op == "not":
                (inner,) = parts
                return lambda row: None if (t := inner(row)) is None else not t
            if node.op == "and":
                return lambda row: _all([p(row) for p in parts])
            return lambda row: _any([p(row) for p in parts])
        if isinstance(node, IsNull):
            name = self._col(node.column).name
            if node.negated:
                return lambda row: row.get(name) is not None
            return lambda row: row.get(name) is None
        if isinstance(node, In):
            column = self._col(node.column)
            name = column.name
            values = [self._value(column, v) for v in node.values]
            known = [v for v in values if v is not None]
            has_null = len(known) < len(values)
            negated = node.negated

            def member(row: Row) -> Truth:
                value = row.get(name)
                if value is None:
                    return None
                if value in known:
                    return not negated
                return None if has_null else negated

            return member
        return self._comparison(node)

    def _comparison(self, node: Compare) -> Callable[[Row], Truth]:
        test = _OPS[node.op]
        left, right = node.left, node.right
        if isinstance(left, Lit) and isinstance(right, Lit):
            raise FilterError("compares two values; one side must be a column")
        if isinstance(left, Col) and isinstance(right, Col):
            a, b = self._col(left), self._col(right)
            if (a.kind in _NUMERIC) != (b.kind in _NUMERIC) or (
                a.kind not in _NUMERIC and a.kind is not b.kind
            ):
                raise FilterError(f"compares columns {a.name!r} and {b.name!r} of different types")
            if a.kind not in _NUMERIC | _TEXT | _TEMPORAL:
                self._value(a, Lit(""))  # raises: only `is [not] null` fits such a column
            x, y = a.name, b.name
            return lambda row: _compare(test, row.get(x), row.get(y))
        if isinstance(left, Lit):  # `5 < qty` is `qty > 5`
            left, right, test = right, left, _OPS[_FLIPPED[node.op]]
        assert isinstance(left, Col) and isinstance(right, Lit)
        column = self._col(left)
        value = self._value(column, right)
        name = column.name
        return lambda row: _compare(test, row.get(name), value)

    # -- SQL ----------------------------------------------------------------------------------

    def _render(self, node: Node, quote: Callable[[str], str]) -> tuple[str, list[Any]]:
        if isinstance(node, Logic):
            rendered = [self._render(p, quote) for p in node.parts]
            params = [p for _, ps in rendered for p in ps]
            if node.op == "not":
                return f"NOT ({rendered[0][0]})", params
            joiner = " AND " if node.op == "and" else " OR "
            return joiner.join(f"({sql})" for sql, _ in rendered), params
        if isinstance(node, IsNull):
            column = self._col(node.column)
            return f"{quote(column.name)} IS {'NOT ' if node.negated else ''}NULL", []
        if isinstance(node, In):
            column = self._col(node.column)
            target = _sql_column(column, quote)
            params = [self._param(column, v) for v in node.values]
            marks = ", ".join("%s" for _ in params)
            return f"{target} {'NOT ' if node.negated else ''}IN ({marks})", params
        left, right = node.left, node.right
        if isinstance(left, Col) and isinstance(right, Col):
            a, b = self._col(left), self._col(right)
            return f"{_sql_column(a, quote)} {node.op} {_sql_column(b, quote)}", []
        op = node.op
        if isinstance(left, Lit):
            left, right, op = right, left, _FLIPPED[op]
        assert isinstance(left, Col) and isinstance(right, Lit)
        column = self._col(left)
        return f"{_sql_column(column, quote)} {op} %s", [self._param(column, right)]

    def _param(self, column: Column, lit: Lit) -> Any:
        value = self._value(column, lit)
        if isinstance(value, dt.timedelta):
            return lit.value
        return value


def _sql_column(column: Column, quote: Callable[[str], str]) -> str:
    # Text compares exactly on both sides (Python compares code points, as binary UTF-8
    # sorts): not by the column's collation, which may ignore case or accents.
    return f"BINARY {quote(column.name)}" if column.kind in _TEXT else quote(column.name)


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: bool(a == b),
    "!=": lambda a, b: bool(a != b),
    "<": lambda a, b: bool(a < b),
    "<=": lambda a, b: bool(a <= b),
    ">": lambda a, b: bool(a > b),
    ">=": lambda a, b: bool(a >= b),
}
_FLIPPED = {"=": "=", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


def _compare(test: Callable[[Any, Any], bool], a: Any, b: Any) -> Truth:
    if a is None or b is None:
        return None
    return test(a, b)


def _all(values: list[Truth]) -> Truth:
    if any(v is False for v in values):
        return False
    return None if any(v is None for v in values) else True


def _any(values: list[Truth]) -> Truth:
    if any(v is True for v in values):
        return True
    return None if any(v is None for v in values) else False


_TIME = re.compile(r"^(-)?(\d+):(\d{2}):(\d{2})(?:\.(\d{1,6}))?$")


def _temporal(kind: Kind, text: str, name: str) -> Any:
    try:
        if kind is Kind.DATE:
            return dt.date.fromisoformat(text)
        if kind is Kind.TIME:
            found = _TIME.match(text)
            if found is None:
                raise ValueError(text)
            sign, hours, minutes, seconds, fraction = found.groups()
            delta = dt.timedelta(
                hours=int(hours),
                minutes=int(minutes),
                seconds=int(seconds),
                microseconds=int((fraction or "0").ljust(6, "0")),
            )
            return -delta if sign else delta
        value = dt.datetime.fromisoformat(text)
        if value.tzinfo is not None:
            raise ValueError(text)
        return value
    except ValueError:
        shape = {
            Kind.DATE: "'2024-01-31'",
            Kind.TIME: "'12:30:00' or '-838:59:59'",
        }.get(kind, "'2024-01-31 12:30:00' (no time zone; TIMESTAMP in UTC)")
        raise FilterError(f"{text!r} is not a value of column {name!r}; write {shape}") from None


def check(text: str, table: TableSchema) -> str | None:
    """Why the filter does not fit the table, or None when it does."""
    try:
        RowFilter(text, table)
    except FilterError as exc:
        return str(exc)
    except (InvalidOperation, TypeError) as exc:
        return f"cannot be evaluated: {exc}"
    return None
