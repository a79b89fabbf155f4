"""Table mappings: how the rows of a table become documents (fields, ids, filters, computed
fields, children, where documents go). Part of the config models (`cdc.config.models`)."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, PrivateAttr, field_validator, model_validator

from cdc.config.base import ConfigModel, dotted, is_glob
from cdc.config.expressions import FilterError, parse

SnapshotMode = Literal["initial", "never", "when_needed"]


class SoftDelete(ConfigModel):
    """A column value that turns a row into a delete of its document."""

    column: str
    """Column to look at."""
    values: list[Any] = Field(min_length=1)
    """Values meaning "deleted" (compared after type conversion)."""


class Concat(ConfigModel):
    """Text joined from columns (NULLs left out, as SQL's CONCAT_WS)."""

    columns: list[str] = Field(min_length=1)
    """Columns whose document values are joined, in order."""
    separator: str = ""
    """Put between the values."""


class JsonPath(ConfigModel):
    """A value out of a JSON column."""

    column: str
    """The JSON column (or a `json_columns` one)."""
    path: str
    """`$.a.b[0]`-style path; a path that does not exist gives null."""

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not re.match(r"^\$(\.[A-Za-z_][\w-]*|\[\d+\])*$", value):
            raise ValueError("must be a path such as `$.dims.width` or `$.tags[0]`")
        return value


class DateFormat(ConfigModel):
    """A date or time column formatted as text."""

    column: str
    """A DATE, DATETIME or TIMESTAMP column."""
    format: str
    """A `strftime` format, e.g. `%Y-%m`."""


class Computed(ConfigModel):
    """One computed field: exactly one of `concat`, `json_path`, `date_format`, `constant`."""

    concat: Concat | None = None
    """Text joined from columns."""
    json_path: JsonPath | None = None
    """A value out of a JSON column."""
    date_format: DateFormat | None = None
    """A date formatted as text."""
    constant: Any = None
    """A fixed value (any JSON)."""

    @model_validator(mode="before")
    @classmethod
    def _exactly_one(cls, data: Any) -> Any:
        if isinstance(data, dict):
            kinds = [k for k in ("concat", "json_path", "date_format", "constant") if k in data]
            if len(kinds) != 1:
                raise ValueError(
                    "give exactly one of `concat`, `json_path`, `date_format`, `constant`"
                )
        return data

    def columns(self) -> list[str]:
        """The columns it reads."""
        if self.concat is not None:
            return list(self.concat.columns)
        found = self.json_path or self.date_format
        return [found.column] if found is not None else []


class FieldOptions(ConfigModel):
    """Which columns of a table become fields, under which names, converted how: the options
    every mapping takes, a table mapping and each of its children alike."""

    include: list[str] | None = None
    """Only these columns become fields (default: all)."""
    exclude: list[str] = []
    """These columns never become fields."""
    rename: dict[str, str] = {}
    """Column name -> field name."""
    decimal: Literal["string", "number"] = "string"
    """DECIMAL as an exact string or as a JSON number (never a silently lossy float)."""
    binary: Literal["base64", "skip"] = "base64"
    """BINARY/VARBINARY/BLOB columns as base64 text, or left out."""
    json_columns: list[str] = []
    """Columns holding JSON text (MariaDB stores JSON as LONGTEXT) to parse into objects."""
    json_fields: Literal["flattened", "object", "disabled"] = "flattened"
    """How JSON fields are mapped when the connector creates the index: `flattened`
    (Elasticsearch `flattened`, OpenSearch `flat_object`: any shape is accepted, leaves are
    searchable as keywords), `object` (typed sub-fields from the first document; a value of
    another type later is rejected), `disabled` (kept in the document, not searchable)."""
    computed: dict[str, Computed] = {}
    """Field name -> a field computed from columns (excluded ones too): `concat`,
    `json_path`, `date_format` or `constant`."""
    string_fields: dict[str, Literal["text_keyword", "text", "keyword"]] = {}
    """Column -> how a text column is mapped when the connector creates the index; every
    text column not listed is `text_keyword` (full-text `text` with a `keyword` sub-field for
    sorting and exact matches)."""

    @field_validator("rename")
    @classmethod
    def _distinct_targets(cls, rename: dict[str, str]) -> dict[str, str]:
        seen: dict[str, str] = {}
        for column, name in rename.items():
            if name in seen:
                raise ValueError(f"`{seen[name]}` and `{column}` are both renamed to `{name}`")
            seen[name] = column
        return rename

    @model_validator(mode="after")
    def _consistent_columns(self) -> FieldOptions:
        if self.include is not None:
            both = sorted(set(self.include) & set(self.exclude))
            if both:
                names = ", ".join(f"`{name}`" for name in both)
                raise ValueError(f"{names} cannot be in both `include` and `exclude`")
        return self


def _exact_table(value: str) -> str:
    if value.count(".") != 1 or not all(value.split(".")):
        raise ValueError("must be `schema.table`")
    if is_glob(value):
        raise ValueError("must name one table: globs are not allowed here")
    return value


def _join_columns(value: dict[str, str] | None) -> dict[str, str] | None:
    if value is not None and not value:
        raise ValueError("must name at least one pair of columns")
    return value


ExactTable = Annotated[str, AfterValidator(_exact_table)]
JoinColumns = Annotated[dict[str, str], AfterValidator(_join_columns)]


class Through(ConfigModel):
    """The link table of a many-to-many child: each of its rows links one parent row to one
    child row."""

    table: ExactTable
    """`schema.table` of the link table."""
    join: JoinColumns | None = None
    """Link column -> parent column; default: read from the link table's FOREIGN KEY to the
    parent's table."""
    to: JoinColumns | None = None
    """Link column -> child column; default: read from the link table's FOREIGN KEY to the
    child's table."""


class ChildMapping(FieldOptions):
    """Rows of another table that become a field of their parent's document: an array of
    objects (one-to-many, or many-to-many through a link table) or one object (one-to-one).
    The document is rebuilt from MySQL's current rows whenever any row it is made of changes."""

    table: ExactTable
    """`schema.table` of the child rows."""
    field: str
    """The parent document's field that holds them."""
    relationship: Literal["one_to_many", "one_to_one"] = "one_to_many"
    """`one_to_many`: an array of every matching row (`[]` when none); `one_to_one`: the one
    matching row as an object, or null."""
    join: JoinColumns | None = None
    """Child column -> parent column, e.g. `{post_id: id}`; default: read from the FOREIGN KEY
    between the two tables. Not with `through`."""
    through: Through | None = None
    """Link table of a many-to-many child."""
    order_by: list[str] = []
    """Order of an array: column names, each optionally followed by ` desc`; ties and the
    default follow the child's primary key (then the link table's)."""
    nested: bool = True
    """Map an array as `nested` when the connector creates the index, so that a query on two
    fields of one element matches the same element."""
    children: list[ChildMapping] = []
    """This child's own children, nested inside each of its objects."""

    @field_validator("order_by", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("order_by")
    @classmethod
    def _order_terms(cls, terms: list[str]) -> list[str]:
        for term in terms:
            if not re.match(r"^\S+( (asc|desc))?$", term, re.IGNORECASE):
                raise ValueError(f"`{term}` must be a column name, optionally followed by ` desc`")
        return terms

    @field_validator("field")
    @classmethod
    def _field_name(cls, value: str) -> str:
        if not value or "." in value:
            raise ValueError("must be a field name without `.`")
        return value

    @model_validator(mode="after")
    def _one_shape(self) -> ChildMapping:
        if self.through is not None:
            if self.join is not None:
                raise ValueError("give `join` inside `through` for a many-to-many child")
            if self.relationship == "one_to_one":
                raise ValueError("a child `through` a link table is an array: drop `one_to_one`")
        if self.relationship == "one_to_one" and self.order_by:
            raise ValueError("`order_by` orders arrays; a one_to_one child is one object")
        fields = [child.field for child in self.children]
        for name in fields:
            if fields.count(name) > 1:
                raise ValueError(f"two children are both field `{name}`")
        return self

    def order_terms(self) -> list[tuple[str, bool]]:
        """`order_by` as (column, descending) pairs."""
        terms = []
        for term in self.order_by:
            column, _, direction = term.partition(" ")
            terms.append((column, direction.lower() == "desc"))
        return terms

    def is_array(self) -> bool:
        return self.relationship == "one_to_many"


_PERIOD = re.compile(r"\{([^{}:]+)(?::([^{}]*))?\}")


@dataclass(frozen=True)
class IndexTemplate:
    """An index name with `{column}` or `{column:strftime format}` parts: an index per
    period, e.g. `orders-{created_at:%Y.%m}`."""

    text: str
    parts: tuple[tuple[str, str | None, str | None], ...]
    """(literal text, column, format) in order; the column is None for trailing text."""

    @property
    def columns(self) -> list[str]:
        return [column for _, column, _ in self.parts if column is not None]

    @property
    def pattern(self) -> str:
        """The index pattern every rendering matches (`orders-*`)."""
        return "".join(text + ("*" if column else "") for text, column, _ in self.parts)

    def render(self, row: dict[str, Any]) -> str:
        """The index of a row; a NULL date gives `none` for its part."""
        out = []
        for text, column, fmt in self.parts:
            out.append(text)
            if column is not None:
                value = row[column]
                if value is None:
                    out.append("none")
                elif hasattr(value, "strftime"):
                    out.append(value.strftime(fmt or "%Y.%m.%d").lower())
                else:
                    out.append(str(value).lower())
        return "".join(out)


def index_template(index: str) -> IndexTemplate | None:
    """The template of an index name with `{column}` parts; None for a plain name."""
    parts: list[tuple[str, str | None, str | None]] = []
    at = 0
    for found in _PERIOD.finditer(index):
        parts.append((index[at : found.start()], found[1].strip(), found[2]))
        at = found.end()
    if not parts:
        return None
    parts.append((index[at:], None, None))
    return IndexTemplate(index, tuple(parts))


class TableMapping(FieldOptions):
    """How the rows of one table (or a glob of sharded tables) become documents."""

    table: str
    """`schema.table`; glob patterns (`shop.orders_*`) feed sharded tables into one index."""
    index: str
    """Target index (or alias); `{column}` or `{column:%Y.%m}` parts make an index per period
    from a date column (`orders-{created_at:%Y.%m}`), a row moving to another period moving to
    that index."""
    routing: str | None = None
    """Column whose value routes each document to its shard (deletes and moves carry the old
    value)."""
    pipeline: str | None = None
    """Ingest pipeline every indexed document goes through."""
    transform: str | None = None
    """`package.module:function` called as `function(document, row)` for every document
    (children included), returning the document to index: for what declarations cannot say.
    `row` holds the row's column values as the binlog decodes them."""

    @field_validator("transform")
    @classmethod
    def _hook_name(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", value):
            raise ValueError("must be `package.module:function`")
        return value

    id_columns: list[str] | None = Field(None, min_length=1)
    """Columns forming the document id; default: the primary key."""
    id_separator: str = ":"
    """Joins composite id parts."""
    static: dict[str, Any] = {}
    """Fields added to every document."""
    soft_delete: SoftDelete | None = None
    """Rows matching this rule are deleted from the index."""
    where: str | None = None
    """Only rows for which this SQL-like expression is true are in the index, e.g.
    `qty > 0 and status in ('paid', 'sent')` (comparisons, `in`, `is [not] null`, `and`, `or`,
    `not`); a row that stops matching is deleted, one that starts matching is indexed, and
    snapshots read only matching rows."""
    snapshot: SnapshotMode | None = None
    """Overrides `snapshot.mode` for this mapping."""
    index_settings: dict[str, Any] | None = None
    """Settings used when the connector creates a missing index."""
    index_mappings: dict[str, Any] | None = None
    """Mappings used when the connector creates a missing index (merged over the `nested`
    fields of children)."""
    children: list[ChildMapping] = []
    """Rows of other tables built into each document (denormalized documents); see
    `ChildMapping`."""

    @field_validator("table")
    @classmethod
    def _qualified(cls, value: str) -> str:
        if value.count(".") != 1 or not all(value.split(".")):
            raise ValueError("must be `schema.table`; globs such as `shop.orders_*` are allowed")
        return value

    @field_validator("where")
    @classmethod
    def _parsable(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse(value)
            except FilterError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("index")
    @classmethod
    def _index_name(cls, value: str) -> str:
        template = index_template(value)
        if template is not None:
            if "{" in template.pattern or "}" in template.pattern:
                raise ValueError("has an unbalanced `{` or `}`")
            literal = template.pattern.replace("*", "x")
        else:
            literal = value
        if not re.match(r"^[a-z0-9][a-z0-9_.+-]*$", literal) or len(literal.encode()) > 255:
            raise ValueError(
                "must be a valid index name: lowercase letters, digits, `_`, `.`, `+` and `-`, "
                "starting with a letter or digit, at most 255 bytes"
            )
        return value

    @model_validator(mode="after")
    def _tree(self) -> TableMapping:
        if self.children and is_glob(self.table):
            raise ValueError("a mapping with `children` must name one table, not a glob")
        fields = [child.field for child in self.children]
        for name in fields:
            if fields.count(name) > 1:
                raise ValueError(f"two children are both field `{name}`")
        return self

    def mappings_body(self, typed: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """The `mappings` an index created for this mapping gets: the field mappings derived
        from the column types (`typed`, see `cdc.transform.fields`), its array children as
        `nested` (at every depth, unless `nested: false`), with `index_mappings` merged over
        them (the user's word wins, field by field)."""
        base: dict[str, Any] = {"properties": typed} if typed else {}
        nested = _nested(self.children)
        if nested:
            base = _merged(base, {"properties": nested})
        if not base:
            return self.index_mappings
        return _overridden(base, self.index_mappings or {})

    _origin: Any = PrivateAttr(default=None)
    """Where `load_config` read this mapping (a `cdc.config.problems.Origin`)."""

    def matches(self, schema: str, table: str) -> bool:
        """True if this mapping covers `schema.table`."""
        return fnmatch.fnmatchcase(f"{schema}.{table}", self.table)

    def locate(self, *loc: str | int) -> str:
        """`file:line: field.path` of `loc` inside this mapping as it was written, for a
        message; a mapping not read from a file is named by its table pattern."""
        if self._origin is not None:
            return str(self._origin.describe(loc))
        return f"mapping {self.table!r}" + (f": {dotted(loc)}" if loc else "")


def _nested(children: list[ChildMapping]) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for child in children:
        spec: dict[str, Any] = {}
        if child.is_array() and child.nested:
            spec["type"] = "nested"
        inner = _nested(child.children)
        if inner:
            spec["properties"] = inner
        if spec:
            properties[child.field] = spec
    return properties


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        out[key] = (
            _merged(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
        )
    return out


def _overridden(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` (the user's `index_mappings`) laid over `base`: a field it names replaces the
    derived one whole, except that the sub-fields of an object or nested field are laid over
    one by one in the same way."""
    out = dict(base)
    for key, value in over.items():
        if key == "properties" and isinstance(value, dict) and isinstance(out.get(key), dict):
            fields = dict(out[key])
            for name, spec in value.items():
                old = fields.get(name)
                if isinstance(old, dict) and isinstance(spec, dict) and "properties" in spec:
                    fields[name] = _overridden(old, spec)
                else:
                    fields[name] = spec
            out[key] = fields
        else:
            out[key] = value
    return out
