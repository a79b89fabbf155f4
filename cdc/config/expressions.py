"""The syntax of a mapping's `where:` (row filters): tokens, grammar and the expression tree.

This is what a valid expression is, checked when the config loads; what it means for a table's
rows (binding columns, evaluating row images, rendering SQL) is `cdc.transform.filters`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

_TOKEN = re.compile(
    r"\s*(?:(?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)|(?P<string>'(?:[^']|'')*')"
    r"|(?P<quoted>`(?:[^`]|``)+`)|(?P<op><=|>=|<>|!=|=|<|>|\(|\)|,)|(?P<word>[A-Za-z_][\w$]*))"
)
_KEYWORDS = {"and", "or", "not", "in", "is", "null", "true", "false"}


class FilterError(ValueError):
    """The expression is malformed, or does not fit the table."""


@dataclass(frozen=True, slots=True)
class Col:
    name: str


@dataclass(frozen=True, slots=True)
class Lit:
    value: Any
    """int, Decimal, str, bool or None."""


@dataclass(frozen=True, slots=True)
class Compare:
    op: str
    left: Col | Lit
    right: Col | Lit


@dataclass(frozen=True, slots=True)
class In:
    column: Col
    values: tuple[Lit, ...]
    negated: bool


@dataclass(frozen=True, slots=True)
class IsNull:
    column: Col
    negated: bool


@dataclass(frozen=True, slots=True)
class Logic:
    op: str
    """`and`, `or` or `not` (one part)."""
    parts: tuple[Node, ...]


Node = Compare | In | IsNull | Logic


def parse(text: str) -> Node:
    """The expression's tree; FilterError saying where it is malformed."""
    return _Parser(text).parse()


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []
        at = 0
        while at < len(text):
            if text[at:].strip() == "":
                break
            found = _TOKEN.match(text, at)
            if found is None or found.end() == at:
                raise FilterError(f"unexpected {text[at:].strip()[:20]!r} at character {at + 1}")
            kind = found.lastgroup
            assert kind is not None
            self.tokens.append((kind, found.group(kind), found.start(kind)))
            at = found.end()
        self.at = 0

    def parse(self) -> Node:
        if not self.tokens:
            raise FilterError("is empty")
        node = self._or()
        if self.at < len(self.tokens):
            _, value, where = self.tokens[self.at]
            raise FilterError(f"unexpected {value!r} at character {where + 1}")
        return node

    def _peek(self) -> tuple[str, str]:
        if self.at >= len(self.tokens):
            return "", ""
        kind, value, _ = self.tokens[self.at]
        return kind, value.lower() if kind == "word" else value

    def _take(self, *wanted: str) -> str:
        kind, value = self._peek()
        if value not in wanted:
            where = "the end" if not kind else f"{self.tokens[self.at][1]!r}"
            raise FilterError(f"expected {' or '.join(repr(w) for w in wanted)}, found {where}")
        self.at += 1
        return value

    def _or(self) -> Node:
        parts = [self._and()]
        while self._peek() == ("word", "or"):
            self.at += 1
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else Logic("or", tuple(parts))

    def _and(self) -> Node:
        parts = [self._not()]
        while self._peek() == ("word", "and"):
            self.at += 1
            parts.append(self._not())
        return parts[0] if len(parts) == 1 else Logic("and", tuple(parts))

    def _not(self) -> Node:
        if self._peek() == ("word", "not"):
            self.at += 1
            return Logic("not", (self._not(),))
        return self._predicate()

    def _predicate(self) -> Node:
        if self._peek() == ("op", "("):
            self.at += 1
            node = self._or()
            self._take(")")
            return node
        left = self._operand()
        kind, value = self._peek()
        if value == "is":
            self.at += 1
            negated = self._peek() == ("word", "not")
            if negated:
                self.at += 1
            self._take("null")
            return IsNull(_column(left, "is null"), negated)
        negated = value == "not"
        if negated:
            self.at += 1
            kind, value = self._peek()
            if value != "in":
                raise FilterError("`not` after an operand must be followed by `in`")
        if value == "in":
            self.at += 1
            self._take("(")
            values = [_literal(self._operand(), "in (...)")]
            while self._peek() == ("op", ","):
                self.at += 1
                values.append(_literal(self._operand(), "in (...)"))
            self._take(")")
            return In(_column(left, "in"), tuple(values), negated)
        if kind == "op" and value in ("=", "!=", "<>", "<", "<=", ">", ">="):
            self.at += 1
            op = "!=" if value == "<>" else value
            return Compare(op, left, self._operand())
        raise FilterError(f"expected a comparison, `in` or `is null` after {self._describe(left)}")

    def _operand(self) -> Col | Lit:
        if self.at >= len(self.tokens):
            raise FilterError("ends where a column or a value was expected")
        kind, value, where = self.tokens[self.at]
        self.at += 1
        if kind == "number":
            try:
                return Lit(int(value))
            except ValueError:
                return Lit(Decimal(value))
        if kind == "string":
            return Lit(value[1:-1].replace("''", "'"))
        if kind == "quoted":
            return Col(value[1:-1].replace("``", "`"))
        if kind == "word":
            word = value.lower()
            if word in ("true", "false"):
                return Lit(word == "true")
            if word == "null":
                return Lit(None)
            if word in _KEYWORDS:
                raise FilterError(f"unexpected keyword {value!r} at character {where + 1}")
            return Col(value)
        raise FilterError(f"unexpected {value!r} at character {where + 1}")

    @staticmethod
    def _describe(operand: Col | Lit) -> str:
        return f"column {operand.name!r}" if isinstance(operand, Col) else repr(operand.value)


def _column(operand: Col | Lit, what: str) -> Col:
    if not isinstance(operand, Col):
        raise FilterError(f"`{what}` needs a column on its left, not {operand.value!r}")
    return operand


def _literal(operand: Col | Lit, what: str) -> Lit:
    if not isinstance(operand, Lit):
        raise FilterError(f"`{what}` takes values, not column {operand.name!r}")
    return operand


def columns_of(node: Node) -> list[str]:
    """Every column the expression names, in order, each once."""
    found: dict[str, None] = {}

    def walk(n: Node | Col | Lit) -> None:
        if isinstance(n, Col):
            found[n.name] = None
        elif isinstance(n, Compare):
            walk(n.left)
            walk(n.right)
        elif isinstance(n, In | IsNull):
            walk(n.column)
        elif isinstance(n, Logic):
            for part in n.parts:
                walk(part)

    walk(node)
    return list(found)
