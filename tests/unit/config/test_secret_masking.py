"""Config problems never quote a secret: URL passwords are masked, `*_password` fields hidden,
and a malformed `${` inside a password or a URL is located without quoting what follows it."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdc.config import ConfigError, load_config
from cdc.config.problems import mask_url, split_url_password

CONFIG = """\
name: shop
source:
  user: cdc
  password: {password}
  server_id: 7
sink:
  urls: [http://es:9200]
checkpoint:
  redis:
    url: {url}
tables:
  - table: shop.orders
    index: orders
"""


def problem(tmp_path: Path, **values: str) -> str:
    settings = {"password": "plain", "url": "redis://localhost:6379/0", **values}
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG.format(**settings), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    return caught.value.message


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:Pw-1@r:6379/0", "redis://:***@r:6379/0"),
        ("redis://cdc:Pw-1@r:6379/0", "redis://cdc:***@r:6379/0"),
        ("https://elastic:Pw-1@es:9200/prefix", "https://elastic:***@es:9200/prefix"),
        ("redis://:Pw-1@/0", "redis://:***@/0"),
        ("http://es:9200/a@b", "http://es:9200/a@b"),
        ("redis://cdc@r:6379/0", "redis://cdc@r:6379/0"),
        ("not a url", "not a url"),
    ],
)
def test_mask_url_hides_only_the_password(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_split_url_password() -> None:
    assert split_url_password("redis://u:p%40ss@h:1/0") == ("redis://u", "p%40ss", "h:1/0")
    assert split_url_password("redis://h:1/0") == ("redis://h:1/0", None, "")


def test_a_broken_reference_in_a_password_is_located_but_not_quoted(tmp_path: Path) -> None:
    message = problem(tmp_path, password="Pw-${Secret-rest")

    assert message.endswith(":4:16: a `${` that is not a valid variable reference")
    assert "Secret-rest" not in message


def test_a_broken_reference_in_a_url_is_located_but_not_quoted(tmp_path: Path) -> None:
    message = problem(tmp_path, url="redis://:Pw-${Secret-rest@r:6379/0")

    assert message.endswith(":10:22: a `${` that is not a valid variable reference")
    assert "Secret-rest" not in message


def test_a_broken_reference_elsewhere_is_still_quoted(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG.format(password="p", url="r") + "x-note: ${not closed\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})

    assert caught.value.message.endswith(":14:9: `${not` is not a valid variable reference")


def test_a_sentinel_password_of_the_wrong_type_is_not_echoed(tmp_path: Path) -> None:
    url = "redis://:Pw-1@/0\n    sentinels: [s:26379]\n    master: m\n    sentinel_password: [Pw-2]"
    message = problem(tmp_path, url=url)

    assert "checkpoint.redis.sentinel_password: " in message
    assert message.endswith("(value hidden)")
    assert "Pw-2" not in message and "Pw-1" not in message
