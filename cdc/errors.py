"""The connector's exception hierarchy.

Third-party exceptions (PyMySQL, redis, elastic-transport) are translated into these at the
module that talks to that system (`cdc.source.mysql`, `cdc.state.redis`, `cdc.sink.elastic`),
so nothing above it sees a foreign exception; an exception that is not translated is a bug.
Whether an error is retried is decided by its class (`transient`), and `cdc.retry` is the one
policy every retrying loop uses.

    CdcError                      base; `hint` tells the operator what to do
    ├── ConfigError               bad YAML, bad field, unknown column (terminal)
    ├── PrerequisiteError         server setting or privilege missing (terminal)
    ├── PositionError             checkpoint unusable: purged, unknown, malformed (terminal)
    ├── MappingError              a row cannot be turned into a document (terminal)
    ├── SchemaChanged             a table changed under a read; read it again (terminal)
    ├── DocumentRejected          Elasticsearch refused a document for its content (terminal)
    ├── Interrupted               the connector is stopping; the operation was abandoned
    ├── LeaseLost                 another connector of this name holds the lease now
    └── TransientError            a link is down; retried with backoff
        ├── SourceUnavailable     MySQL/MariaDB unreachable or the stream broke
        ├── SinkUnavailable       Elasticsearch unreachable, 429 or 5xx
        │   └── SinkUnreachable   no answer at all (connection refused or reset, timeout)
        └── CheckpointUnavailable Redis (or the checkpoint file) unreachable
"""

from __future__ import annotations


class CdcError(Exception):
    """Base class. `hint` is one sentence telling the operator how to fix it."""

    transient = False

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\nFix: {self.hint}"
        return self.message


class ConfigError(CdcError):
    """The configuration cannot be loaded or is invalid."""


class PrerequisiteError(CdcError):
    """The source server lacks a setting or privilege the connector needs."""


class PositionError(CdcError):
    """A stored or requested position cannot be used (purged, unknown, malformed)."""


class MappingError(CdcError):
    """A row change cannot be mapped to a document."""


class LeaseLost(CdcError):
    """Another connector of the same name took the lease (this one was frozen, cut off from
    Redis, or too slow to renew): this one steps down to standby, and its checkpoint write
    was refused."""


class SchemaChanged(CdcError):
    """A table changed while it was being read (a column vanished, its definition changed);
    reading it again with its new definition succeeds."""


class DocumentRejected(CdcError):
    """Elasticsearch rejected a document because of its content (mapping or parse error)."""


class Interrupted(CdcError):
    """The connector is stopping; the operation was abandoned before it completed."""


class TransientError(CdcError):
    """A link to an outside system failed; the operation may succeed when retried."""

    transient = True


class SourceUnavailable(TransientError):
    """The MySQL/MariaDB server is unreachable or the binlog stream broke."""


class SinkUnavailable(TransientError):
    """Elasticsearch/OpenSearch is unreachable, overloaded (429) or failing (5xx)."""


class SinkUnreachable(SinkUnavailable):
    """Elasticsearch did not answer at all: the link is down, not the cluster busy, so it is
    probed cheaply (not sent the whole batch again) until it answers."""


class CheckpointUnavailable(TransientError):
    """The checkpoint store (Redis or file) cannot be read or written right now."""
