"""Redis: the only module that talks to Redis. The four stores of `cdc.state.stores`.

Keys, all namespaced by the configured prefix and the connector name:

    <prefix>:<name>:checkpoint   string: the checkpoint JSON document (`cdc.model.checkpoint`)
    <prefix>:<name>:heartbeat    string with a TTL: the running connector's status (JSON,
                                 `cdc.model.status`)
    <prefix>:<name>:snapshots    hash: table (schema.table) -> snapshot progress (JSON,
                                 `cdc.model.progress`)
    <prefix>:<name>:dlq          stream: the dead-letter queue, one entry per rejected document
                                 with one field, `letter` (JSON, `cdc.model.letters`); never
                                 trimmed by the connector, only by `cdc dlq replay`/`purge`

The four stores share one client (a thread-safe connection pool). Redis errors become
`CheckpointUnavailable` (retried), except for authentication failures, which retrying cannot
fix.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from cdc.errors import CdcError, CheckpointUnavailable
from cdc.model.checkpoint import Checkpoint
from cdc.model.letters import DeadLetter, Listing, format_id, parse_id
from cdc.model.progress import Progress
from cdc.model.status import Status
from cdc.state.stores import Stores


@dataclass(frozen=True, slots=True)
class Keys:
    """The Redis keys of one connector."""

    checkpoint: str
    heartbeat: str
    snapshots: str
    dlq: str

    @classmethod
    def of(cls, prefix: str, name: str) -> Keys:
        base = f"{prefix}:{name}"
        return cls(f"{base}:checkpoint", f"{base}:heartbeat", f"{base}:snapshots", f"{base}:dlq")


def open_redis(url: str, prefix: str, name: str, timeout: float = 5.0) -> Stores:
    """The stores of connector `name` in the Redis at `url`, with socket timeouts of `timeout`
    seconds. Connects lazily: an unreachable Redis fails the first call, not this one."""
    client = redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=30
    )
    keys = Keys.of(prefix, name)
    return Stores(
        checkpoints=RedisCheckpoints(client, keys.checkpoint),
        heartbeats=RedisHeartbeats(client, keys.heartbeat),
        snapshots=RedisSnapshots(client, keys.snapshots),
        letters=RedisDeadLetters(client, keys.dlq),
        backend=client,
    )


def _translate(exc: redis.RedisError, what: str) -> CdcError:
    if isinstance(exc, redis.AuthenticationError):
        return CdcError(
            f"{what}: {exc}", hint="check the user and password in checkpoint.redis.url"
        )
    if isinstance(exc, redis.ResponseError) and "NOAUTH" in str(exc):
        return CdcError(f"{what}: {exc}", hint="put the password in checkpoint.redis.url")
    return CheckpointUnavailable(f"{what}: {exc}")


class RedisCheckpoints:
    """The checkpoint as one Redis string; SET replaces it atomically."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        self._client = client
        self.key = key

    def load(self) -> Checkpoint | None:
        try:
            data = self._client.get(self.key)
        except redis.RedisError as exc:
            raise _translate(exc, f"reading the checkpoint from Redis ({self.key})") from exc
        if data is None:
            return None
        assert isinstance(data, bytes)
        return Checkpoint.from_json(data, f"Redis key {self.key}")

    def save(self, checkpoint: Checkpoint) -> None:
        try:
            self._client.set(self.key, checkpoint.to_json())
        except redis.RedisError as exc:
            raise _translate(exc, f"writing the checkpoint to Redis ({self.key})") from exc

    def delete(self) -> None:
        try:
            self._client.delete(self.key)
        except redis.RedisError as exc:
            raise _translate(exc, f"deleting the checkpoint in Redis ({self.key})") from exc

    def describe(self) -> str:
        return f"Redis key {self.key}"


class RedisHeartbeats:
    """The status as a Redis string that expires after its time to live."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        self._client = client
        self.key = key

    def beat(self, status: Status, ttl: float) -> None:
        try:
            self._client.set(self.key, orjson.dumps(status.to_dict()), px=int(ttl * 1000))
        except redis.RedisError as exc:
            raise _translate(exc, "writing the heartbeat to Redis") from exc

    def read(self) -> Status | None:
        try:
            data = self._client.get(self.key)
        except redis.RedisError as exc:
            raise _translate(exc, "reading the heartbeat from Redis") from exc
        if data is None:
            return None
        assert isinstance(data, bytes)
        raw = orjson.loads(data)
        return Status.from_dict(raw) if isinstance(raw, dict) else None


class RedisSnapshots:
    """Snapshot progress as one Redis hash, a field per table."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        self._client = client
        self.key = key

    def load_all(self) -> dict[str, Progress]:
        try:
            raw = self._client.hgetall(self.key)
        except redis.RedisError as exc:
            raise _translate(exc, "reading snapshot progress from Redis") from exc
        assert isinstance(raw, dict)
        return {_text(k): Progress.from_dict(orjson.loads(v)) for k, v in raw.items()}

    def save(self, progress: Progress) -> None:
        try:
            self._client.hset(self.key, progress.table, orjson.dumps(progress.to_dict()))
        except redis.RedisError as exc:
            raise _translate(exc, "writing snapshot progress to Redis") from exc


# Replace one entry only if it still exists, in one step: a letter replayed or purged by someone
# else meanwhile must not come back.
_UPDATE_SCRIPT = """
if redis.call('XDEL', KEYS[1], ARGV[1]) == 1 then
  return redis.call('XADD', KEYS[1], '*', 'letter', ARGV[2])
end
return false
"""


class RedisDeadLetters:
    """The dead-letter queue as a Redis stream.

    Entries are added with XADD and no MAXLEN, so Redis never drops one; a letter is as durable
    as Redis makes any acknowledged write (with AOF, it survives a Redis restart). Purging trims
    the stream instead of deleting the key, so the stream keeps its last id and ids are never
    issued twice.
    """

    def __init__(self, client: redis.Redis, key: str) -> None:
        self._client = client
        self.key = key
        self._update = client.register_script(_UPDATE_SCRIPT)

    def park(self, letters: Sequence[DeadLetter]) -> builtins.list[str]:
        if not letters:
            return []
        try:
            with self._client.pipeline(transaction=True) as pipe:
                for letter in letters:
                    pipe.xadd(self.key, {"letter": letter.to_json()})
                ids = pipe.execute()
        except redis.RedisError as exc:
            raise _translate(exc, f"parking dead letters in Redis ({self.key})") from exc
        return [_text(i) for i in ids]

    def list(self, limit: int = 100, after: str | None = None) -> Listing:
        if limit <= 0:
            return []
        start = "(" + format_id(parse_id(after)) if after is not None else "-"
        try:
            entries: Any = self._client.xrange(self.key, start, "+", count=limit)
        except redis.RedisError as exc:
            raise _translate(exc, f"reading dead letters from Redis ({self.key})") from exc
        return [self._letter(entry_id, fields) for entry_id, fields in entries]

    def get(self, letter_id: str) -> DeadLetter | None:
        wanted = format_id(parse_id(letter_id))
        try:
            entries: Any = self._client.xrange(self.key, wanted, wanted, count=1)
        except redis.RedisError as exc:
            raise _translate(exc, f"reading a dead letter from Redis ({self.key})") from exc
        return self._letter(*entries[0])[1] if entries else None

    def remove(self, ids: Sequence[str]) -> int:
        wanted = [format_id(parse_id(i)) for i in ids]
        if not wanted:
            return 0
        try:
            return int(self._client.xdel(self.key, *wanted))
        except redis.RedisError as exc:
            raise _translate(exc, f"removing dead letters from Redis ({self.key})") from exc

    def update(self, letter_id: str, letter: DeadLetter) -> str | None:
        old = format_id(parse_id(letter_id))
        try:
            new = self._update(keys=[self.key], args=[old, letter.to_json()])
        except redis.RedisError as exc:
            raise _translate(exc, f"updating a dead letter in Redis ({self.key})") from exc
        return None if new is None else _text(new)

    def purge(self) -> int:
        try:
            return int(self._client.xtrim(self.key, maxlen=0, approximate=False))
        except redis.RedisError as exc:
            raise _translate(exc, f"purging dead letters in Redis ({self.key})") from exc

    def size(self) -> int:
        try:
            return int(self._client.xlen(self.key))
        except redis.RedisError as exc:
            raise _translate(exc, f"reading dead letters from Redis ({self.key})") from exc

    def describe(self) -> str:
        return f"Redis stream {self.key}"

    def _letter(self, entry_id: Any, fields: dict[Any, Any]) -> tuple[str, DeadLetter]:
        letter_id = _text(entry_id)
        where = f"entry {letter_id} of Redis stream {self.key}"
        data = fields.get(b"letter")
        if data is None:
            raise CdcError(f"{where} has no `letter` field")
        return letter_id, DeadLetter.from_json(data, where)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
