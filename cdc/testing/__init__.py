"""Stand-ins used by the tests, the benchmark and the container smoke test.

- `FaultProxy` (`cdc.testing.proxy`): a TCP proxy that can pass bytes through, reset every
  connection, black-hole traffic or add latency, switched at runtime.
- `EsStandIn` (`cdc.testing.standin`): an in-process HTTP server speaking the part of the
  Elasticsearch API the connector uses, with external-version semantics, injectable failures and
  a store-nothing mode for throughput runs.
- `memory_stores` (`cdc.testing.memory`): the connector's stores in memory, for unit tests.

They use only the standard library plus the connector's own dependencies; the two servers run
in background threads and are controlled from the calling thread.
"""

from __future__ import annotations

from cdc.testing.proxy import FaultProxy
from cdc.testing.standin import BulkOp, EsStandIn

__all__ = ["BulkOp", "EsStandIn", "FaultProxy"]
