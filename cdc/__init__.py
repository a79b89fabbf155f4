"""Stream MySQL/MariaDB row changes into Elasticsearch/OpenSearch.

The connector tails the row-based binlog like a replica (`source`), turns each committed row
change into document operations through declarative table mappings (`transform`), sends them
with external versions in `_bulk` requests (`sink`), and records the position of the last
fully acknowledged transaction (`state`) so that a restart replays, never skips. `engine` runs
these stages and keeps the invariants of docs/design.md; `cli` is the `cdc` command.
"""

__version__ = "0.1.0"
