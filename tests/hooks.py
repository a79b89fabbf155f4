"""A `transform:` hook the tests import by name, as a user's package would be."""

from __future__ import annotations

from typing import Any


def shout(document: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """Upper-case the name and add its length; row values are the binlog's."""
    name = row.get("first")
    document["first"] = name.upper() if isinstance(name, str) else name
    document["name_length"] = len(name) if isinstance(name, str) else 0
    return document


def broken(document: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    raise ValueError("no such thing")
