"""The `cdc` command: one Typer app, with every command registered from its own module."""

from __future__ import annotations

import typer

from cdc.cli import check, dlq, init, position, run, schema, snapshot, status, verify

app = typer.Typer(
    help="Stream MySQL/MariaDB row changes into Elasticsearch/OpenSearch.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Stream MySQL/MariaDB row changes into Elasticsearch/OpenSearch.

    Every command takes the connector's YAML config with -c/--config or CDC_CONFIG.
    """


app.command()(run.run)
app.command("status", help=status.STATUS_HELP)(status.status)
app.command("health", help=status.HEALTH_HELP)(status.health)
app.command("check", help=check.CHECK_HELP)(check.check)
app.command("init", help=init.INIT_HELP)(init.init)
app.command()(snapshot.snapshot)
app.command("verify", help=verify.VERIFY_HELP)(verify.verify)
app.command("schema", help=schema.SCHEMA_HELP)(schema.schema)
app.add_typer(position.app, name="position")
app.add_typer(dlq.app, name="dlq")


def main() -> None:
    app()
