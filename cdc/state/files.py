"""Local files: the four stores of `cdc.state.stores` for a single host without Redis.

In the configured directory (`checkpoint.file.path`), per connector name:

    <name>.json             the checkpoint (`cdc.model.checkpoint`), replaced atomically
                            (write, fsync, rename)
    <name>.status.json      the heartbeat (`cdc.model.status`) with its expiry time
    <name>.snapshots.json   snapshot progress by table (`cdc.model.progress`)
    <name>.dlq.jsonl        the dead-letter queue, one JSON line per letter, and its lock file
                            <name>.dlq.lock

Every write replaces its file whole, atomically, so a reader never sees half of one. Only the
heartbeat is written without fsync: losing it to a crash loses nothing.
"""

from __future__ import annotations

import builtins
import fcntl
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import orjson

from cdc.errors import CdcError, CheckpointUnavailable
from cdc.model.checkpoint import Checkpoint
from cdc.model.letters import FORMAT_VERSION, DeadLetter, Listing, format_id, next_id, parse_id
from cdc.model.progress import Progress
from cdc.model.status import Status
from cdc.state.stores import Stores


def open_files(directory: str | os.PathLike[str], name: str) -> Stores:
    """The stores of connector `name` in `directory` (created on the first write)."""
    return Stores(
        checkpoints=FileCheckpoints(directory, name),
        heartbeats=FileHeartbeats(directory, name),
        snapshots=FileSnapshots(directory, name),
        letters=FileDeadLetters(directory, name),
        backend=_NoConnections(),
    )


class _NoConnections:
    def close(self) -> None:
        return None


class FileCheckpoints:
    """`<directory>/<name>.json`, replaced atomically (write, fsync, rename)."""

    def __init__(self, directory: str | os.PathLike[str], name: str) -> None:
        self.path = Path(directory) / f"{name}.json"

    def load(self) -> Checkpoint | None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CheckpointUnavailable(f"cannot read {self.path}: {exc.strerror}") from exc
        return Checkpoint.from_json(data, str(self.path))

    def save(self, checkpoint: Checkpoint) -> None:
        _write_atomically(self.path, checkpoint.to_json(), durable=True)

    def delete(self) -> None:
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            raise CheckpointUnavailable(f"cannot delete {self.path}: {exc.strerror}") from exc

    def describe(self) -> str:
        return str(self.path)

    def hold(self, token: str | None) -> None:
        if token is not None:
            raise CdcError(
                f"{self.path} cannot be fenced by a lease: the file store serves one connector",
                hint="use checkpoint.redis for ha.enabled",
            )


class FileHeartbeats:
    """`<directory>/<name>.status.json`: the status and the time it expires at."""

    def __init__(self, directory: str | os.PathLike[str], name: str) -> None:
        self.path = Path(directory) / f"{name}.status.json"

    def beat(self, status: Status, ttl: float) -> None:
        data = orjson.dumps({**status.to_dict(), "expires_at": time.time() + ttl})
        _write_atomically(self.path, data, durable=False)

    def read(self) -> Status | None:
        try:
            raw = orjson.loads(self.path.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return None
        except OSError as exc:
            raise CheckpointUnavailable(f"cannot read {self.path}: {exc.strerror}") from exc
        if not isinstance(raw, dict) or float(raw.get("expires_at", 0)) < time.time():
            return None
        return Status.from_dict(raw)


class FileSnapshots:
    """`<directory>/<name>.snapshots.json`: every table's progress in one JSON object."""

    def __init__(self, directory: str | os.PathLike[str], name: str) -> None:
        self.path = Path(directory) / f"{name}.snapshots.json"

    def load_all(self) -> dict[str, Progress]:
        return {table: Progress.from_dict(raw) for table, raw in self._read().items()}

    def save(self, progress: Progress) -> None:
        states = self._read()
        states[progress.table] = progress.to_dict()
        _write_atomically(self.path, orjson.dumps(states), durable=True)

    def _read(self) -> dict[str, dict[str, object]]:
        try:
            raw = orjson.loads(self.path.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return {}
        except OSError as exc:
            raise CheckpointUnavailable(f"cannot read {self.path}: {exc.strerror}") from exc
        return raw if isinstance(raw, dict) else {}


class FileDeadLetters:
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
            last = _highest(floor, entries)
            ids = []
            lines = []
            for letter in letters:
                last = next_id(last)
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
            new = next_id(_highest(floor, entries))
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


def _write_atomically(path: Path, data: bytes, durable: bool) -> None:
    """Replace `path` with `data` so readers see the old or the new content, never a mix."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                if durable:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise CheckpointUnavailable(f"cannot write {path}: {exc.strerror}") from exc
