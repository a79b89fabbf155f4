"""What every config model shares: frozen, unknown fields refused, docstrings as the field
descriptions of the JSON Schema; and the field-path spelling of messages."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigModel(BaseModel):
    """The base of every config model."""

    # The docstring under each field is its description in the JSON Schema (`cdc schema`).
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


def dotted(loc: tuple[str | int, ...]) -> str:
    """A field path as written in messages: `tables[1].include[0]`."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def is_glob(pattern: str) -> bool:
    return any(char in pattern for char in "*?[")
