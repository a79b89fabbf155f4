"""Stream MySQL/MariaDB row changes into Elasticsearch/OpenSearch.

The connector tails the row-based binlog like a replica (`binlog`), turns each committed row
change into a document operation through declarative table mappings (`mapping`, `convert`),
sends them with external versions in `_bulk` requests (`elastic`), and records the position of
the last fully acknowledged transaction (`checkpoint`) so that a restart replays, never skips.
"""

__version__ = "0.1.0"
