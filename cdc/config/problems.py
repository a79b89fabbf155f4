"""The words for a config that does not validate: one line per problem.

Every problem becomes one line, `file:line: field.path: what is wrong (got value)`, naming the
included file for an included table mapping; all problems validation finds are reported
together in one `ConfigError`, in file order and then line order. Secrets (`password`,
`api_key`, passwords inside URLs) are never echoed.

The helpers that find a spot in the YAML node tree (`_Origin`, `_line`) and spell a
value (`_show`) are shared with `cdc.config.loading`, which words the problems it finds while
reading a file (duplicate keys, includes) the same way.
"""

from __future__ import annotations

import difflib
import json
import re
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from cdc.config.base import dotted as _dotted
from cdc.config.models import ConnectorConfig


@dataclass(frozen=True)
class _Origin:
    """Where a piece of the config was written: a file, its node, and its field path there."""

    path: Path
    node: yaml.Node | None
    loc: tuple[str | int, ...]

    def describe(self, loc: tuple[str | int, ...]) -> str:
        """`file:line: field.path` of `loc` below this piece, as a message starts."""
        place = _Place(self.path, _line_at(self.node, loc), _dotted(self.loc + loc))
        return f"{place}: {place.field}" if place.field else str(place)


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


_SECRETS = frozenset({"password", "api_key"})


def _is_secret(part: str | int) -> bool:
    # `sentinel_password` and any other `*_password` field are secrets too.
    return isinstance(part, str) and (part in _SECRETS or part.endswith("_password"))


def _line_at(node: yaml.Node | None, loc: tuple[str | int, ...]) -> int | None:
    """The line of the deepest part of `loc` present in the file (a key's line for keys)."""
    if node is None:
        return None
    line = _line(node)
    for part in loc:
        if isinstance(part, str) and isinstance(node, yaml.MappingNode):
            matches = [(k, v) for k, v in node.value if getattr(k, "value", None) == part]
            if not matches:
                break
            line, node = _line(matches[-1][0]), matches[-1][1]
        elif isinstance(part, int) and isinstance(node, yaml.SequenceNode):
            if not 0 <= part < len(node.value):
                break
            node = node.value[part]
            line = _line(node)
        else:
            break
    return line


@dataclass(frozen=True)
class _Place:
    """A spot the operator must edit: file, line, and field path as written in that file."""

    path: Path
    line: int | None
    field: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}" if self.line is not None else str(self.path)


def _place(loc: tuple[str | int, ...], root: _Origin, origins: list[_Origin]) -> _Place:
    origin, rest = root, loc
    if len(loc) >= 2 and loc[0] == "tables" and isinstance(loc[1], int) and loc[1] < len(origins):
        origin, rest = origins[loc[1]], loc[2:]
    return _Place(origin.path, _line_at(origin.node, rest), _dotted(origin.loc + rest))


def _unwrap(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    if get_origin(annotation) is Annotated:
        return _unwrap(get_args(annotation)[0])
    return annotation


def _annotation_at(loc: tuple[str | int, ...]) -> Any:
    """The declared type at `loc` in ConnectorConfig, or None if `loc` leaves the models."""
    current: Any = ConnectorConfig
    for part in loc:
        current = _unwrap(current)
        if isinstance(part, int) and get_origin(current) is list:
            current = get_args(current)[0]
        elif (
            isinstance(part, str)
            and isinstance(current, type)
            and issubclass(current, BaseModel)
            and part in current.model_fields
        ):
            current = current.model_fields[part].annotation
        else:
            return None
    return _unwrap(current)


def _suggest(word: Any, choices: list[str]) -> str:
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else ""


_URL_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/@:]*):([^/@]*)@")


def split_url_password(url: str) -> tuple[str, str | None, str]:
    """`scheme://user:password@rest` as (`scheme://user`, `password`, `rest`); a URL without a
    password as (url, None, "")."""
    found = _URL_PASSWORD.match(url)
    if found is None:
        return url, None, ""
    return found.group(1), found.group(2), url[found.end() :]


def mask_url(url: str) -> str:
    """`url` with the password of its `user:password@` part, if any, replaced by `***`."""
    head, password, rest = split_url_password(url)
    return url if password is None else f"{head}:***@{rest}"


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        return mask_url(value)
    if isinstance(value, list):
        return [_mask(item) for item in value]
    return value


def _show(value: Any) -> str:
    """A value in JSON spelling (as YAML would accept it back), cut to a readable size."""
    text = json.dumps(_mask(value), ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:76] + " ..."


_MESSAGES = {
    "missing": "required field is missing",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "int_parsing_size": "is too large",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be text; put the value in quotes",
    "list_type": "must be a list",
    "dict_type": "must be a mapping of `key: value` pairs",
    "model_type": "must be a mapping of `key: value` pairs",
    "model_attributes_type": "must be a mapping of `key: value` pairs",
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
    "too_long": "must have at most {max_length} items",
    "value_error": "{error}",
}


def _describe(err: ErrorDetails) -> tuple[str, str]:
    """The complaint about one validation error, and an optional suggestion to put after it."""
    kind, loc = err["type"], tuple(err["loc"])
    # Limits on float fields arrive as floats; `must be greater than 0` reads better than `0.0`.
    ctx = {
        key: int(value) if isinstance(value, float) and value.is_integer() else value
        for key, value in err.get("ctx", {}).items()
    }
    if kind in _MESSAGES:
        return _MESSAGES[kind].format(**ctx), ""
    if kind == "too_short":
        count = ctx.get("min_length", 1)
        return ("must not be empty" if count == 1 else f"must have at least {count} items"), ""
    if kind == "extra_forbidden":
        model = _annotation_at(loc[:-1])
        is_model = isinstance(model, type) and issubclass(model, BaseModel)
        known = list(model.model_fields) if is_model else []
        guess = _suggest(loc[-1], known)
        return ("unknown field" + (f" ({guess})" if guess else "")), (
            f"known fields: {', '.join(known)}"
        )
    allowed = [str(choice) for choice in get_args(_annotation_at(loc))]
    if kind == "literal_error" and allowed:
        choices = ", ".join(f"`{choice}`" for choice in allowed)
        return f"must be one of {choices}", _suggest(err["input"], allowed)
    return err["msg"], ""


def _problem(err: ErrorDetails, root: _Origin, origins: list[_Origin]) -> tuple[_Place, str]:
    """Where one validation error is, and its line `file:line: field.path: complaint (got x)`."""
    loc, ctx = tuple(err["loc"]), err.get("ctx", {})
    if err["type"] in ("duplicate_table", "shadowed_table"):
        place = _place(("tables", ctx["later"], "table"), root, origins)
        first = _place(("tables", ctx["earlier"]), root, origins)
        by = f"{first.field} at {first}" if first.field else str(first)
        if err["type"] == "duplicate_table":
            message = f"`{ctx['pattern']}` is already mapped by {by}; keep one mapping per table"
        else:
            message = (
                f"`{ctx['table']}` can never be used: `{ctx['pattern']}` in {by} matches it "
                "first; move this mapping above that one"
            )
        return place, f"{place}: {place.field}: {message}"
    place = _place(loc, root, origins)
    message, suggestion = _describe(err)
    value = err.get("input")
    if err["type"] not in ("missing", "extra_forbidden") and not isinstance(value, dict):
        hidden = bool(loc) and _is_secret(loc[-1])
        message += " (value hidden)" if hidden else f" (got {_show(value)})"
    if suggestion:
        message += f"; {suggestion}"
    return place, f"{place}: {place.field}: {message}" if place.field else f"{place}: {message}"


def _problems(exc: ValidationError, root: _Origin, origins: list[_Origin]) -> str:
    """All validation errors, one line each, in file order and then line order."""
    files = [root.path, *(origin.path for origin in origins)]
    found = [_problem(err, root, origins) for err in exc.errors()]
    found.sort(key=lambda item: (files.index(item[0].path), item[0].line or 0))
    return "\n".join(line for _, line in found)
