"""The dead-letter queue: documents Elasticsearch rejected for their content.

A rejected document is parked here (durably, before the checkpoint moves past it) with what the
operator needs to fix and replay it: the operation, the index and id, the table and the row's
key, the error, and the transaction it came from. The pipeline then goes on (design invariant 5).
`cdc dlq replay` (see `cdc.engine.replay`) re-reads the current rows from MySQL and sends them
again.

Stores implement `DeadLetterQueue`: `RedisDeadLetterQueue` (in `cdc.state.redis`, a Redis
stream) and `FileDeadLetterQueue` (here, JSON lines next to the file checkpoint). `open_dlq`
picks the one matching the configured checkpoint store. Both name letters with ids of the form
`<milliseconds>-<sequence>` (Redis stream ids), which increase in parking order and are never
reused, not even after a purge.
"""

from __future__ import annotations

import builtins
import fcntl
import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import orjson

from cdc.config import ConnectorConfig
from cdc.errors import CdcError, CheckpointUnavailable
from cdc.sink.elastic import BulkItem, ItemResult

FORMAT_VERSION = 1
"""Format of a stored letter; a letter of another format is refused, not guessed at."""

MAX_ERROR_CHARS = 2000
"""Elasticsearch errors can quote a whole document; the reason fits in far less."""

_ID = re.compile(r"^(\d{1,20})-(\d{1,20})$")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One rejected document operation."""

    op: str
    index: str
    doc_id: str
    table: str
    key: dict[str, str]
    """Id column -> rendered value (as in the document id): enough to SELECT the row again."""
    error: str
    status: int
    version: int
    gtid: str | None = None
    """GTID of the transaction the change came from, when the server has GTIDs."""
    time: float = field(default_factory=time.time)
    """When the document was first rejected (seconds since the epoch)."""

    @classmethod
    def from_item(cls, item: BulkItem, result: ItemResult) -> DeadLetter:
        return cls(
            op=item.action.op,
            index=item.action.index,
            doc_id=item.action.doc_id,
            table=item.table,
            key=dict(zip(item.id_columns, item.action.key, strict=False)),
            error=clip_error(result.error or f"HTTP {result.status}"),
            status=result.status,
            version=item.version,
            gtid=item.gtid,
        )

    def to_json(self) -> bytes:
        return orjson.dumps({"format": FORMAT_VERSION, **asdict(self)})

    @classmethod
    def from_json(cls, data: bytes | str, source: str = "dead letter") -> DeadLetter:
        """Parse a stored letter; raises CdcError naming `source` when it is not one."""
        try:
            raw = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise CdcError(f"{source} is not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise CdcError(f"{source} is not a JSON object")
        fmt = raw.pop("format", None)
        if fmt != FORMAT_VERSION:
            raise CdcError(
                f"{source} has format {fmt!r}; this version of the connector reads format "
                f"{FORMAT_VERSION}",
                hint="replay or purge the dead-letter queue with the version that wrote it",
            )
        try:
            return cls(**raw)
        except TypeError as exc:
            raise CdcError(f"{source} is malformed: {exc}") from None


def clip_error(error: str) -> str:
    """An error cut to `MAX_ERROR_CHARS`."""
    return error if len(error) <= MAX_ERROR_CHARS else error[: MAX_ERROR_CHARS - 3] + "..."


Listing = list[tuple[str, DeadLetter]]
"""Letters with their ids, oldest first."""


class DeadLetterQueue(Protocol):
    """Durable storage of rejected documents, oldest first.

    Every method raises CheckpointUnavailable when the store cannot be reached (retryable) and
    CdcError for anything retrying cannot fix (a malformed id, corrupt stored data, bad
    credentials). Ids look like `1718000000000-0`; any other id is a CdcError.
    """

    def park(self, letters: Sequence[DeadLetter]) -> builtins.list[str]:
        """Append letters, all or none, and return their ids in order. Durable when it returns
        (as durable as the store's own writes). Not idempotent: parking twice keeps two."""
        ...

    def list(self, limit: int = 100, after: str | None = None) -> Listing:
        """Up to `limit` letters with their ids, oldest first, starting after id `after`
        (which need not exist any more). An empty list means there are no more."""
        ...

    def get(self, letter_id: str) -> DeadLetter | None:
        """The letter with this id, or None if there is none."""
        ...

    def remove(self, ids: Sequence[str]) -> int:
        """Remove these letters; returns how many existed. Idempotent: unknown ids are skipped."""
        ...

    def update(self, letter_id: str, letter: DeadLetter) -> str | None:
        """Replace a letter, atomically: the old id disappears and the new content is parked at
        the end of the queue under the returned id. Returns None, and changes nothing, when
        `letter_id` does not exist (it was replayed or purged meanwhile)."""
        ...

    def purge(self) -> int:
        """Remove every letter; returns how many there were. Ids are not reused afterwards."""
        ...

    def size(self) -> int:
        """Number of parked letters."""
        ...

    def describe(self) -> str:
        """Where the letters live, for messages."""
        ...

    def close(self) -> None: ...


def open_dlq(cfg: ConnectorConfig) -> DeadLetterQueue:
    """The dead-letter queue stored beside the configured checkpoint (Redis or file)."""
    if cfg.checkpoint.redis is not None:
        # cdc.state.redis imports this module for DeadLetter; importing it here, at call time,
        # keeps the two modules free of an import cycle.
        from cdc.state.redis import RedisDeadLetterQueue

        r = cfg.checkpoint.redis
        return RedisDeadLetterQueue(r.url, r.key_prefix, cfg.name)
    assert cfg.checkpoint.file is not None
    return FileDeadLetterQueue(cfg.checkpoint.file.path, cfg.name)


def parse_id(letter_id: str) -> tuple[int, int]:
    """The (milliseconds, sequence) of a letter id; CdcError if it is not one."""
    match = _ID.match(letter_id)
    if match is None:
        raise CdcError(
            f"{letter_id!r} is not a dead-letter id",
            hint="ids look like 1718000000000-0; `cdc dlq list` shows them",
        )
    return int(match[1]), int(match[2])


def format_id(parts: tuple[int, int]) -> str:
    return f"{parts[0]}-{parts[1]}"


class FileDeadLetterQueue:
    """`<directory>/<name>.dlq.jsonl`: one JSON object per line, beside the file checkpoint.

    The first line is a header holding the highest id ever issued, so ids stay unique after
    letters are removed; every other line is `{"id": ..., "letter": {...}}` in id order. Parking
    appends and fsyncs; removing, updating and purging rewrite the file atomically (write,
    fsync, rename, fsync the directory). An advisory lock on `<name>.dlq.lock` serialises the
    connector and the CLI on the same host. A line cut short by a crash during `park` (whose
    caller therefore never saw it succeed) is ignored and cut off by the next write.
    """

    def __init__(self, directory: str | os.PathLike[str], name: str) -> None:
        self.path = Path(directory) / f"{name}.dlq.jsonl"
        self._lock_path = Path(directory) / f"{name}.dlq.lock"

    # -- the protocol ---------------------------------------------------------------------------

    def park(self, letters: Sequence[DeadLetter]) -> builtins.list[str]:
        if not letters:
            return []
        with self._locked("parking dead letters"):
            floor, entries, end = self._read()
            last = max([floor, *(parse_id(i) for i, _ in entries[-1:])])
            ids = []
            lines = []
            for letter in letters:
                last = _next_id(last)
                ids.append(format_id(last))
                lines.append(_entry(format_id(last), letter))
            data = b"".join(lines)
            if not self.path.exists():
                self._rewrite(floor, [])
                end = self.path.stat().st_size
            with open(self.path, "r+b") as fh:
                # Cut off a torn line left by a crash, so the new lines start on their own.
                fh.truncate(end)
                fh.seek(end)
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            return ids

    def list(self, limit: int = 100, after: str | None = None) -> Listing:
        start = parse_id(after) if after is not None else (-1, -1)
        found: Listing = []
        if limit <= 0:
            return found
        with self._locked("reading dead letters"):
            for letter_id, letter in self._read()[1]:
                if parse_id(letter_id) > start:
                    found.append((letter_id, letter))
                    if len(found) >= limit:
                        break
        return found

    def get(self, letter_id: str) -> DeadLetter | None:
        parse_id(letter_id)
        with self._locked("reading dead letters"):
            return next((letter for i, letter in self._read()[1] if i == letter_id), None)

    def remove(self, ids: Sequence[str]) -> int:
        wanted = {format_id(parse_id(i)) for i in ids}
        if not wanted:
            return 0
        with self._locked("removing dead letters"):
            floor, entries, _ = self._read()
            kept = [(i, letter) for i, letter in entries if i not in wanted]
            removed = len(entries) - len(kept)
            if removed:
                self._rewrite(_highest(floor, entries), kept)
            return removed

    def update(self, letter_id: str, letter: DeadLetter) -> str | None:
        old = format_id(parse_id(letter_id))
        with self._locked("updating a dead letter"):
            floor, entries, _ = self._read()
            kept = [(i, existing) for i, existing in entries if i != old]
            if len(kept) == len(entries):
                return None
            new = _next_id(_highest(floor, entries))
            self._rewrite(new, [*kept, (format_id(new), letter)])
            return format_id(new)

    def purge(self) -> int:
        with self._locked("purging dead letters"):
            floor, entries, _ = self._read()
            if entries:
                self._rewrite(_highest(floor, entries), [])
            return len(entries)

    def size(self) -> int:
        with self._locked("reading dead letters"):
            return len(self._read()[1])

    def describe(self) -> str:
        return str(self.path)

    def close(self) -> None:
        return None

    # -- file handling --------------------------------------------------------------------------

    @contextmanager
    def _locked(self, what: str) -> Iterator[None]:
        try:
            self._lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise CheckpointUnavailable(f"{what} in {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            except OSError as exc:
                raise CheckpointUnavailable(f"{what} in {self.path}: {exc.strerror}") from exc
        finally:
            os.close(fd)

    def _read(self) -> tuple[tuple[int, int], Listing, int]:
        """The id floor from the header, the letters in order, and the length of the file up
        to its last complete line."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return (0, 0), [], 0
        end = data.rfind(b"\n") + 1
        floor = (0, 0)
        entries: Listing = []
        for number, line in enumerate(data[:end].splitlines(), start=1):
            where = f"{self.path}:{number}"
            try:
                raw = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise CdcError(
                    f"{where} is not valid JSON: {exc}",
                    hint="fix or remove that line; every other letter is still readable",
                ) from None
            if not isinstance(raw, dict):
                raise CdcError(f"{where} is not a JSON object")
            try:
                if "header" in raw:
                    floor = parse_id(str(raw["header"]["last_id"]))
                    continue
                letter_id = str(raw["id"])
                parse_id(letter_id)
                letter = DeadLetter.from_json(orjson.dumps(raw["letter"]), where)
            except (KeyError, TypeError, CdcError) as exc:
                reason = exc.message if isinstance(exc, CdcError) else repr(exc)
                raise CdcError(
                    f"{where} is not a dead letter: {reason}",
                    hint="fix or remove that line; every other letter is still readable",
                ) from None
            entries.append((letter_id, letter))
        return floor, entries, end

    def _rewrite(self, floor: tuple[int, int], entries: Listing) -> None:
        header = orjson.dumps({"header": {"format": FORMAT_VERSION, "last_id": format_id(floor)}})
        data = header + b"\n" + b"".join(_entry(i, letter) for i, letter in entries)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        # The rename is only durable once the directory entry is.
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _entry(letter_id: str, letter: DeadLetter) -> bytes:
    return b'{"id":"' + letter_id.encode() + b'","letter":' + letter.to_json() + b"}\n"


def _highest(floor: tuple[int, int], entries: Listing) -> tuple[int, int]:
    return max([floor, *(parse_id(i) for i, _ in entries[-1:])])


def _next_id(last: tuple[int, int]) -> tuple[int, int]:
    """An id after `last`: the current millisecond, like Redis, or `last`'s next sequence when
    the clock has not moved past it."""
    now = int(time.time() * 1000)
    return (now, 0) if now > last[0] else (last[0], last[1] + 1)
