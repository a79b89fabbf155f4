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
    <prefix>:<name>:lease        string with a TTL: the token of the connector that streams
                                 (`ha.enabled`); checkpoint writes are fenced by it
    <prefix>:<name>:lease:standby:<token>
                                 string with a TTL: a standby waiting for the lease

The four stores share one client (a thread-safe connection pool), to one server (`url`) or to
the master that Redis Sentinel names (`sentinels` and `master`). Through Sentinel, redis-py's
pool asks the Sentinels for the master's address whenever it connects, and drops connections to
a master that was demoted, so after a failover the next retry reaches the new master. A master
replaced while it is still up goes on accepting writes for seconds, and loses them when Sentinel
turns it into a replica; so checkpoint writes and dead-letter parking ask the Sentinels first
(`_Link.follow_failover`), which moves them to the new master as soon as Sentinel has switched.

A `rediss://` URL connects with TLS, verified against `checkpoint.redis.tls` (its CA file and
client certificate) or the system's CAs.

Redis errors become `CheckpointUnavailable` (retried), except for authentication failures and
TLS certificates refused (`cdc.tls`), which retrying cannot fix (`translate`).
"""

from __future__ import annotations

import builtins
import contextlib
import re
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from redis.backoff import NoBackoff
from redis.connection import SSLConnection, parse_url
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool

from cdc import tls as tls_errors
from cdc.config import TlsConfig
from cdc.errors import CdcError, CheckpointUnavailable, LeaseLost
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
    lease: str

    @classmethod
    def of(cls, prefix: str, name: str) -> Keys:
        base = f"{prefix}:{name}"
        return cls(
            f"{base}:checkpoint",
            f"{base}:heartbeat",
            f"{base}:snapshots",
            f"{base}:dlq",
            f"{base}:lease",
        )


def open_redis(
    url: str | None,
    prefix: str,
    name: str,
    timeout: float = 5.0,
    *,
    sentinels: Sequence[str] = (),
    master: str | None = None,
    sentinel_password: str | None = None,
    tls: TlsConfig | None = None,
) -> Stores:
    """The stores of connector `name` in the Redis at `url`, or, with `sentinels` (`host:port`
    each), in the master the Sentinels know as `master` (`url`, if given, then names no host
    and carries the master's password, database and TLS). Socket timeouts of `timeout` seconds;
    `tls` for a `rediss://` url. Connects lazily: an unreachable Redis or Sentinel fails the
    first call, not this one."""
    assert tls is None or (url or "").startswith("rediss://"), "tls needs a rediss:// url"
    if sentinels:
        assert master is not None, "sentinels need a master name"
        link = _Link.through_sentinels(url, sentinels, master, sentinel_password, timeout, tls)
    else:
        assert url is not None, "give a url or sentinels"
        client = redis.Redis.from_url(
            url, health_check_interval=30, **_settings(timeout), **_tls_settings(tls)
        )
        link = _Link(client, tls=tls)
    keys = Keys.of(prefix, name)
    return Stores(
        checkpoints=RedisCheckpoints(link, keys.checkpoint, keys.lease),
        heartbeats=RedisHeartbeats(link, keys.heartbeat),
        snapshots=RedisSnapshots(link, keys.snapshots),
        letters=RedisDeadLetters(link, keys.dlq),
        backend=link,
        lease=RedisLease(link, keys.lease),
    )


def _settings(timeout: float) -> dict[str, Any]:
    # One try per call: every store call is retried by the connector's own policy (`cdc.retry`),
    # which logs the outage once; redis-py's retries would only hide it for a while (and keep
    # a dead Sentinel from handing over to the next one).
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
    }


_DIAGNOSE_SECONDS = 1.0
"""How long `_Link._diagnose` waits for a TLS server's verdict (one that accepts says nothing
until asked)."""


def _tls_settings(tls: TlsConfig | None) -> dict[str, Any]:
    """redis-py's TLS arguments for `checkpoint.redis.tls` (none: its defaults, which verify
    the certificate and host name against the system's CAs)."""
    if tls is None:
        return {}
    return {
        "ssl_ca_certs": tls.ca_file,
        "ssl_certfile": tls.client_cert,
        "ssl_keyfile": tls.client_key,
        "ssl_cert_reqs": "required" if tls.verify else "none",
        "ssl_check_hostname": tls.verify,
    }


def _address(host_port: str) -> tuple[str, int]:
    host, _, port = host_port.rpartition(":")
    return host.strip("[]"), int(port)


class _Link:
    """The client the stores share, and what messages say about the server behind it."""

    def __init__(
        self,
        client: redis.Redis,
        sentinel: Sentinel | None = None,
        master: str = "",
        sentinels: Sequence[str] = (),
        tls: TlsConfig | None = None,
    ) -> None:
        self.client = client
        self._sentinel = sentinel
        self._master = master
        self._sentinels = ", ".join(sentinels)
        self._tls = tls

    @classmethod
    def through_sentinels(
        cls,
        url: str | None,
        sentinels: Sequence[str],
        master: str,
        password: str | None,
        timeout: float,
        tls: TlsConfig | None = None,
    ) -> _Link:
        # redis-py's URL parsing and Sentinel client carry no type hints.
        master_settings: dict[str, Any] = {}
        if url:
            master_settings = parse_url(url)  # type: ignore[no-untyped-call]
        # The Sentinel pool picks its own connection classes; TLS is asked for by a flag.
        if master_settings.pop("connection_class", None) is SSLConnection:
            master_settings.update(ssl=True, **_tls_settings(tls))
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            [_address(s) for s in sentinels],
            sentinel_kwargs={**_settings(timeout), "password": password},
            **_settings(timeout),
        )
        client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
            master, health_check_interval=30, **master_settings
        )
        return cls(client, sentinel, master, sentinels, tls)

    def follow_failover(self) -> None:
        """Through Sentinel, ask for the master's address now, and drop idle connections to a
        master that was replaced. Called before the writes that must not be lost: a demoted
        master goes on accepting writes (and losing them when it turns replica) until Sentinel
        reconfigures it, which takes seconds after the failover itself. When no Sentinel
        answers, the master already known is used: without Sentinels there is no failover."""
        pool = self.client.connection_pool
        if isinstance(pool, SentinelConnectionPool):
            with contextlib.suppress(MasterNotFoundError):
                pool.get_master_address()  # type: ignore[no-untyped-call]

    def where(self) -> str:
        """Empty for one server; for Sentinel, ` (master NAME at HOST:PORT, from Sentinels
        ...)`, with the address the client last connected to (none before it connected)."""
        if self._sentinel is None:
            return ""
        pool = self.client.connection_pool
        address = pool.master_address if isinstance(pool, SentinelConnectionPool) else None
        at = f" at {address[0]}:{address[1]}" if address else ""
        return f" (master {self._master}{at}, from Sentinels {self._sentinels})"

    def server(self) -> str:
        """The server as messages name it: `host:port` (or a socket's path); through Sentinel,
        "the master", which `where` names."""
        if self._sentinel is not None:
            return "the master"
        kwargs = self.client.connection_pool.connection_kwargs
        if "path" in kwargs:
            return str(kwargs["path"])
        return f"{kwargs.get('host')}:{kwargs.get('port')}"

    def error(self, exc: redis.RedisError, what: str) -> CdcError:
        return translate(
            exc,
            f"{what}{self.where()}",
            sentinel=self._sentinel is not None,
            server=self.server(),
            diagnose=self._diagnose,
        )

    def _diagnose(self) -> ssl.SSLError | None:
        """Why the TLS server closed a connection without a word, if it refused the connector
        (see `cdc.tls.diagnose`); None for a link without TLS or a server out of reach."""
        pool = self.client.connection_pool
        if not issubclass(pool.connection_class, SSLConnection):
            return None
        if isinstance(pool, SentinelConnectionPool):
            address = pool.master_address
        else:
            address = (pool.connection_kwargs.get("host"), pool.connection_kwargs.get("port"))
        if not address or not address[0] or not address[1]:
            return None
        options = self._tls or TlsConfig()
        try:
            ctx = tls_errors.context(
                verify=options.verify,
                ca_file=options.ca_file,
                client_cert=options.client_cert,
                client_key=options.client_key,
            )
        except OSError:
            return None
        return tls_errors.diagnose(str(address[0]), int(address[1]), ctx, _DIAGNOSE_SECONDS)

    def close(self) -> None:
        self.client.close()
        if self._sentinel is not None:
            self._sentinel.close()


def translate(
    exc: redis.RedisError,
    what: str,
    sentinel: bool = False,
    server: str = "the server",
    diagnose: Callable[[], ssl.SSLError | None] | None = None,
) -> CdcError:
    """The connector's error for a redis-py error met while doing `what` with `server`
    (`host:port`): terminal when the credentials are wrong (of the server, or with `sentinel`
    of the master or the Sentinels) or a TLS certificate was refused, otherwise
    `CheckpointUnavailable`. `diagnose` is asked for the refusal behind a connection that was
    closed without a word (`cdc.tls.ended_early`)."""
    refused = tls_errors.failure(exc)
    if refused is None and diagnose is not None and tls_errors.ended_early(exc):
        refused = diagnose()
    if refused is not None:
        return tls_errors.refusal(
            refused,
            what,
            "checkpoint.redis.tls",
            server=server,
            plaintext="use a redis:// url for a server without TLS, or the server's TLS port",
        )
    where = "checkpoint.redis.url (the master's)" if sentinel else "checkpoint.redis.url"
    if isinstance(exc, MasterNotFoundError):
        # redis-py folds every Sentinel's failure into this one error, whose text repeats each
        # Sentinel client's whole repr; the error class names are what tells.
        failures = re.findall(r"\b[A-Z]\w*Error\b", str(exc).partition(" : ")[2])
        if "AuthenticationError" in failures:
            return CdcError(
                f"{what}: a Sentinel refused the connector's password",
                hint="check checkpoint.redis.sentinel_password (the Sentinels' requirepass)",
            )
        if failures:
            said = f"{len(failures)} Sentinel(s) could not be asked ({', '.join(failures)})"
        else:
            said = "the Sentinels know no master of that name that is up"
        return CheckpointUnavailable(
            f"{what}: no master found: {said}",
            hint="check checkpoint.redis.sentinels and master, and that the Sentinels are up "
            "and monitor the master under that name",
        )
    if isinstance(exc, redis.AuthenticationError):
        return CdcError(f"{what}: {exc}", hint=f"check the user and password in {where}")
    if isinstance(exc, redis.ResponseError) and "NOAUTH" in str(exc):
        return CdcError(f"{what}: {exc}", hint=f"put the password in {where}")
    return CheckpointUnavailable(f"{what}: {exc}")


# Compare-and-set in one step on the server: the checkpoint is written only while the lease
# key holds this connector's token, so a deposed active that wakes up can never overwrite the
# new active's position.
_FENCED_SET = """
if redis.call('GET', KEYS[2]) == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
return 0
"""
_RENEW = """
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not held then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisCheckpoints:
    """The checkpoint as one Redis string; SET replaces it atomically (fenced by the lease
    while `hold` names a token)."""

    def __init__(self, link: _Link, key: str, lease_key: str) -> None:
        self._client = link.client
        self._link = link
        self.key = key
        self._lease_key = lease_key
        self._token: str | None = None

    def hold(self, token: str | None) -> None:
        self._token = token

    def load(self) -> Checkpoint | None:
        try:
            data = self._client.get(self.key)
        except redis.RedisError as exc:
            raise self._link.error(exc, f"reading the checkpoint from Redis ({self.key})") from exc
        if data is None:
            return None
        assert isinstance(data, bytes)
        return Checkpoint.from_json(data, f"Redis key {self.key}")

    def save(self, checkpoint: Checkpoint) -> None:
        try:
            self._link.follow_failover()
            if self._token is None:
                self._client.set(self.key, checkpoint.to_json())
                return
            written = self._client.eval(
                _FENCED_SET, 2, self.key, self._lease_key, checkpoint.to_json(), self._token
            )
        except redis.RedisError as exc:
            raise self._link.error(exc, f"writing the checkpoint to Redis ({self.key})") from exc
        if not written:
            raise LeaseLost(
                f"the checkpoint in Redis ({self.key}) was not written: another connector "
                f"named like this one holds the lease ({self._lease_key}) now",
                hint="this connector steps down to standby; the active one goes on",
            )

    def delete(self) -> None:
        try:
            self._client.delete(self.key)
        except redis.RedisError as exc:
            raise self._link.error(exc, f"deleting the checkpoint in Redis ({self.key})") from exc

    def describe(self) -> str:
        return f"Redis key {self.key}{self._link.where()}"


class RedisLease:
    """The active/standby lease as one Redis string with a TTL, set and renewed by scripts."""

    def __init__(self, link: _Link, key: str) -> None:
        self._client = link.client
        self._link = link
        self.key = key

    def acquire(self, token: str, ttl: float) -> bool:
        try:
            held = self._client.eval(_RENEW, 1, self.key, token, int(ttl * 1000))
        except redis.RedisError as exc:
            raise self._link.error(exc, f"taking the lease in Redis ({self.key})") from exc
        return bool(held)

    def holder(self) -> str | None:
        try:
            value = self._client.get(self.key)
        except redis.RedisError as exc:
            raise self._link.error(exc, f"reading the lease in Redis ({self.key})") from exc
        return None if value is None else _text(value)

    def release(self, token: str) -> None:
        try:
            self._client.eval(_RELEASE, 1, self.key, token)
        except redis.RedisError as exc:
            raise self._link.error(exc, f"giving up the lease in Redis ({self.key})") from exc

    def standby(self, token: str, ttl: float) -> None:
        try:
            self._client.set(f"{self.key}:standby:{token}", b"1", px=int(ttl * 1000))
        except redis.RedisError as exc:
            raise self._link.error(exc, f"marking a standby in Redis ({self.key})") from exc

    def standbys(self) -> builtins.list[str]:
        prefix = f"{self.key}:standby:"
        try:
            keys = list(self._client.scan_iter(match=f"{prefix}*", count=100))
        except redis.RedisError as exc:
            raise self._link.error(exc, f"listing standbys in Redis ({self.key})") from exc
        return sorted(_text(k)[len(prefix) :] for k in keys)


class RedisHeartbeats:
    """The status as a Redis string that expires after its time to live."""

    def __init__(self, link: _Link, key: str) -> None:
        self._client = link.client
        self._link = link
        self.key = key

    def beat(self, status: Status, ttl: float) -> None:
        try:
            self._client.set(self.key, orjson.dumps(status.to_dict()), px=int(ttl * 1000))
        except redis.RedisError as exc:
            raise self._link.error(exc, "writing the heartbeat to Redis") from exc

    def read(self) -> Status | None:
        try:
            data = self._client.get(self.key)
        except redis.RedisError as exc:
            raise self._link.error(exc, "reading the heartbeat from Redis") from exc
        if data is None:
            return None
        assert isinstance(data, bytes)
        raw = orjson.loads(data)
        return Status.from_dict(raw) if isinstance(raw, dict) else None


class RedisSnapshots:
    """Snapshot progress as one Redis hash, a field per table."""

    def __init__(self, link: _Link, key: str) -> None:
        self._client = link.client
        self._link = link
        self.key = key

    def load_all(self) -> dict[str, Progress]:
        try:
            raw = self._client.hgetall(self.key)
        except redis.RedisError as exc:
            raise self._link.error(exc, "reading snapshot progress from Redis") from exc
        assert isinstance(raw, dict)
        return {_text(k): Progress.from_dict(orjson.loads(v)) for k, v in raw.items()}

    def save(self, progress: Progress) -> None:
        try:
            self._client.hset(self.key, progress.table, orjson.dumps(progress.to_dict()))
        except redis.RedisError as exc:
            raise self._link.error(exc, "writing snapshot progress to Redis") from exc


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

    def __init__(self, link: _Link, key: str) -> None:
        self._client = link.client
        self._link = link
        self.key = key
        self._update = link.client.register_script(_UPDATE_SCRIPT)

    def park(self, letters: Sequence[DeadLetter]) -> builtins.list[str]:
        if not letters:
            return []
        try:
            self._link.follow_failover()
            with self._client.pipeline(transaction=True) as pipe:
                for letter in letters:
                    pipe.xadd(self.key, {"letter": letter.to_json()})
                ids = pipe.execute()
        except redis.RedisError as exc:
            raise self._link.error(exc, f"parking dead letters in Redis ({self.key})") from exc
        return [_text(i) for i in ids]

    def list(self, limit: int = 100, after: str | None = None) -> Listing:
        if limit <= 0:
            return []
        start = "(" + format_id(parse_id(after)) if after is not None else "-"
        try:
            entries: Any = self._client.xrange(self.key, start, "+", count=limit)
        except redis.RedisError as exc:
            raise self._link.error(exc, f"reading dead letters from Redis ({self.key})") from exc
        return [self._letter(entry_id, fields) for entry_id, fields in entries]

    def get(self, letter_id: str) -> DeadLetter | None:
        wanted = format_id(parse_id(letter_id))
        try:
            entries: Any = self._client.xrange(self.key, wanted, wanted, count=1)
        except redis.RedisError as exc:
            raise self._link.error(exc, f"reading a dead letter from Redis ({self.key})") from exc
        return self._letter(*entries[0])[1] if entries else None

    def remove(self, ids: Sequence[str]) -> int:
        wanted = [format_id(parse_id(i)) for i in ids]
        if not wanted:
            return 0
        try:
            return int(self._client.xdel(self.key, *wanted))
        except redis.RedisError as exc:
            raise self._link.error(exc, f"removing dead letters from Redis ({self.key})") from exc

    def update(self, letter_id: str, letter: DeadLetter) -> str | None:
        old = format_id(parse_id(letter_id))
        try:
            new = self._update(keys=[self.key], args=[old, letter.to_json()])
        except redis.RedisError as exc:
            raise self._link.error(exc, f"updating a dead letter in Redis ({self.key})") from exc
        return None if new is None else _text(new)

    def purge(self) -> int:
        try:
            return int(self._client.xtrim(self.key, maxlen=0, approximate=False))
        except redis.RedisError as exc:
            raise self._link.error(exc, f"purging dead letters in Redis ({self.key})") from exc

    def size(self) -> int:
        try:
            return int(self._client.xlen(self.key))
        except redis.RedisError as exc:
            raise self._link.error(exc, f"reading dead letters from Redis ({self.key})") from exc

    def describe(self) -> str:
        return f"Redis stream {self.key}{self._link.where()}"

    def _letter(self, entry_id: Any, fields: dict[Any, Any]) -> tuple[str, DeadLetter]:
        letter_id = _text(entry_id)
        where = f"entry {letter_id} of Redis stream {self.key}"
        data = fields.get(b"letter")
        if data is None:
            raise CdcError(f"{where} has no `letter` field")
        return letter_id, DeadLetter.from_json(data, where)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
