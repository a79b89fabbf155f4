"""The editor schema of the config file: shipped up to date, true to the models, and it accepts
the example configs as they are written (with `${ENV}` references and includes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from cdc.cli.app import app
from cdc.config.schema import config_schema

REPO = Path(__file__).resolve().parents[3]
SHIPPED = REPO / "configs" / "connector.schema.json"
EXAMPLES = ["configs/connector.yaml", "configs/demo.yaml", "configs/blog.yaml"]


def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(config_schema())


def test_the_shipped_schema_is_what_cdc_schema_prints() -> None:
    printed = CliRunner().invoke(app, ["schema"])

    assert printed.exit_code == 0
    assert json.loads(printed.stdout) == config_schema()
    assert json.loads(SHIPPED.read_text()) == config_schema(), (
        "configs/connector.schema.json is out of date: run "
        "`.venv/bin/python -m cdc schema > configs/connector.schema.json`"
    )


@pytest.mark.parametrize("relative", EXAMPLES)
def test_example_configs_name_the_schema_and_pass_it_as_written(relative: str) -> None:
    text = (REPO / relative).read_text()

    assert text.splitlines()[0] == "# yaml-language-server: $schema=connector.schema.json"
    errors = sorted(_validator().iter_errors(yaml.safe_load(text)), key=str)
    assert errors == [], [e.message for e in errors]


def _errors(document: dict[str, Any]) -> list[str]:
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in _validator().iter_errors(document)
    ]


BASE: dict[str, Any] = {
    "name": "x",
    "source": {"user": "cdc", "server_id": 1},
    "sink": {"urls": ["http://es:9200"]},
    "checkpoint": {"file": {}},
    "tables": [{"table": "a.b", "index": "i"}],
}


def test_the_schema_flags_what_the_config_refuses() -> None:
    assert _errors(BASE) == []
    assert _errors({**BASE, "sorce": {}})  # unknown top-level field
    wrong_port = {**BASE, "source": {"user": "cdc", "server_id": 1, "port": "many"}}
    assert any(e.startswith("source.port") for e in _errors(wrong_port))
    child = {"table": "a.c", "field": "c", "relationship": "many"}
    assert _errors({**BASE, "tables": [{"table": "a.b", "index": "i", "children": [child]}]})


def test_environment_references_and_includes_are_allowed() -> None:
    doc = {
        **BASE,
        "source": {"user": "cdc", "server_id": "${SERVER_ID}", "port": "${PORT:-3306}"},
        "tables": [{"include": "tables/*.yaml"}, {"table": "a.b", "index": "i"}],
    }

    assert _errors(doc) == []


def test_fields_carry_their_documentation() -> None:
    source = config_schema()["$defs"]["SourceConfig"]["properties"]

    assert source["server_id"]["description"].startswith("Replica server id")
    children = config_schema()["$defs"]["ChildMapping"]["properties"]
    assert "array" in children["relationship"]["description"]
