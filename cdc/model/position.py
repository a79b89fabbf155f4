"""Where streaming resumes (a GTID set, preferred, plus binlog file/offset), and the server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Flavor = Literal["mysql", "mariadb"]


@dataclass(frozen=True, slots=True)
class Position:
    """A transaction boundary in the source's binlog.

    `gtid` is the full executed set in the server's own notation: MySQL `uuid:1-100,uuid2:1-5`
    or MariaDB `domain-server-seq,...` (one entry per domain, the last applied). It is empty
    when the server runs without GTIDs; then `file`/`offset` name the next event to read.
    """

    flavor: Flavor
    gtid: str = ""
    file: str | None = None
    offset: int | None = None

    def describe(self) -> str:
        parts = []
        if self.gtid:
            parts.append(f"gtid {self.gtid}")
        if self.file:
            parts.append(f"file {self.file}:{self.offset}")
        return ", ".join(parts) or "(empty)"

    def to_dict(self) -> dict[str, Any]:
        return {"flavor": self.flavor, "gtid": self.gtid, "file": self.file, "offset": self.offset}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Position:
        flavor = data["flavor"]
        if flavor not in ("mysql", "mariadb"):
            raise ValueError(f"unknown flavor {flavor!r}")
        offset = data.get("offset")
        return cls(
            flavor=flavor,
            gtid=str(data.get("gtid") or ""),
            file=data.get("file"),
            offset=int(offset) if offset is not None else None,
        )


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """Identity and binlog state of the source server."""

    flavor: Flavor
    version: str
    server_id: int
    server_uuid: str | None
    gtid_mode: bool

    @property
    def identity(self) -> str:
        return self.server_uuid or f"server_id={self.server_id}"
