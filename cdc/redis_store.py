"""Redis: the only module that talks to Redis (checkpoints now; the dead-letter stream and the
heartbeat live here too as they arrive).

Keys, all namespaced by the configured prefix and the connector name:

    <prefix>:<name>:checkpoint   string: the checkpoint JSON document (see cdc.checkpoint)
    <prefix>:<name>:heartbeat    string with a TTL: the running connector's status (JSON)
"""

from __future__ import annotations

from typing import Any

import orjson
import redis

from cdc.checkpoint import Checkpoint
from cdc.errors import CdcError, CheckpointUnavailable


def checkpoint_key(prefix: str, name: str) -> str:
    return f"{prefix}:{name}:checkpoint"


def heartbeat_key(prefix: str, name: str) -> str:
    return f"{prefix}:{name}:heartbeat"


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

    def describe(self) -> str:
        return f"Redis key {self.key}"

    def close(self) -> None:
        self._client.close()
