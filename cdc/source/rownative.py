"""Row images decoded by compiled code (`cdc.source._rownative`), with the Python decoder as
fallback and oracle.

`decoder_for` is what the binlog source calls once per table map. It builds the generated
Python decoder of `cdc.source.rowdecode` first (None there means the library decodes the table),
then a plan of the same column list for the C decoder: one entry per column with its type
decisions taken (byte width, length-prefix size, codec, fractional precision, DECIMAL digit
groups, ENUM labels, SET members, BIT width). The C decoder returns exactly what the Python one
returns, quirks included, and hands a call to it whenever the bytes end early, so the two can
only differ by a bug, which `tests/unit/source/test_rownative.py` hunts for on random bytes.

The compiled path is used when the extension was built (`pip install` builds it where a C
compiler exists) and `CDC_NATIVE` is not `0`; otherwise the Python decoder is, and one log line
says so the first time a table is decoded (see `cdc.native`).
"""

from __future__ import annotations

import codecs
import decimal
from collections.abc import Sequence
from typing import Any

from pymysqlreplication.constants import FIELD_TYPE
from pymysqlreplication.json_binary import parse_json

from cdc import native
from cdc.source import rowdecode

_DECIMAL_BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)


def available() -> bool:
    """Whether row images are decoded by compiled code in this process (the extension is
    built and `CDC_NATIVE` is not `0`)."""
    return native.enabled() and native.rownative is not None


def decoder_for(columns: Sequence[Any]) -> rowdecode.ImageDecoder | None:
    """The fastest decoder of full row images of a table map's `columns` (the library's Column
    objects): compiled when possible, else the generated Python one; None when neither reads
    these column types and the library must decode them."""
    python = rowdecode.compile_table(columns)
    if python is None:
        return None
    if not available():
        return python
    return compile_native(columns, python) or python


def compile_native(
    columns: Sequence[Any], fallback: rowdecode.ImageDecoder
) -> rowdecode.ImageDecoder | None:
    """The compiled decoder of `columns`, falling back to `fallback` (their Python decoder)
    on short bytes; None when the extension is missing or a column has a shape it does not
    decode (the Python decoder is then used alone)."""
    compiled = native.rownative
    if compiled is None:
        return None
    plan = []
    for column in columns:
        entry = _plan(compiled, column)
        if entry is None:
            return None
        plan.append(entry)
    names = tuple(column.name or f"UNKNOWN_COL{i}" for i, column in enumerate(columns))
    helpers = (decimal.Decimal, parse_json, rowdecode._datetime2, rowdecode._timestamp)
    decoder: rowdecode.ImageDecoder = compiled.Decoder(names, tuple(plan), fallback, helpers)
    return decoder


_FIXED = {
    (FIELD_TYPE.TINY, False): ("INT8", 1),
    (FIELD_TYPE.TINY, True): ("UINT8", 1),
    (FIELD_TYPE.SHORT, False): ("INT16", 2),
    (FIELD_TYPE.SHORT, True): ("UINT16", 2),
    (FIELD_TYPE.LONG, False): ("INT32", 4),
    (FIELD_TYPE.LONG, True): ("UINT32", 4),
    (FIELD_TYPE.LONGLONG, False): ("INT64", 8),
    (FIELD_TYPE.LONGLONG, True): ("UINT64", 8),
    (FIELD_TYPE.INT24, False): ("INT24", 3),
    (FIELD_TYPE.INT24, True): ("UINT24", 3),
    (FIELD_TYPE.FLOAT, False): ("FLOAT", 4),
    (FIELD_TYPE.FLOAT, True): ("FLOAT", 4),
    (FIELD_TYPE.DOUBLE, False): ("DOUBLE", 8),
    (FIELD_TYPE.DOUBLE, True): ("DOUBLE", 8),
}
_TEMPORAL = {
    FIELD_TYPE.DATETIME2: ("DATETIME2", 5),
    FIELD_TYPE.TIMESTAMP2: ("TIMESTAMP2", 4),
    FIELD_TYPE.TIME2: ("TIME2", 3),
}


def _plan(native: Any, column: Any) -> tuple[int, int, int, Any] | None:
    """(kind, a, width, obj) of one column for the C decoder (see `_rownative.c`), or None
    when the column has a shape only the Python decoder reads. `a` is the length-prefix
    size, fractional precision, ENUM/SET byte size, BIT bit count or DECIMAL scale; `width`
    the fixed byte width (0 for length-prefixed values)."""
    t = column.type
    fixed = _FIXED.get((t, bool(column.unsigned)))
    if fixed is not None:
        return getattr(native, fixed[0]), 0, fixed[1], None
    if t in (FIELD_TYPE.VARCHAR, FIELD_TYPE.STRING):
        return _text(native, column, 2 if column.max_length > 255 else 1)
    if t == FIELD_TYPE.BLOB:
        return _text(native, column, column.length_size)
    if t in (FIELD_TYPE.GEOMETRY, FIELD_TYPE.JSON):
        size = column.length_size
        if not 1 <= size <= 4:
            return None
        return native.BYTES if t == FIELD_TYPE.GEOMETRY else native.JSON, size, 0, None
    if t == FIELD_TYPE.NEWDECIMAL:
        return _decimal(native, column.precision, column.decimals)
    if t == FIELD_TYPE.DATE:
        return native.DATE, 0, 3, None
    if t in _TEMPORAL:
        name, width = _TEMPORAL[t]
        fsp = column.fsp
        if not 0 <= fsp <= 6:
            return None
        return getattr(native, name), fsp, width + (fsp + 1) // 2, None
    if t == FIELD_TYPE.YEAR:
        return native.YEAR, 0, 1, None
    if t == FIELD_TYPE.ENUM:
        if not 1 <= column.size <= 8:
            return None
        labels = list(column.enum_values) if column.enum_values else None
        return native.ENUM, column.size, column.size, labels
    if t == FIELD_TYPE.SET:
        if not 1 <= column.size <= 8:
            return None
        members = tuple(column.set_values) if column.set_values else None
        return native.SET, column.size, column.size, members
    if t == FIELD_TYPE.BIT:
        if not (1 <= column.bits <= 64 and 1 <= column.bytes <= 8):
            return None
        return native.BIT, column.bits, column.bytes, None
    return None


def _text(native: Any, column: Any, size: int) -> tuple[int, int, int, Any] | None:
    """A length-prefixed text column: decoded as UTF-8, by its codec, or kept as bytes when
    Python has no codec for its charset (as `rowdecode._emit_text` decides)."""
    if not 1 <= size <= 4:
        return None
    encoding = rowdecode._encoding(column)
    if encoding is None:
        return native.TEXT_RAW, size, 0, None
    if codecs.lookup(encoding).name == "utf-8":
        return native.TEXT_UTF8, size, 0, None
    return native.TEXT_CODEC, size, 0, encoding


def _decimal(native: Any, precision: int, scale: int) -> tuple[int, int, int, Any] | None:
    """DECIMAL(precision, scale): its digit groups (bytes, digits), most significant first,
    and the Python reader that takes over for a group out of its digit range."""
    if not (0 <= scale <= precision <= 81):
        return None
    width, reader = rowdecode._decimal_reader(precision, scale)
    full_int, part_int = divmod(precision - scale, 9)
    full_frac, part_frac = divmod(scale, 9)
    groups = (
        ([(_DECIMAL_BYTES[part_int], part_int)] if part_int else [])
        + [(4, 9)] * (full_int + full_frac)
        + ([(_DECIMAL_BYTES[part_frac], part_frac)] if part_frac else [])
    )
    if not groups or len(groups) > 16 or width > 40:
        return None
    return native.DECIMAL, scale, width, (reader, tuple(groups))
