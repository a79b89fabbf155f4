"""Before a run streams: are the mappings right for the live schema, and where does it start?"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from cdc.config import ConnectorConfig
from cdc.engine.ports import Rows
from cdc.errors import PositionError
from cdc.model.checkpoint import Checkpoint
from cdc.model.position import Position, ServerInfo
from cdc.model.versions import initial_counter
from cdc.transform.checks import closest, problems
from cdc.transform.fields import table_properties, tree_properties
from cdc.transform.trees import Tree, compile_tree

log = logging.getLogger(__name__)


def start_from(
    stored: Checkpoint | None, info: ServerInfo, now: Position, where: str, address: str
) -> Checkpoint:
    """The checkpoint a run starts from: the stored one (`where` names the store), or, with
    none, the server's current position `now` with a counter from the clock (not written yet:
    its `written_at` is 0). A checkpoint of the other flavor is refused."""
    if stored is not None:
        if stored.position.flavor != info.flavor:
            raise PositionError(
                f"the checkpoint in {where} is for a {stored.position.flavor} server but "
                f"{address} is {info.flavor}",
                hint="point source at the right server, or run `cdc position reset`",
            )
        log.info("resuming from checkpoint: %s", stored.position.describe())
        return stored
    log.info(
        "no checkpoint in %s: starting at the server's current position (%s); rows written "
        "before it are not copied",
        where,
        now.describe(),
    )
    return Checkpoint(position=now, counter=initial_counter(), server=info.identity)


@dataclass
class MappingReport:
    """What the mappings of a config come to against the live schema."""

    problems: list[tuple[str, str]] = field(default_factory=list)
    """A line per problem (`file:line: field.path: mapping ...: what is wrong`) and its fix."""
    unmatched: list[str] = field(default_factory=list)
    """A line per mapping that matches no existing table."""
    tables: int = 0
    """Existing tables the mappings cover."""
    trees: dict[str, Tree] = field(default_factory=dict)
    """The compiled mappings with children, by root table."""
    fields: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Index -> the `properties` derived from its tables' column types
    (`cdc.transform.fields`), what a created index is mapped with."""


def check_mappings(cfg: ConnectorConfig, rows: Rows) -> MappingReport:
    """Hold every mapping against the tables it covers on the server now: every column and
    option it names must fit each of them (`cdc.transform.checks`), its children must form a
    tree the source can serve (`cdc.transform.trees`), and it must cover one table at least.
    Each problem names the spot in the config and, for a typo, the closest name."""
    report = MappingReport()
    zone = ZoneInfo(cfg.source.time_zone)
    existing = rows.list_tables()
    for mapping in cfg.tables:
        tables = [t for t in existing if cfg.mapping_for(*t.split(".", 1)) is mapping]
        if not tables:
            near = closest(mapping.table, existing)
            report.unmatched.append(
                f"{mapping.locate('table')}: `{mapping.table}` matches no table on the server"
                + (f"; did you mean `{near}`?" if near else "")
            )
            continue
        report.tables += len(tables)
        for number, table in enumerate(tables):
            schema = rows.table_schema(*table.split(".", 1))
            if number == 0 and not mapping.children:
                _add_fields(report.fields, mapping.index, table_properties(mapping, schema))
            for problem in problems(mapping, schema):
                line = (
                    f"{mapping.locate(*problem.loc)}: mapping {mapping.table!r} (table {table}): "
                    f"{problem.message}"
                )
                if problem.suggestion:
                    line += f"; did you mean `{problem.suggestion}`?"
                report.problems.append((line, problem.hint))
        if mapping.children:
            tree, found = compile_tree(mapping, rows, zone)
            for problem in found:
                line = (
                    f"{mapping.locate(*problem.loc)}: mapping {mapping.table!r}: {problem.message}"
                )
                if problem.suggestion:
                    line += f"; did you mean `{problem.suggestion}`?"
                report.problems.append((line, problem.hint))
            if tree is not None:
                report.trees[mapping.table] = tree
                _add_fields(report.fields, mapping.index, tree_properties(tree))
    return report


def _add_fields(fields: dict[str, dict[str, Any]], index: str, found: dict[str, Any]) -> None:
    """Several mappings may feed one index: the first to name a field gives its mapping."""
    known = fields.setdefault(index, {})
    for name, spec in found.items():
        known.setdefault(name, spec)
