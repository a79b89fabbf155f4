"""The JSON Schema of a connector config file, for editors (`cdc schema`).

Built from the pydantic models, so every field's docstring becomes its description. What the
models do not say is added: an entry of `tables:` may be `{include: <glob>}`, `order_by` may
be one column name, and any number or boolean may be written as a `${NAME}` reference to the
environment (the file is checked before the environment is read).
`configs/connector.schema.json` is this schema; the example configs name it in a
`yaml-language-server` comment line.
"""

from __future__ import annotations

from typing import Any

from cdc.config.models import ConnectorConfig

SCHEMA_URL = "https://json-schema.org/draft/2020-12/schema"
_ENV = {"type": "string", "pattern": r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}"}
_INCLUDE = {
    "type": "object",
    "properties": {
        "include": {
            "type": "string",
            "description": "Glob of YAML files (relative to this file), each holding one table "
            "mapping or a list of them.",
        }
    },
    "required": ["include"],
    "additionalProperties": False,
}


def config_schema() -> dict[str, Any]:
    """The JSON Schema of a config file (a plain dict, stable key order)."""
    schema = ConnectorConfig.model_json_schema(mode="validation")
    _allow_env(schema)
    tables = schema["properties"]["tables"]
    tables["items"] = {"anyOf": [tables["items"], _INCLUDE]}
    # `order_by: created_at` is short for a list of one (a before-validator the schema misses).
    order = schema["$defs"]["ChildMapping"]["properties"]["order_by"]
    order["anyOf"] = [{"type": "string"}, {"type": "array", "items": order.pop("items")}]
    order.pop("type")
    return {
        "$schema": SCHEMA_URL,
        "title": "binlog-es-cdc connector config",
        **{k: v for k, v in schema.items() if k != "title"},
    }


def _allow_env(node: Any) -> None:
    """Let every number and boolean also be a `${NAME}` reference, in place."""
    if isinstance(node, dict):
        for value in node.values():
            _allow_env(value)
        for key in ("properties", "$defs"):
            children = node.get(key)
            if isinstance(children, dict):
                for name, child in children.items():
                    if key == "properties" and _scalar(child):
                        children[name] = _with_env(child)
    elif isinstance(node, list):
        for item in node:
            _allow_env(item)


def _scalar(node: dict[str, Any]) -> bool:
    kinds = {node.get("type")} | {o.get("type") for o in node.get("anyOf", [])}
    return bool(kinds & {"integer", "number", "boolean"})


def _with_env(node: dict[str, Any]) -> dict[str, Any]:
    described: dict[str, Any] = {
        k: node[k] for k in ("description", "default", "title") if k in node
    }
    rest = {k: v for k, v in node.items() if k not in described}
    return {**described, "anyOf": [rest, _ENV]}
