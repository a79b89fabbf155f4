"""The status a running connector publishes in its heartbeat, for `cdc status` and `cdc health`.

The connector writes it every few seconds with a time to live (`cdc.state` stores it), and once
more, marked `stopped`, when it ends; `cdc health` turns it into an exit code. It is stored as
JSON (`to_dict`); `from_dict` reads what any version wrote, leaving out what it does not know.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from cdc.model.position import Position
from cdc.model.progress import Progress

State = Literal["running", "degraded", "stopped"]


@dataclass(frozen=True)
class VerifySummary:
    """The last pass of continuous verification (`verify.interval`)."""

    finished_at: float = 0.0
    """When the pass ended (seconds since the epoch)."""
    seconds: float = 0.0
    """How long it took."""
    checked: int = 0
    """Rows compared."""
    differences: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per index, the number of documents of each kind: missing, different, extra, changing."""
    repaired: int = 0
    """Documents re-sent or deleted (with `verify.repair`)."""
    unverified: list[str] = field(default_factory=list)
    """Tables that could not be verified (no usable key)."""
    error: str | None = None
    """Why the pass did not finish; None when it did."""

    @property
    def equal(self) -> bool:
        return (
            self.error is None
            and not self.unverified
            and not any(count for kinds in self.differences.values() for count in kinds.values())
        )

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> VerifySummary:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


@dataclass(frozen=True)
class Status:
    """One connector process, as its last heartbeat described it."""

    name: str = ""
    state: State = "stopped"
    """`running`; `degraded` while a link is down and being retried; `stopped` after it ended."""
    pid: int | None = None
    host: str | None = None
    started_at: float = 0.0
    """When the process started (seconds since the epoch)."""
    updated_at: float = 0.0
    """When this status was written."""
    lag_seconds: float | None = None
    """Seconds between the commit of the last transaction read and now; 0 when caught up."""
    degraded: list[str] = field(default_factory=list)
    """The links that are down (`MySQL binlog stream`, `Elasticsearch`, `checkpoint store`)."""
    position: Position | None = None
    """The last acknowledged position."""
    counter: int | None = None
    event_time: int | None = None
    last_error: str | None = None
    transactions: int = 0
    changes: int = 0
    actions: int = 0
    dead_letters: int = 0
    reconnects: int = 0
    by_table: dict[str, int] = field(default_factory=dict)
    """Row changes read in this run, by `schema.table`."""
    snapshot: Progress | None = None
    """The snapshot last worked on in this run."""
    verify: VerifySummary | None = None
    """The last pass of continuous verification in this run."""

    @property
    def running(self) -> bool:
        """True while the process runs (possibly degraded)."""
        return self.state in ("running", "degraded")

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["position"] = self.position.to_dict() if self.position else None
        data["snapshot"] = self.snapshot.to_dict() if self.snapshot else None
        data["verify"] = asdict(self.verify) if self.verify else None
        return data

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Status:
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in raw.items() if k in known and v is not None}
        if isinstance(data.get("position"), dict):
            data["position"] = Position.from_dict(data["position"])
        if isinstance(data.get("snapshot"), dict):
            data["snapshot"] = Progress.from_dict(data["snapshot"])
        if isinstance(data.get("verify"), dict):
            data["verify"] = VerifySummary.from_dict(data["verify"])
        return cls(**data)
