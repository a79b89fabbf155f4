"""Every `cdc` command takes the config the same way (the container's HEALTHCHECK relies on
CDC_CONFIG), and errors print in one format."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from cdc.cli.app import app
from cdc.cli.common import fail


def _commands(command: Any, path: str = "cdc") -> Iterator[tuple[str, Any]]:
    """Every command under `command` (a group has `commands`), with its full name."""
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from _commands(sub, f"{path} {name}")
    else:
        yield path, command


ALL = sorted(_commands(typer.main.get_command(app)))
NO_CONFIG = {"cdc init", "cdc schema"}
"""Commands about the config format itself or writing a config, not about one connector."""
WITH_CONFIG = [(path, command) for path, command in ALL if path not in NO_CONFIG]


def test_every_command_is_there() -> None:
    assert [path for path, _ in ALL] == [
        "cdc check",
        "cdc dlq list",
        "cdc dlq purge",
        "cdc dlq replay",
        "cdc health",
        "cdc init",
        "cdc position export",
        "cdc position import",
        "cdc position reset",
        "cdc position set",
        "cdc position show",
        "cdc run",
        "cdc schema",
        "cdc snapshot",
        "cdc status",
        "cdc verify",
    ]


@pytest.mark.parametrize(("path", "command"), WITH_CONFIG, ids=[path for path, _ in WITH_CONFIG])
def test_every_command_takes_its_config_from_the_option_or_cdc_config(
    path: str, command: Any
) -> None:
    (option,) = [p for p in command.params if "--config" in getattr(p, "opts", ())]
    assert option.opts == ["--config", "-c"]
    assert option.envvar == "CDC_CONFIG"


def test_a_config_from_cdc_config_is_used(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"

    result = CliRunner().invoke(app, ["status"], env={"CDC_CONFIG": str(missing)})

    assert result.exit_code == 2
    assert result.stderr == f"error: {missing}: file not found\n"


def test_errors_print_as_one_line_with_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as exited:
        fail("the server refused\nthe connection", "check   source.host\nand the port", code=1)

    assert exited.value.exit_code == 1
    assert capsys.readouterr().err == (
        "error: the server refused\nerror: the connection — check source.host and the port\n"
    )
