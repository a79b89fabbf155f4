"""Turn one decoded binlog value into its JSON document value.

Input values are what python-mysql-replication 1.0.17 decodes (see `cdc.model.events`); the column's
`Kind` says which MySQL type family a value came from. Output values are what the sink
serializes with orjson: None, bool, int, float, str, list, dict, or `orjson.Fragment` (an exact
JSON number copied verbatim into the document). A converter may also return `OMIT`, meaning
"leave this field out of the document".

The conversion rules, by kind (None, SQL NULL, is always None unless the field is omitted):

- INT: int, exact (unsigned BIGINT up to 2**64-1 included).
- DECIMAL: "string" -> fixed-point text keeping the scale ("12.30", "0.00000001", never "1E-8");
  "number" -> the same digits as an exact JSON number (`orjson.Fragment`), never a float.
- FLOAT: float as decoded. FLOAT(4-byte) columns show their binary rounding (0.1 arrives as
  0.10000000149011612) because the table map kind does not tell FLOAT from DOUBLE.
- DATE: "YYYY-MM-DD". Zero dates ("0000-00-00") arrive as None.
- DATETIME: local time in `ConvertOptions.time_zone`, written as ISO 8601 with that zone's UTC
  offset at that instant ("2024-07-01T12:30:00.250000+02:00"), "Z" when the zone is UTC.
  Fractions are written (6 digits) only when non-zero. Ambiguous local times (DST fall-back)
  take the first occurrence (fold=0); times in a spring-forward gap take the offset in force
  before the gap. Historical offsets with seconds (local mean time before ~1900) cannot be
  written as ISO 8601 `±HH:MM`, so such instants are written in UTC with "Z".
- TIMESTAMP: the library decodes it to naive UTC; written as "....Z", same fraction rule.
  The zero TIMESTAMP is stored as second 0 of the epoch and decodes to 1970-01-01 00:00:00,
  which is below TIMESTAMP's range (it starts at 00:00:01 UTC), so that value becomes None.
- TIME: "[-]HH:MM:SS[.ffffff]", hours at least two digits and up to 838
  ("-838:59:59", "100:00:00.500000"); 6 fraction digits only when non-zero.
- YEAR: int. The library decodes YEAR 0000 as 1900 (stored byte 0 + 1900); 1900 is outside
  YEAR's range (1901-2155), so it becomes None like the zero dates.
- STRING, ENUM: str as decoded from the column's charset. Bytes for a STRING column mean the
  library could not decode the charset: MappingError naming the column.
- SET: sorted list of str. Limitation: the library decodes the empty set to None, so both NULL
  and '' become null.
- BIT: int ('101' -> 5; int and bytes input accepted).
- JSON: MySQL's binary JSON (dicts with bytes keys, bytes strings, nested lists) and MariaDB's
  JSON text (str) both become the same plain JSON value; scalars (numbers, true, null, strings)
  survive. Decimals inside MySQL JSON stay exact numbers; temporal values inside MySQL JSON
  (from CASTs) become naive ISO strings. Invalid JSON text and partial JSON updates
  (`binlog_row_value_options=PARTIAL_JSON`) raise MappingError naming the column.
- BINARY, GEOMETRY (bytes, WKB for geometry): "base64" -> standard base64 text;
  "skip" -> `OMIT` for every value, NULL included, so the field never appears.
"""

from __future__ import annotations

import base64
import datetime as dt
import weakref
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

import orjson

from cdc.errors import MappingError
from cdc.model.events import Column, Kind

Converter = Callable[[Any], Any]
"""Turns one decoded value of a column into its document value (or `OMIT`)."""


class _Omit:
    __slots__ = ()

    def __repr__(self) -> str:
        return "OMIT"


OMIT: Final = _Omit()
"""Returned by a converter when the field must be left out of the document."""

_UTC_KEYS = frozenset(
    {"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Etc/Universal", "Universal", "Etc/Zulu", "Zulu"}
)
_EPOCH = dt.datetime(1970, 1, 1)
_ZERO_YEAR = 1900
_SHAPES: weakref.WeakKeyDictionary[Converter, ConverterShape] = weakref.WeakKeyDictionary()
"""The shapes of converters made per column (see `shape_of`)."""
_PARTIAL_JSON_HINT = (
    "set binlog_row_value_options='' on the server: partial JSON updates carry only a diff, "
    "not the full value a document needs"
)


@dataclass(frozen=True, slots=True)
class ConvertOptions:
    """Per-mapping choices that change how values are written."""

    decimal: Literal["string", "number"] = "string"
    binary: Literal["base64", "skip"] = "base64"
    time_zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    """Zone of naive DATETIME values."""


def to_json_value(value: Any, column: Column, opts: ConvertOptions) -> Any:
    """Convert one value; see the module docstring for the rules. Raises MappingError."""
    return converter_for(column, opts)(value)


def converter_for(column: Column, opts: ConvertOptions) -> Converter:
    """Build the converter of one column once, to be called for each of its values.

    The converter raises MappingError naming the column when a value cannot be converted.
    """
    name = column.name
    kind = column.kind
    if kind is Kind.INT or kind is Kind.FLOAT or kind is Kind.ENUM:
        return _identity
    if kind is Kind.DECIMAL:
        return _decimal_number if opts.decimal == "number" else _decimal_string
    if kind is Kind.DATE:
        return _date
    if kind is Kind.DATETIME:
        return _datetime_converter(opts.time_zone)
    if kind is Kind.TIMESTAMP:
        return _timestamp
    if kind is Kind.TIME:
        return _time
    if kind is Kind.YEAR:
        return _year
    if kind is Kind.STRING:
        return _string_converter(name)
    if kind is Kind.SET:
        return _set
    if kind is Kind.BIT:
        return _bit
    if kind is Kind.JSON:
        return _json_converter(name)
    if kind is Kind.BINARY or kind is Kind.GEOMETRY:
        return _omit if opts.binary == "skip" else _base64
    raise AssertionError(f"unhandled column kind {kind}")


def field_converter(
    column: Column, opts: ConvertOptions, json_columns: Collection[str] = ()
) -> Converter:
    """The converter of a column's field: JSON text parsed for a column in `json_columns`."""
    if column.name in json_columns and column.kind is not Kind.JSON:
        return json_text_converter(column)
    return converter_for(column, opts)


def passes_through(convert: Converter) -> bool:
    """True when `convert` returns every value unchanged (so callers may skip the call)."""
    return convert is _identity


def always_omits(convert: Converter) -> bool:
    """True when `convert` returns `OMIT` for every value (the field never appears)."""
    return convert is _omit


ConverterShape = Literal[
    "keep",
    "text",
    "date",
    "datetime_utc",
    "timestamp",
    "bit",
    "json_text",
    "decimal_text",
    "decimal_number",
    "other",
]


def shape_of(convert: Converter) -> ConverterShape:
    """What a converter does, for compiled code that writes some of them itself
    (`cdc.transform.docnative`): "keep" returns its value; "text" returns None and str as they
    are (and raises on anything else); "date" writes a date as `isoformat()`; "datetime_utc" a
    naive datetime as `isoformat() + "Z"`; "timestamp" the same, with the epoch as None;
    "other" must be called."""
    if convert is _identity:
        return "keep"
    if convert is _date:
        return "date"
    if convert is _timestamp:
        return "timestamp"
    if convert is _datetime_utc:
        return "datetime_utc"
    if convert is _bit:
        return "bit"
    if convert is _decimal_string:
        return "decimal_text"
    if convert is _decimal_number:
        return "decimal_number"
    return _SHAPES.get(convert, "other")


def json_text_converter(column: Column) -> Converter:
    """Converter for a text or binary column listed in `json_columns`: parse its JSON text.

    Unlike a native JSON column, whose bytes are a decoded MySQL JSON string scalar, bytes here
    are the column's raw content (JSON kept in a BLOB) and are parsed as UTF-8 JSON text.
    """
    name = column.name

    def convert(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, (str, bytes)):
            return _parse_json_text(value, name)
        raise MappingError(f"column {name!r}: expected JSON text, got {type(value).__name__}")

    _SHAPES[convert] = "json_text"
    return convert


def _format_time(value: dt.timedelta) -> str:
    micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    sign = "-" if micros < 0 else ""
    hours, rest = divmod(abs(micros), 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    seconds, fraction = divmod(rest, 1_000_000)
    if fraction:
        return f"{sign}{hours:02d}:{minutes:02d}:{seconds:02d}.{fraction:06d}"
    return f"{sign}{hours:02d}:{minutes:02d}:{seconds:02d}"


def _identity(value: Any) -> Any:
    return value


def _omit(value: Any) -> Any:
    return OMIT


def _decimal_string(value: Any) -> Any:
    # "f" keeps the scale and never switches to exponent notation as str() does ("1E-8").
    return None if value is None else format(value, "f")


def _decimal_number(value: Any) -> Any:
    return None if value is None else orjson.Fragment(format(value, "f"))


def _date(value: Any) -> Any:
    return None if value is None else value.isoformat()


def _datetime_converter(zone: ZoneInfo) -> Converter:
    if zone.key in _UTC_KEYS:
        return _datetime_utc

    def local(value: Any) -> Any:
        if value is None:
            return None
        aware = value.replace(tzinfo=zone)
        offset = aware.utcoffset()
        if offset is not None and offset.seconds % 60:
            return (value - offset).isoformat() + "Z"
        return aware.isoformat()

    return local


def _datetime_utc(value: Any) -> Any:
    return None if value is None else value.isoformat() + "Z"


def _timestamp(value: Any) -> Any:
    if value is None or value == _EPOCH:
        return None
    return value.isoformat() + "Z"


def _time(value: Any) -> Any:
    return None if value is None else _format_time(value)


def _year(value: Any) -> Any:
    return None if value is None or value == _ZERO_YEAR else value


def _string_converter(name: str) -> Converter:
    def convert(value: Any) -> Any:
        if value is None or isinstance(value, str):
            return value
        raise MappingError(
            f"column {name!r}: text arrived as {type(value).__name__}, "
            "so its character set could not be decoded",
            hint="use a character set Python can decode (utf8mb4 recommended) for this column, "
            "or list it under `exclude` in the mapping",
        )

    _SHAPES[convert] = "text"
    return convert


def _set(value: Any) -> Any:
    return None if value is None else sorted(value)


def _bit(value: Any) -> Any:
    if value is None or value.__class__ is int:
        return value
    if isinstance(value, str):
        return int(value, 2)
    if isinstance(value, bytes):
        return int.from_bytes(value, "big")
    return int(value)


def _base64(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, str):
        # Without charset metadata the library decodes binary columns as strict UTF-8, so
        # encoding back gives the original bytes.
        value = value.encode("utf-8")
    return base64.b64encode(value).decode("ascii")


def _json_converter(name: str) -> Converter:
    def convert(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            return _parse_json_text(value, name)
        try:
            return _plain_json(value)
        except UnicodeDecodeError:
            raise MappingError(f"column {name!r}: JSON string is not valid UTF-8") from None
        except TypeError as exc:
            raise MappingError(
                f"column {name!r}: JSON value of unexpected type {exc.args[0]}",
                hint=_PARTIAL_JSON_HINT,
            ) from None

    _SHAPES[convert] = "json_text"
    return convert


def _parse_json_text(text: str | bytes, name: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise MappingError(
            f"column {name!r}: invalid JSON text: {exc}",
            hint="fix the stored value, or remove the column from `json_columns`",
        ) from None


_JSON_SCALARS = frozenset({int, float, bool, str, type(None)})


def _plain_json(value: Any) -> Any:
    """MySQL binary JSON as decoded by the library -> plain JSON values (raises TypeError)."""
    cls = value.__class__
    if cls is dict:
        return {
            (key.decode("utf-8") if key.__class__ is bytes else key): _plain_json(item)
            for key, item in value.items()
        }
    if cls is list:
        return [_plain_json(item) for item in value]
    if cls is bytes:
        return value.decode("utf-8")
    if cls in _JSON_SCALARS:
        return value
    if cls is Decimal:
        return orjson.Fragment(format(value, "f"))
    if cls is dt.datetime or cls is dt.date or cls is dt.time:
        return value.isoformat()
    raise TypeError(cls.__name__)
