"""`source.tls` and `checkpoint.redis.tls`: what turns TLS on, where relative paths lead, and
the words for giving TLS options to a link that does not use TLS."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdc.config import ConfigError, load_config

CONFIG = """\
name: shop
source:
  user: cdc
  server_id: 7
{source}
sink:
  urls: [http://es:9200]
tables:
  - table: shop.orders
    index: orders
checkpoint:
  redis:
{redis}
"""


def config(tmp_path: Path, source: str = "", redis: str = "url: redis://r:6379/0") -> Path:
    """A config with `source` added under `source:` (from line 5) and `redis` as its
    `checkpoint.redis` section (indented lines)."""
    path = tmp_path / "conf" / "c.yaml"
    path.parent.mkdir(exist_ok=True)
    indent = "    "
    path.write_text(
        CONFIG.format(
            source="\n".join(f"  {line}" for line in source.splitlines()),
            redis="\n".join(f"{indent}{line}" for line in redis.splitlines()),
        )
    )
    return path


def pem(tmp_path: Path, name: str) -> Path:
    path = tmp_path / "conf" / "certs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return path


def error_lines(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    return caught.value.message.splitlines()


def test_the_source_uses_tls_only_when_source_tls_is_given(tmp_path: Path) -> None:
    plain = load_config(config(tmp_path), env={})
    system_cas = load_config(config(tmp_path, "tls: {}"), env={})

    assert plain.source.tls is None
    tls = system_cas.source.tls
    assert tls is not None
    assert (tls.verify, tls.verify_identity, tls.ca_file, tls.client_cert) == (
        True,
        True,
        None,
        None,
    )


def test_source_tls_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    for name in ("ca.pem", "client.pem", "client-key.pem"):
        pem(tmp_path, name)
    path = config(
        tmp_path,
        "tls:\n  ca_file: certs/ca.pem\n  client_cert: certs/client.pem\n"
        "  client_key: certs/client-key.pem\n  verify_identity: false",
    )

    tls = load_config(path, env={}).source.tls

    assert tls is not None
    certs = tmp_path / "conf" / "certs"
    assert (tls.ca_file, tls.client_cert, tls.client_key) == (
        str(certs / "ca.pem"),
        str(certs / "client.pem"),
        str(certs / "client-key.pem"),
    )
    assert tls.verify_identity is False


def test_source_tls_files_must_exist_and_a_key_needs_its_certificate(tmp_path: Path) -> None:
    pem(tmp_path, "key.pem")
    path = config(tmp_path, "tls:\n  ca_file: certs/missing.pem\n  client_key: certs/key.pem")

    assert error_lines(path) == [
        f"{path}:6: source.tls.ca_file: no such file: {tmp_path}/conf/certs/missing.pem "
        '(got "certs/missing.pem")',
        f'{path}:7: source.tls.client_key: needs `client_cert` as well (got "certs/key.pem")',
    ]


def test_redis_tls_options_apply_to_a_rediss_url(tmp_path: Path) -> None:
    pem(tmp_path, "ca.pem")
    path = config(tmp_path, redis="url: rediss://r:6380/0\ntls:\n  ca_file: certs/ca.pem")

    redis = load_config(path, env={}).checkpoint.redis

    assert redis is not None and redis.tls is not None
    assert redis.tls.ca_file == str(tmp_path / "conf" / "certs" / "ca.pem")


@pytest.mark.parametrize("url", ["redis://r:6379/0", "unix:///run/redis.sock"])
def test_redis_tls_options_without_a_rediss_url_are_refused(tmp_path: Path, url: str) -> None:
    path = config(tmp_path, redis=f"url: {url}\ntls:\n  verify: false")

    (line,) = error_lines(path)

    assert line.startswith(f"{path}:")
    assert "checkpoint.redis: `tls` applies to TLS connections: give a `rediss://` url" in line
