"""The `cdc` command line: parses options, configures logging, builds objects, calls the core."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import orjson
import typer

from cdc.config import ConnectorConfig, load_config
from cdc.engine.pipeline import Pipeline
from cdc.errors import CdcError
from cdc.metrics import Metrics
from cdc.model.checkpoint import CheckpointStore, FileCheckpointStore
from cdc.sink.elastic import ElasticSink, Interrupted
from cdc.state.dlq import open_dlq
from cdc.state.redis import RedisCheckpointStore

app = typer.Typer(
    help="Stream MySQL/MariaDB row changes into Elasticsearch/OpenSearch.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Stream MySQL/MariaDB row changes into Elasticsearch/OpenSearch.

    Every command takes the connector's YAML config with --config.
    """


STOP_GRACE_SECONDS = 8.0
"""After SIGTERM/SIGINT, the longest a stop may take before the connector records the
acknowledged position and exits anyway."""

ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config",
        "-c",
        envvar="CDC_CONFIG",
        help="Connector config YAML (or the CDC_CONFIG environment variable).",
        show_default=False,
    ),
]


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def setup_logging(fmt: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("elastic_transport", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # The binlog library warns on every reconnect attempt we refuse; our own log says it once.
    logging.getLogger("pymysqlreplication").setLevel(logging.ERROR)


def make_store(cfg: ConnectorConfig) -> CheckpointStore:
    """The checkpoint store the config asks for."""
    if cfg.checkpoint.redis is not None:
        r = cfg.checkpoint.redis
        return RedisCheckpointStore(r.url, r.key_prefix, cfg.name)
    assert cfg.checkpoint.file is not None
    return FileCheckpointStore(cfg.checkpoint.file.path, cfg.name)


def _fail(exc: CdcError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(2)


@app.command()
def run(
    config: ConfigOption,
    until_caught_up: Annotated[
        bool,
        typer.Option(help="Exit once everything the server had at start is applied."),
    ] = False,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
) -> None:
    """Stream changes until stopped (SIGINT/SIGTERM stop cleanly after a final checkpoint)."""
    try:
        cfg = load_config(config)
    except CdcError as exc:
        raise _fail(exc) from None
    setup_logging(cfg.log_format, log_level.upper())
    stop = threading.Event()
    running: list[Pipeline] = []

    def give_up() -> None:
        for pipeline in running:
            pipeline.abandon()
        logging.shutdown()
        os._exit(0)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logging.getLogger("cdc").info("received %s, stopping", signal.Signals(signum).name)
        if not stop.is_set():
            stop.set()
            # A stop must finish in bounded time even while a request to an unreachable
            # cluster waits for its timeout: then record what was acknowledged and exit.
            watchdog = threading.Timer(STOP_GRACE_SECONDS, give_up)
            watchdog.daemon = True
            watchdog.start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sink = ElasticSink(cfg.sink)
    store = make_store(cfg)
    metrics = Metrics()
    if cfg.metrics.enabled:
        try:
            port = metrics.serve(cfg.metrics.host, cfg.metrics.port)
        except OSError as exc:
            logging.getLogger("cdc").error(
                "cannot serve metrics on %s:%d: %s (set metrics.port, or metrics.enabled: false)",
                cfg.metrics.host,
                cfg.metrics.port,
                exc.strerror,
            )
            sink.close()
            store.close()
            raise typer.Exit(1) from None
        logging.getLogger("cdc").info("metrics on http://%s:%d/metrics", cfg.metrics.host, port)
    try:
        pipeline = Pipeline(cfg, sink, store, stop=stop, metrics=metrics, dlq=open_dlq(cfg))
        running.append(pipeline)
        stats = pipeline.run(until_caught_up=until_caught_up)
    except Interrupted:
        logging.getLogger("cdc").info("stopped before streaming began")
        return
    except CdcError as exc:
        logging.getLogger("cdc").error("%s", exc)
        raise typer.Exit(1) from None
    finally:
        metrics.close()
        sink.close()
        store.close()
    logging.getLogger("cdc").info(
        "stopped: %d transactions, %d row changes, %d document operations, %d checkpoints",
        stats.transactions,
        stats.changes,
        stats.actions,
        stats.checkpoints,
    )


# Sub-command groups and commands defined in their own modules register here.
from cdc.cli import dlq as cli_dlq  # noqa: E402 - kept with the registrations
from cdc.cli import ops as cli_ops  # noqa: E402 - kept with the registrations
from cdc.cli import position as cli_position  # noqa: E402 - kept with the registrations
from cdc.cli import snapshot as cli_snapshot  # noqa: E402 - kept with the registrations

app.add_typer(cli_position.app, name="position")
cli_ops.register(app)
app.add_typer(cli_dlq.app, name="dlq")
app.command()(cli_snapshot.snapshot)


def main() -> None:
    app()
