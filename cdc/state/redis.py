"""Redis: the only module that talks to Redis (checkpoints now; the dead-letter stream and the
heartbeat live here too as they arrive).

Keys, all namespaced by the configured prefix and the connector name:

    <prefix>:<name>:checkpoint   string: the checkpoint JSON document (see cdc.model.checkpoint)
    <prefix>:<name>:heartbeat    string with a TTL: the running connector's status (JSON)
    <prefix>:<name>:snapshots    hash: table (schema.table) -> snapshot progress (JSON)
    <prefix>:<name>:dlq          stream: the dead-letter queue, one entry per rejected document
                                 with one field, `letter` (JSON, see cdc.state.dlq.DeadLetter);
                                 never trimmed by the connector, only by `cdc dlq replay`/`purge`
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

import orjson
import redis

from cdc.errors import CdcError, CheckpointUnavailable
from cdc.model.checkpoint import Checkpoint
from cdc.state.dlq import DeadLetter, Listing, format_id, parse_id


def checkpoint_key(prefix: str, name: str) -> str:
    return f"{prefix}:{name}:checkpoint"


def heartbeat_key(prefix: str, name: str) -> str:
    return f"{prefix}:{name}:heartbeat"


def snapshots_key(prefix: str, name: str) -> str:
    return f"{prefix}:{name}:snapshots"


def dlq_key(prefix: str, name: str) -> str:
    return f"{prefix}:{name}:dlq"


def _translate(exc: Exception, what: str) -> CdcError:
    if isinstance(exc, redis.AuthenticationError):
        return CdcError(
            f"{what}: {exc}", hint="check the user and password in checkpoint.redis.url"
        )
    if isinstance(exc, redis.ResponseError) and "NOAUTH" in str(exc):
        return CdcError(f"{what}: {exc}", hint="put the password in checkpoint.redis.url")
    return CheckpointUnavailable(f"{what}: {exc}")


class RedisCheckpointStore:
    """The checkpoint as one Redis string; SET replaces it atomically."""

    def __init__(self, url: str, prefix: str, name: str, timeout: float = 5.0) -> None:
        self._url = url
        self.key = checkpoint_key(prefix, name)
        self.heartbeat_key = heartbeat_key(prefix, name)
        self.snapshots_key = snapshots_key(prefix, name)
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=30,
        )

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

    def beat(self, status: dict[str, Any], ttl: float) -> None:
        try:
            self._client.set(self.heartbeat_key, orjson.dumps(status), px=int(ttl * 1000))
        except redis.RedisError as exc:
            raise _translate(exc, "writing the heartbeat to Redis") from exc

    def read_status(self) -> dict[str, Any] | None:
        try:
            data = self._client.get(self.heartbeat_key)
        except redis.RedisError as exc:
            raise _translate(exc, "reading the heartbeat from Redis") from exc
        if data is None:
            return None
        assert isinstance(data, bytes)
        status = orjson.loads(data)
        return status if isinstance(status, dict) else None

    def load_snapshots(self) -> dict[str, dict[str, Any]]:
        try:
            raw = self._client.hgetall(self.snapshots_key)
        except redis.RedisError as exc:
            raise _translate(exc, "reading snapshot progress from Redis") from exc
        assert isinstance(raw, dict)
        return {
            (k.decode() if isinstance(k, bytes) else str(k)): orjson.loads(v)
            for k, v in raw.items()
        }

    def save_snapshot(self, table: str, state: dict[str, Any] | None) -> None:
        try:
            if state is None:
                self._client.hdel(self.snapshots_key, table)
            else:
                self._client.hset(self.snapshots_key, table, orjson.dumps(state))
        except redis.RedisError as exc:
            raise _translate(exc, "writing snapshot progress to Redis") from exc

    def describe(self) -> str:
        return f"Redis key {self.key}"

    def close(self) -> None:
        self._client.close()


# Replace one entry only if it still exists, in one step: a letter replayed or purged by someone
# else meanwhile must not come back.
_UPDATE_SCRIPT = """
if redis.call('XDEL', KEYS[1], ARGV[1]) == 1 then
  return redis.call('XADD', KEYS[1], '*', 'letter', ARGV[2])
end
return false
"""


class RedisDeadLetterQueue:
    """The dead-letter queue as a Redis stream (see `cdc.state.dlq.DeadLetterQueue` for the
    contract).

    Entries are added with XADD and no MAXLEN, so Redis never drops one; a letter is as durable
    as Redis makes any acknowledged write (with AOF, it survives a Redis restart). Purging trims
    the stream instead of deleting the key, so the stream keeps its last id and ids are never
    issued twice.
    """

    def __init__(self, url: str, prefix: str, name: str, timeout: float = 5.0) -> None:
        self.key = dlq_key(prefix, name)
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=30,
        )
        self._update = self._client.register_script(_UPDATE_SCRIPT)

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

    def close(self) -> None:
        self._client.close()

    def _letter(self, entry_id: Any, fields: dict[Any, Any]) -> tuple[str, DeadLetter]:
        letter_id = _text(entry_id)
        where = f"entry {letter_id} of Redis stream {self.key}"
        data = fields.get(b"letter")
        if data is None:
            raise CdcError(f"{where} has no `letter` field")
        return letter_id, DeadLetter.from_json(data, where)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
