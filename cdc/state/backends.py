"""The one place that opens the state backend a config names."""

from __future__ import annotations

from cdc.config import ConnectorConfig
from cdc.state.files import open_files
from cdc.state.redis import open_redis
from cdc.state.stores import Stores


def open_stores(cfg: ConnectorConfig, timeout: float = 5.0, name: str | None = None) -> Stores:
    """The stores of the configured connector (or of connector `name` on the same backend), in
    Redis (one server, or the master Redis Sentinel names) with socket timeouts of `timeout`
    seconds, or in the checkpoint directory."""
    name = name or cfg.name
    if cfg.checkpoint.redis is not None:
        r = cfg.checkpoint.redis
        return open_redis(
            r.url,
            r.key_prefix,
            name,
            timeout,
            sentinels=r.sentinels,
            master=r.master,
            sentinel_password=r.sentinel_password,
            tls=r.tls,
        )
    assert cfg.checkpoint.file is not None
    return open_files(cfg.checkpoint.file.path, name)
