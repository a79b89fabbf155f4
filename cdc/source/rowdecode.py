"""Row images decoded straight from a rows event's bytes, one compiled function per table map.

python-mysql-replication decodes each value through a chain of generic calls (a type dispatch,
a packet wrapper read, a struct unpack), which made it about 95% of the connector's CPU time.
Here the column list of a table map is turned, once, into the source of one Python function
that decodes a whole row image with the type dispatch resolved, reading by offset from the
event's bytes. The library still parses the protocol, the event headers and the table maps;
only the row data is read here.

The values are exactly the library's (1.0.17), quirks included, because everything downstream
(`cdc.transform.convert`) is written against them: `tests/unit/source/test_rowdecode.py` proves it
by decoding random bytes with both, and `tests/integration/source/test_rowdecode_mariadb.py` with
random rows written to a real server. Where the library would raise on bad bytes, so does this
decoder.

Only what the connector needs at speed is compiled: full row images (`binlog_row_image=FULL`,
which `cdc check` requires) of the column types in `_TEMPLATES`. Anything else (a MINIMAL
image, MySQL's partial JSON updates, the pre-5.6 temporal types) makes `compile_table` return
None, and the caller falls back to the library for that table.
"""

from __future__ import annotations

import codecs
import datetime
import decimal
import struct
from collections.abc import Callable, Sequence
from typing import Any

from pymysqlreplication.constants import BINLOG, FIELD_TYPE
from pymysqlreplication.json_binary import parse_json
from pymysqlreplication.row_event import RowsEvent

Image = dict[str, Any]
ImageDecoder = Callable[[bytes, int, int], list[Image]]
"""(event body, start offset, end offset) -> the row images in the body, in order."""

_DECIMAL_DIGITS = 9
_DECIMAL_BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)
_PARTIAL_UPDATE = BINLOG.PARTIAL_UPDATE_ROWS_EVENT
_FSP_SCALE = (1_000_000, 100_000, 10_000, 1_000, 100, 10, 1)


def _signed_be(data: bytes | bytearray) -> int:
    value: int = int.from_bytes(data, "big", signed=True)
    return value


def _decimal_reader(precision: int, scale: int) -> tuple[int, Callable[[bytes], decimal.Decimal]]:
    """(byte width, reader) of a DECIMAL(precision, scale): the library's value, as a Decimal.

    The bytes are big-endian groups of decimal digits (9 digits in 4 bytes, fewer in fewer),
    with the sign in the top bit and negative numbers stored inverted. The fast path reads
    them as one integer; bytes the server never writes (a group out of its digit range) take
    the library's own text-building arithmetic, so that even garbage decodes alike.
    """
    integral = precision - scale
    full_int, part_int = divmod(integral, _DECIMAL_DIGITS)
    full_frac, part_frac = divmod(scale, _DECIMAL_DIGITS)
    lead = _DECIMAL_BYTES[part_int]
    tail = _DECIMAL_BYTES[part_frac]
    width = lead + 4 * (full_int + full_frac) + tail
    tail_format = f"0{part_frac}d"
    Decimal = decimal.Decimal
    # (shift, bit mask, digits) of each group, most significant first.
    sizes = (
        ([(lead, part_int)] if lead else [])
        + [(4, _DECIMAL_DIGITS)] * (full_int + full_frac)
        + ([(tail, part_frac)] if tail else [])
    )
    groups = []
    shift = 8 * width
    for size, digits in sizes:
        shift -= 8 * size
        groups.append((shift, (1 << (8 * size)) - 1, 10**digits))
    sign_bit = 1 << (8 * width - 1)
    ones = (1 << (8 * width)) - 1
    exponent = f"E-{scale}"

    def library_text(raw: bytes) -> decimal.Decimal:
        data = bytearray(raw)
        if data[0] & 0x80:
            text = ""
            mask = 0
        else:
            text = "-"
            mask = -1
        data[0] ^= 0x80
        at = 0
        if lead:
            text += str(_signed_be(data[:lead]) ^ mask)
            at = lead
        for _ in range(full_int):
            text += f"{_signed_be(data[at : at + 4]) ^ mask:09d}"
            at += 4
        text += "."
        for _ in range(full_frac):
            text += f"{_signed_be(data[at : at + 4]) ^ mask:09d}"
            at += 4
        if tail:
            text += format(_signed_be(data[at : at + tail]) ^ mask, tail_format)
        return Decimal(text)

    def read(raw: bytes) -> decimal.Decimal:
        packed = int.from_bytes(raw, "big") ^ sign_bit
        negative = not raw[0] & 0x80
        if negative:
            packed ^= ones
        total = 0
        for group_shift, group_mask, limit in groups:
            group = (packed >> group_shift) & group_mask
            if group >= limit:
                return library_text(raw)
            total = total * limit + group
        return Decimal(f"-{total}{exponent}" if negative else f"{total}{exponent}")

    return width, read


def _bit_text(bits: int) -> Callable[[bytes], str]:
    mask = (1 << bits) - 1
    spec = f"0{bits}b"

    def read(raw: bytes) -> str:
        return format(int.from_bytes(raw, "big") & mask, spec)

    return read


def _set_members(values: Sequence[str]) -> Callable[[int], set[str] | None]:
    members = list(values)

    def read(bitmask: int) -> set[str] | None:
        found = {value for index, value in enumerate(members) if bitmask & (1 << index)}
        return found or None

    return read


def _date(value: int) -> datetime.date | None:
    if value == 0:
        return None
    year = (value >> 9) & 0x7FFF
    month = (value >> 5) & 0x0F
    day = value & 0x1F
    if year == 0 or month == 0 or day == 0:
        return None
    return datetime.date(year, month, day)


def _datetime2(packed: int, micro: int) -> datetime.datetime | None:
    """The library's DATETIME2: None for an invalid date (fraction ignored); a fraction is
    added only when positive, and one past a second raises, as `replace` does there."""
    year_month = (packed >> 22) & 0x1FFFF
    in_range = 0 <= micro < 1_000_000
    try:
        value = datetime.datetime(
            year_month // 13,
            year_month % 13,
            (packed >> 17) & 0x1F,
            (packed >> 12) & 0x1F,
            (packed >> 6) & 0x3F,
            packed & 0x3F,
            micro if in_range else 0,
        )
    except ValueError:
        return None
    return value if in_range else value.replace(microsecond=micro) if micro > 0 else value


def _time2(packed: int, micro: int) -> datetime.timedelta:
    sign = 1 if (packed >> 23) & 1 else -1
    if sign == -1:
        packed = ~packed + 1
    return (
        datetime.timedelta(
            hours=(packed >> 12) & 0x3FF,
            minutes=(packed >> 6) & 0x3F,
            seconds=packed & 0x3F,
            microseconds=micro,
        )
        * sign
    )


_EPOCH = datetime.datetime(1970, 1, 1)
_SECOND = datetime.timedelta(seconds=1)


def _timestamp(seconds: int, micro: int) -> datetime.datetime:
    """The library's TIMESTAMP2 (utcfromtimestamp, then a positive fraction added), for every
    32-bit value, without its per-call time zone machinery."""
    if 0 <= micro < 1_000_000:
        return _EPOCH + datetime.timedelta(seconds=seconds, microseconds=micro)
    value = _EPOCH + seconds * _SECOND
    return value.replace(microsecond=micro) if micro > 0 else value


class _Source:
    """The lines of one generated decoder and the objects its code refers to."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.env: dict[str, Any] = {
            "int_from_bytes": int.from_bytes,
            "date": _date,
            "datetime2": _datetime2,
            "time2": _time2,
            "timestamp": _timestamp,
            "parse_json": parse_json,
        }

    def const(self, name: str, value: Any) -> str:
        self.env[name] = value
        return name

    def add(self, indent: int, *lines: str) -> None:
        self.lines.extend("    " * indent + line for line in lines)


_STRUCTS = {
    (FIELD_TYPE.TINY, False): "<b",
    (FIELD_TYPE.TINY, True): "<B",
    (FIELD_TYPE.SHORT, False): "<h",
    (FIELD_TYPE.SHORT, True): "<H",
    (FIELD_TYPE.LONG, False): "<i",
    (FIELD_TYPE.LONG, True): "<I",
    (FIELD_TYPE.LONGLONG, False): "<q",
    (FIELD_TYPE.LONGLONG, True): "<Q",
    (FIELD_TYPE.FLOAT, False): "<f",
    (FIELD_TYPE.FLOAT, True): "<f",
    (FIELD_TYPE.DOUBLE, False): "<d",
    (FIELD_TYPE.DOUBLE, True): "<d",
}


def _encoding(column: Any) -> str | None:
    """The codec the library decodes a text column with, or None when it keeps the bytes."""
    name = column.character_set_name
    encoding = "utf-8" if name is None else RowsEvent.charset_to_encoding(name)
    try:
        codecs.lookup(encoding)
    except LookupError:
        return None
    return str(encoding)


def _emit_length_prefixed(src: _Source, size: int, v: str) -> None:
    """`v` = the bytes after a little-endian length of `size` bytes."""
    if size == 1:
        src.add(0, "n = buf[pos]", "pos += 1")
    else:
        src.add(0, f"n = int_from_bytes(buf[pos : pos + {size}], 'little')", f"pos += {size}")
    src.add(0, f"{v} = buf[pos : pos + n]", "pos += n")


def _emit_text(src: _Source, column: Any, size: int, v: str) -> None:
    _emit_length_prefixed(src, size, v)
    encoding = _encoding(column)
    if encoding is not None:
        src.add(0, f"{v} = {v}.decode({encoding!r})")
    else:
        # The library's decode raises LookupError, caught to keep the bytes, except on empty
        # bytes: CPython decodes those to "" without looking the codec up.
        src.add(0, f"if not {v}:", f"    {v} = ''")


def _fraction(column: Any, at: str) -> tuple[int, str]:
    """(byte width, expression) of the fractional seconds stored at offset `at`: the
    library's `__read_fsp` arithmetic (signed big-endian, float division for odd precisions)."""
    fsp = column.fsp
    width = (fsp + 1) // 2
    if not width:
        return 0, "0"
    raw = f"int_from_bytes(buf[{at} : {at} + {width}], 'big', signed=True)"
    if fsp % 2:
        raw = f"int({raw} / 10)"
    return width, f"{raw} * {_FSP_SCALE[fsp]}"


def _emit_value(src: _Source, i: int, column: Any) -> bool:
    """Append the code reading column `i` into `v{i}` at `pos`; False if not supported."""
    t = column.type
    v = f"v{i}"
    fmt = _STRUCTS.get((t, bool(column.unsigned)))
    if fmt is not None:
        unpack = src.const(f"unpack{i}", struct.Struct(fmt).unpack_from)
        src.add(0, f"{v} = {unpack}(buf, pos)[0]", f"pos += {struct.calcsize(fmt)}")
    elif t == FIELD_TYPE.INT24:
        signed = "False" if column.unsigned else "True"
        src.add(0, f"{v} = int_from_bytes(buf[pos : pos + 3], 'little', signed={signed})")
        src.add(0, "pos += 3")
    elif t in (FIELD_TYPE.VARCHAR, FIELD_TYPE.STRING):
        _emit_text(src, column, 2 if column.max_length > 255 else 1, v)
    elif t == FIELD_TYPE.BLOB:
        _emit_text(src, column, column.length_size, v)
    elif t == FIELD_TYPE.GEOMETRY:
        _emit_length_prefixed(src, column.length_size, v)
    elif t == FIELD_TYPE.JSON:
        _emit_length_prefixed(src, column.length_size, v)
        src.add(0, f"{v} = parse_json({v}[0], {v}[1:]) if n else None")
    elif t == FIELD_TYPE.NEWDECIMAL:
        width, reader = _decimal_reader(column.precision, column.decimals)
        read = src.const(f"decimal{i}", reader)
        src.add(0, f"{v} = {read}(buf[pos : pos + {width}])", f"pos += {width}")
    elif t == FIELD_TYPE.DATE:
        src.add(0, f"{v} = date(int_from_bytes(buf[pos : pos + 3], 'little'))", "pos += 3")
    elif t == FIELD_TYPE.DATETIME2:
        width, micro = _fraction(column, "pos + 5")
        src.add(
            0,
            f"{v} = datetime2(int_from_bytes(buf[pos : pos + 5], 'big'), {micro})",
            f"pos += {5 + width}",
        )
    elif t == FIELD_TYPE.TIMESTAMP2:
        width, micro = _fraction(column, "pos + 4")
        src.add(
            0,
            f"{v} = timestamp(int_from_bytes(buf[pos : pos + 4], 'big', signed=True), {micro})",
            f"pos += {4 + width}",
        )
    elif t == FIELD_TYPE.TIME2:
        width, micro = _fraction(column, "pos + 3")
        src.add(
            0,
            f"{v} = time2(int_from_bytes(buf[pos : pos + 3], 'big', signed=True), {micro})",
            f"pos += {3 + width}",
        )
    elif t == FIELD_TYPE.YEAR:
        src.add(0, f"{v} = buf[pos] + 1900", "pos += 1")
    elif t == FIELD_TYPE.ENUM:
        size = column.size
        index = f"int_from_bytes(buf[pos : pos + {size}], 'little')"
        if column.enum_values:
            values = src.const(f"enum{i}", list(column.enum_values))
            src.add(0, f"{v} = {values}[{index}]")
        else:
            src.add(0, f"{v} = None")
        src.add(0, f"pos += {size}")
    elif t == FIELD_TYPE.SET:
        size = column.size
        if column.set_values:
            members = src.const(f"set{i}", _set_members(column.set_values))
            src.add(0, f"{v} = {members}(int_from_bytes(buf[pos : pos + {size}], 'little'))")
        else:
            src.add(0, f"{v} = None")
        src.add(0, f"pos += {size}")
    elif t == FIELD_TYPE.BIT:
        read = src.const(f"bit{i}", _bit_text(column.bits))
        src.add(0, f"{v} = {read}(buf[pos : pos + {column.bytes}])", f"pos += {column.bytes}")
    else:
        return False
    return True


def compile_table(columns: Sequence[Any]) -> ImageDecoder | None:
    """The decoder of full row images of a table map's `columns` (the library's Column
    objects), or None when a column type is not compiled here."""
    src = _Source()
    count = len(columns)
    null_bytes = (count + 7) // 8
    src.add(0, "def decode(buf, pos, end):")
    src.add(1, "images = []", "while pos < end:")
    if null_bytes == 1:
        src.add(2, "nulls = buf[pos]")
    else:
        src.add(2, f"nulls = int_from_bytes(buf[pos : pos + {null_bytes}], 'little')")
    src.add(2, f"pos += {null_bytes}")
    names = []
    for i, column in enumerate(columns):
        names.append(column.name or f"UNKNOWN_COL{i}")
        block = _Source()
        if not _emit_value(block, i, column):
            return None
        src.env.update(block.env)
        src.add(2, f"if nulls & {1 << i}:", f"    v{i} = None", "else:")
        src.add(3, *block.lines)
    fields = ", ".join(f"{name!r}: v{i}" for i, name in enumerate(names))
    src.add(2, f"images.append({{{fields}}})")
    src.add(1, "return images")
    code = compile("\n".join(src.lines) + "\n", "<row decoder>", "exec")
    exec(code, src.env)
    decoder: ImageDecoder = src.env["decode"]
    return decoder


def _full(bitmap: bytes, count: int) -> bool:
    return int.from_bytes(bitmap, "little") == (1 << count) - 1


def event_body(event: Any, decoder: ImageDecoder) -> list[Image] | None:
    """Every row image of a Write/Update/DeleteRowsEvent (an update's images alternate
    before, after), read with `decoder`; None when the event has a form the decoder does not
    read (a MINIMAL image, a partial JSON update, a column count unlike the table map's), in
    which case the event is untouched and the library must read it."""
    count = len(event.columns)
    if event.event_type == _PARTIAL_UPDATE or event.number_of_columns != count:
        return None
    if not _full(event.columns_present_bitmap, count):
        return None
    second = getattr(event, "columns_present_bitmap2", None)
    if second is not None and not _full(second, count):
        return None
    packet = event.packet
    body: bytes = packet.read(event.event_size - packet.read_bytes)
    return decoder(body, 0, len(body))
