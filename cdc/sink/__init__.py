"""Everything that talks to Elasticsearch/OpenSearch: requests, indices, `_bulk`."""
