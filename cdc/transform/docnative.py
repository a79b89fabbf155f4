"""Documents encoded by compiled code (`cdc.transform._docnative`): a row image straight to
the JSON bytes of its document, with the Python document builder as fallback and oracle.

The streaming path turns every row change into a document and then into JSON; for the common
mapping shape (columns to fields, renamed, included or excluded, static fields, no computed
fields and no `transform` hook) `encoder_for` compiles both steps into one call per row. Its
bytes are exactly `orjson.dumps(document(row))` of the Python builder: ints, strings, None,
bools, BIT text, Decimals, plain JSON text (objects, arrays, strings without escapes,
integers; written without its whitespace, as orjson writes it back) and naive dates and
datetimes (the UTC and TIMESTAMP rules of `cdc.transform.convert`) are written by the C code;
every other value is
converted by its Python converter and written by orjson, and any error sends the row through
the Python path, so it raises what that raises.
`tests/unit/transform/test_docnative.py` compares both on random rows and mapping options.

Used when the extension was built and `CDC_NATIVE` is not `0` (see `cdc.native`).
"""

from __future__ import annotations

import decimal
from collections.abc import Callable
from typing import Any

import orjson

from cdc import native
from cdc.transform.convert import Converter, always_omits, shape_of

Row = dict[str, Any]
Encode = Callable[[Row], bytes]
"""A row image -> the JSON bytes of its document."""

_MODES = {
    "keep": "KEEP",
    "text": "TEXT",
    "date": "DATE",
    "datetime_utc": "DATETIME_UTC",
    "timestamp": "TIMESTAMP",
    "bit": "BIT",
    "json_text": "JSON_TEXT",
    "decimal_text": "DECIMAL_TEXT",
    "decimal_number": "DECIMAL_NUMBER",
    "other": "CONVERT",
}


def available() -> bool:
    """Whether documents are encoded by compiled code in this process (the extension is
    built and `CDC_NATIVE` is not `0`)."""
    return native.enabled() and native.docnative is not None


def encoder_for(
    fields: list[tuple[str, str, Converter]],
    static: dict[str, Any],
    document: Callable[[Row], Row],
) -> Encode | None:
    """The compiled encoder of a document made of `fields` ((column, field name, converter),
    in order) and then `static`, equal to `orjson.dumps(document(row))`; None when compiled
    encoding is not available or the names collide (the Python builder then decides)."""
    compiled = native.docnative
    if not available() or compiled is None:
        return None
    kept = [
        (column, name, convert) for column, name, convert in fields if not always_omits(convert)
    ]
    names = [name for _, name, _ in kept] + list(static)
    if len(set(names)) != len(names):
        return None
    plan = []
    for i, (column, name, convert) in enumerate(kept):
        key = (b"{" if i == 0 else b",") + orjson.dumps(name) + b":"
        plan.append((column, key, getattr(compiled, _MODES[shape_of(convert)]), convert))
    try:
        tail = b"".join(
            (b"{" if not plan and i == 0 else b",")
            + orjson.dumps(name)
            + b":"
            + orjson.dumps(value)
            for i, (name, value) in enumerate(static.items())
        )
    except TypeError:  # a static value orjson refuses: the Python path raises it per row
        return None
    tail += b"}" if plan or static else b"{}"

    def fallback(row: Row) -> bytes:
        return orjson.dumps(document(row))

    encode: Encode = compiled.Encoder(tuple(plan), tail, orjson.dumps, fallback, decimal.Decimal)
    return encode
