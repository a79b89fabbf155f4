"""`cdc schema`: print the JSON Schema of the config file, for editors."""

from __future__ import annotations

import orjson
import typer

from cdc.config.schema import config_schema

SCHEMA_HELP = """Print the JSON Schema of the connector config file.

Editors that read JSON Schema (VS Code and others through yaml-language-server) complete and
check config fields with it; `configs/connector.schema.json` is this output, and the example
configs name it in their first line. Exit status 0."""


def schema() -> None:
    typer.echo(orjson.dumps(config_schema(), option=orjson.OPT_INDENT_2).decode())
