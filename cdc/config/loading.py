"""Reading a connector config file: `load_config`.

`load_config` reads a file in four steps:

1. The file is parsed as YAML. A key given twice in one mapping is an error (PyYAML alone would
   keep the last one without a word).
2. `${NAME}` and `${NAME:-default}` inside any value (not in comments) are replaced from the
   environment; `:-` also applies when the variable is set but empty, and `$${` writes a
   literal `${`. This happens after parsing, so a value from the environment can never change
   the YAML structure (a `#` or `: ` in a password stays part of the password). A substituted
   value is text: typed fields convert it (`port: ${PORT}` becomes an int, `verify: ${V}` a
   bool), free-form values (`static`, `soft_delete.values`, index settings) keep it a string.
3. Each `- include: <glob>` entry under `tables:` is replaced by the table mappings in the
   matching files, in file-name order. The glob is relative to the including file; a file holds
   one mapping or a list of mappings.
4. The result is validated by the models in `cdc.config.models`. Top-level keys starting with
   `x-` are ignored, so they can hold YAML anchors (`x-defaults: &defaults ...`, then
   `<<: *defaults`). Relative file paths in fields (`sink.tls.*`) are resolved against the
   directory of the config file.

A problem in steps 1 to 3 stops loading with a `ConfigError` naming the file and, where there
is one, the line; the validation errors of step 4 are worded by `cdc.config.problems`.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from cdc.config.base import dotted as _dotted
from cdc.config.models import ConnectorConfig
from cdc.config.problems import _is_secret, _line, _Origin, _problems, _show
from cdc.errors import ConfigError

_REFERENCE = re.compile(
    r"\$\$\{"  # escaped: a literal `${`
    r"|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-((?:[^}$\n]|\$(?!\{))*))?\}"
    r"|\$\{"  # anything else starting with `${` is a mistake worth reporting
)


@dataclass(frozen=True)
class _Reference:
    """One `${...}` as written, and where (line and column count from 1)."""

    text: str
    shown: str
    """The reference as the error quotes it; empty in a secret's line (a password may hold a
    `${`, and what follows it is part of the secret)."""
    name: str | None
    default: str | None
    line: int
    column: int

    def resolve(self, env: Mapping[str, str], source: str) -> tuple[str, ConfigError | None]:
        """The replacement text, or the error to report for it."""
        where = f"{source}:{self.line}:{self.column}"
        if self.text == "$${":
            return "${", None
        if self.name is None:
            what = f"`{self.shown}` is" if self.shown else "a `${` that is"
            return "", ConfigError(
                f"{where}: {what} not a valid variable reference",
                hint="write ${NAME} or ${NAME:-default}, or $${ for a literal ${",
            )
        value = env.get(self.name)
        if value is not None and not (value == "" and self.default is not None):
            return value, None
        if self.default is not None:
            return self.default, None
        return "", ConfigError(
            f"{where}: environment variable {self.name} is not set and has no default",
            hint=f"export {self.name}=... or write ${{{self.name}:-default}} in the file",
        )


_KEY = re.compile(r"^\s*(?:-\s+)?([A-Za-z_][\w-]*)\s*:")


def _secret_line(line: str) -> bool:
    key = _KEY.match(line)
    return "://" in line or (key is not None and _is_secret(key[1]))


def _find_references(text: str) -> list[tuple[re.Match[str], _Reference]]:
    found = []
    for match in _REFERENCE.finditer(text):
        line_start = text.rfind("\n", 0, match.start()) + 1
        line = text.count("\n", 0, match.start()) + 1
        column = match.start() - line_start + 1
        # Show a malformed reference up to its closing brace or the end of the word, unless
        # the line holds a secret: a password, or a URL that may carry one.
        shown = re.match(r"\$\{[^}\s]{0,40}\}?", text[match.start() :])
        line_end = text.find("\n", match.start())
        secret = _secret_line(text[line_start : line_end if line_end >= 0 else len(text)])
        reference = _Reference(
            text=match[0],
            shown="" if secret else shown[0] if shown else match[0],
            name=match[1],
            default=match[2],
            line=line,
            column=column,
        )
        found.append((match, reference))
    return found


# References are swapped for placeholders before YAML parsing and filled in afterwards, inside
# scalar values only: `${X}` may then sit anywhere (`[${A}, ${B}]`, quoted or not), a value
# from the environment cannot change the YAML structure, and a reference inside a comment is
# ignored. A placeholder is as long as its reference so YAML error columns stay true; it is
# built from private-use characters, which YAML accepts in plain scalars.
_MARK, _FILL, _FIRST_INDEX, _LAST_INDEX = "\ue000", "\ue001", 0xE100, 0xF8FF
_PLACEHOLDER = re.compile(f"{_MARK}([\\ue100-\\uf8ff]){_FILL}*")


def _with_placeholders(text: str, path: Path) -> tuple[str, list[_Reference]]:
    found = _find_references(text)
    if _MARK in text or len(found) > _LAST_INDEX - _FIRST_INDEX:
        raise ConfigError(f"{path}: unsupported file: character U+E000 or over 6000 `${{`")
    parts, end = [], 0
    for index, (match, reference) in enumerate(found):
        filler = _FILL * (len(reference.text) - 2)
        parts += [text[end : match.start()], _MARK + chr(_FIRST_INDEX + index) + filler]
        end = match.end()
    return "".join([*parts, text[end:]]), [reference for _, reference in found]


def _fill_placeholders(
    root: yaml.Node, references: list[_Reference], path: Path, env: Mapping[str, str]
) -> list[ConfigError]:
    errors: list[ConfigError] = []

    def fill(match: re.Match[str]) -> str:
        value, error = references[ord(match[1]) - _FIRST_INDEX].resolve(env, str(path))
        if error is not None:
            errors.append(error)
        return value

    for node, _ in _walk(root, (), set()):
        keys = [key for key, _ in node.value] if isinstance(node, yaml.MappingNode) else []
        for scalar in [node, *keys]:
            if isinstance(scalar, yaml.ScalarNode) and _MARK in scalar.value:
                scalar.value = _PLACEHOLDER.sub(fill, scalar.value)
    return errors


@dataclass(frozen=True)
class _Document:
    """A parsed YAML file: its data and the node tree that remembers line numbers."""

    path: Path
    data: Any
    node: yaml.Node | None


def _read_document(path: Path, env: Mapping[str, str], included_from: str = "") -> _Document:
    suffix = f" (included from {included_from})" if included_from else ""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found{suffix}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a YAML file{suffix}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (bad byte at offset {exc.start}){suffix}",
            hint="save the file as UTF-8",
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read: {exc.strerror}{suffix}",
            hint="make the file readable by the user running the connector",
        ) from None
    marked, references = _with_placeholders(text, path)
    loader = yaml.SafeLoader(marked)
    try:
        node = loader.get_single_node()
        if node is None:
            return _Document(path, None, None)
        errors = _duplicate_keys(node, path) + _fill_placeholders(node, references, path, env)
        if errors:
            hint = errors[0].hint if len(errors) == 1 else None
            raise ConfigError("\n".join(error.message for error in errors), hint=hint)
        return _Document(path, loader.construct_document(node), node)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(_yaml_problem(path, exc), hint=_yaml_hint(exc)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    finally:
        loader.dispose()


def _yaml_problem(path: Path, exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
    if exc.problem and exc.problem.startswith("but ") and exc.context:
        # PyYAML splits "expected X, but found Y" into context and problem.
        return f"{where}: invalid YAML: {exc.context}, {exc.problem}"
    message = f"{where}: invalid YAML: {exc.problem or exc.context}"
    if exc.problem and exc.context and exc.context_mark:
        message += f" ({exc.context} on line {exc.context_mark.line + 1})"
    return message


def _yaml_hint(exc: yaml.MarkedYAMLError) -> str | None:
    problem = exc.problem or ""
    if "\\t" in problem:
        return "indent with spaces; YAML does not allow tabs"
    if "mapping values are not allowed" in problem:
        return "check the indentation, and quote a value that contains `: `"
    return None


def _walk(
    node: yaml.Node, loc: tuple[str | int, ...], seen: set[int]
) -> Iterator[tuple[yaml.Node, tuple[str | int, ...]]]:
    """Yield (node, loc) for every node once, following anchors only on first sight."""
    if id(node) in seen:
        return
    seen.add(id(node))
    yield node, loc
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else "?"
            yield from _walk(value, (*loc, name), seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _walk(item, (*loc, i), seen)


def _duplicate_keys(root: yaml.Node, path: Path) -> list[ConfigError]:
    problems: list[ConfigError] = []
    for node, loc in _walk(root, (), set()):
        if not isinstance(node, yaml.MappingNode):
            continue
        first_line: dict[str, int] = {}
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.value == "<<":
                continue
            if key.value in first_line:
                problems.append(
                    ConfigError(
                        f"{path}:{_line(key)}: {_dotted((*loc, key.value))}: given twice "
                        f"(first on line {first_line[key.value]})",
                        hint="remove one of them; YAML would keep only the last",
                    )
                )
            else:
                first_line[key.value] = _line(key)
    return problems


def _is_include(entry: Any) -> bool:
    return (
        isinstance(entry, dict) and set(entry) == {"include"} and isinstance(entry["include"], str)
    )


def _child(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    found = None
    for key_node, value in node.value:
        # After merge keys are flattened the explicit key comes last and is the one that counts.
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            found = value
    return found


def _resolve_tables(doc: _Document, env: Mapping[str, str]) -> tuple[Any, list[_Origin]]:
    """The `tables` list with includes replaced, and where each resulting mapping came from."""
    raw = doc.data.get("tables")
    node = _child(doc.node, "tables")
    if not isinstance(raw, list) or not isinstance(node, yaml.SequenceNode):
        return raw, []
    tables: list[Any] = []
    origins: list[_Origin] = []
    for i, (entry, entry_node) in enumerate(zip(raw, node.value, strict=True)):
        if not _is_include(entry):
            tables.append(entry)
            origins.append(_Origin(doc.path, entry_node, ("tables", i)))
            continue
        pattern = entry["include"]
        where = f"{doc.path}:{_line(entry_node)}"
        full = pattern if os.path.isabs(pattern) else str(doc.path.parent / pattern)
        files = sorted(glob.glob(full))
        if not files:
            raise ConfigError(
                f"{where}: tables[{i}].include: {_show(pattern)} matches no file",
                hint=f"the pattern is relative to {doc.path.parent.absolute()}",
            )
        for name in files:
            file = Path(name)
            if file.absolute() == doc.path.absolute():
                raise ConfigError(
                    f"{where}: tables[{i}].include: {_show(pattern)} matches this file itself",
                    hint="keep table mappings in their own directory, e.g. tables/*.yaml",
                )
            included = _read_document(file, env, included_from=where)
            if included.data is None:
                raise ConfigError(
                    f"{file}: the file is empty (included from {where})",
                    hint="give a table mapping (`table:`, `index:`, ...) or delete the file",
                )
            items: list[tuple[Any, yaml.Node | None, tuple[int, ...]]]
            if isinstance(included.data, list) and isinstance(included.node, yaml.SequenceNode):
                items = [
                    (item, n, (j,))
                    for j, (item, n) in enumerate(
                        zip(included.data, included.node.value, strict=True)
                    )
                ]
            else:
                items = [(included.data, included.node, ())]
            for item, item_node, loc in items:
                if _is_include(item) and item_node is not None:
                    raise ConfigError(
                        f"{file}:{_line(item_node)}: includes cannot be nested "
                        f"(included from {where})",
                        hint="list every include in the connector file",
                    )
                tables.append(item)
                origins.append(_Origin(file, item_node, loc))
    return tables, origins


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "text"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__


def load_config(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> ConnectorConfig:
    """Read, expand and validate a connector config.

    `env` replaces `os.environ` for `${NAME}` expansion. Raises ConfigError with one line per
    problem, each naming the file (the included file for an included table mapping), the line,
    the field path and the offending value.
    """
    file = Path(path)
    environ = os.environ if env is None else env
    doc = _read_document(file, environ)
    if doc.data is None:
        raise ConfigError(
            f"{file}: the file is empty; expected connector settings",
            hint="start from configs/connector.yaml",
        )
    if not isinstance(doc.data, dict) or doc.node is None:
        line = f":{_line(doc.node)}" if doc.node is not None else ""
        raise ConfigError(
            f"{file}{line}: expected connector settings (`name:`, `source:`, ...) at the top "
            f"level, got {_kind(doc.data)}"
        )
    tables, origins = _resolve_tables(doc, environ)
    raw = {key: value for key, value in doc.data.items() if not str(key).startswith("x-")}
    if "tables" in raw:
        raw["tables"] = tables
    try:
        cfg = ConnectorConfig.model_validate(raw, context={"base_dir": file.parent})
    except ValidationError as exc:
        raise ConfigError(_problems(exc, _Origin(file, doc.node, ()), origins)) from None
    # Problems found later, against the live schema, name the spot too.
    for mapping, origin in zip(cfg.tables, origins, strict=True):
        mapping._origin = origin
    return cfg
