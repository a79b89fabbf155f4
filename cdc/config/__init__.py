"""Connector configuration: one YAML file per connector, validated by pydantic models.

`load_config` reads a file in four steps:

1. parse it as YAML, refusing a key given twice in one mapping;
2. replace `${NAME}` and `${NAME:-default}` inside values from the environment;
3. replace each `- include: <glob>` under `tables:` by the table mappings in the matching files;
4. validate the result against `ConnectorConfig`, reporting every problem as one line of a
   `ConfigError` (`file:line: field.path: what is wrong (got value)`).

`loading` holds steps 1 to 3 and `load_config`; `models` the connector's pydantic models and
`mappings` the table mappings' (on the shared `base`), `expressions` the syntax of `where:`;
`schema` the JSON Schema for editors; `problems` the one-line messages for validation errors.
This module only re-exports.
"""

from cdc.config.loading import load_config
from cdc.config.mappings import (
    ChildMapping,
    Computed,
    FieldOptions,
    SnapshotMode,
    SoftDelete,
    TableMapping,
    Through,
)
from cdc.config.models import (
    BulkConfig,
    CheckpointConfig,
    ConnectorConfig,
    FileStoreConfig,
    MetricsConfig,
    RedisStoreConfig,
    SinkConfig,
    SnapshotConfig,
    SourceConfig,
    TlsConfig,
    VerifyConfig,
)
from cdc.errors import ConfigError

__all__ = [
    "BulkConfig",
    "CheckpointConfig",
    "ChildMapping",
    "Computed",
    "ConfigError",
    "ConnectorConfig",
    "FieldOptions",
    "FileStoreConfig",
    "MetricsConfig",
    "RedisStoreConfig",
    "SinkConfig",
    "SnapshotConfig",
    "SnapshotMode",
    "SoftDelete",
    "SourceConfig",
    "TableMapping",
    "Through",
    "TlsConfig",
    "VerifyConfig",
    "load_config",
]
