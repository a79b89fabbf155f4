"""`checkpoint.redis`: one server by `url`, or a master through Redis Sentinel (`sentinels` and
`master`), and the exact words for every way of getting that wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdc.config import ConfigError, load_config

HEAD = """\
name: shop
source:
  user: cdc
  server_id: 7
sink:
  urls: [http://es:9200]
tables:
  - table: shop.orders
    index: orders
checkpoint:
  redis:
"""


def config(tmp_path: Path, redis: str) -> Path:
    """A config whose `checkpoint.redis` section is `redis` (indented lines), from line 11."""
    path = tmp_path / "c.yaml"
    path.write_text(HEAD + "".join(f"    {line}\n" for line in redis.splitlines()))
    return path


def error_lines(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env or {})
    return caught.value.message.splitlines()


def test_sentinels_with_a_master_name_need_no_url(tmp_path: Path) -> None:
    cfg = load_config(
        config(
            tmp_path, "sentinels: [10.0.0.1:26379, 'sentinel-b:26380', '[::1]:26379']\nmaster: cdc"
        ),
        env={},
    )

    redis = cfg.checkpoint.redis
    assert redis is not None
    assert redis.sentinels == ["10.0.0.1:26379", "sentinel-b:26380", "[::1]:26379"]
    assert (redis.master, redis.url, redis.sentinel_password) == ("cdc", None, None)


def test_the_masters_password_database_and_tls_come_from_a_url_without_a_host(
    tmp_path: Path,
) -> None:
    path = config(
        tmp_path,
        "url: rediss://:${REDIS_PW}@/3\n"
        "sentinels: [s1:26379]\n"
        "master: cdc\n"
        "sentinel_password: ${SENTINEL_PW:-}",
    )

    redis = load_config(path, env={"REDIS_PW": "pw"}).checkpoint.redis
    assert redis is not None
    assert redis.url == "rediss://:pw@/3"
    assert redis.sentinel_password is None  # an empty variable means none
    with_password = load_config(path, env={"REDIS_PW": "pw", "SENTINEL_PW": "s"}).checkpoint.redis
    assert with_password is not None and with_password.sentinel_password == "s"


def test_a_url_alone_is_still_one_server(tmp_path: Path) -> None:
    redis = load_config(config(tmp_path, "url: redis://r:6379/0"), env={}).checkpoint.redis

    assert redis is not None
    assert (redis.url, redis.sentinels, redis.master) == ("redis://r:6379/0", [], None)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            "key_prefix: cdc",
            "11: checkpoint.redis: give `url` (one Redis server), or `sentinels` and `master` "
            "(Redis Sentinel)",
        ),
        (
            "sentinels: [s1:26379]",
            "11: checkpoint.redis: `sentinels` needs `master`, the name the Sentinels monitor "
            "the master under",
        ),
        (
            "url: redis://r:6379/0\nmaster: cdc",
            "11: checkpoint.redis: `master` needs `sentinels`, the Sentinels' `host:port` list",
        ),
        (
            "url: redis://r:6379/0\nsentinel_password: pw",
            "11: checkpoint.redis: `sentinel_password` needs `sentinels`, the Sentinels' "
            "`host:port` list",
        ),
        (
            "url: redis://:pw@r:6379/0\nsentinels: [s1:26379]\nmaster: cdc",
            "11: checkpoint.redis: with `sentinels`, `url` must not name a server (the Sentinels "
            "name the master): give `redis://:password@/0` or `rediss://...` without a host, or "
            "leave `url` out",
        ),
        (
            "url: unix:///run/redis.sock\nsentinels: [s1:26379]\nmaster: cdc",
            "11: checkpoint.redis: with `sentinels`, `url` must not name a server (the Sentinels "
            "name the master): give `redis://:password@/0` or `rediss://...` without a host, or "
            "leave `url` out",
        ),
        (
            "sentinels: [s1:26379, s2]\nmaster: cdc",
            "12: checkpoint.redis.sentinels[1]: must be `host:port`, e.g. `10.0.0.1:26379` "
            '(got "s2")',
        ),
        (
            "sentinels: [':26379']\nmaster: cdc",
            "12: checkpoint.redis.sentinels[0]: must be `host:port`, e.g. `10.0.0.1:26379` "
            '(got ":26379")',
        ),
        (
            "sentinels: ['s1:65536']\nmaster: cdc",
            "12: checkpoint.redis.sentinels[0]: must be `host:port`, e.g. `10.0.0.1:26379` "
            '(got "s1:65536")',
        ),
        (
            "sentinels: [s1:26379]\nmaster: ''",
            '13: checkpoint.redis.master: must not be empty (got "")',
        ),
    ],
)
def test_each_wrong_combination_says_what_to_give(
    tmp_path: Path, section: str, message: str
) -> None:
    path = config(tmp_path, section)

    assert error_lines(path) == [f"{path}:{message}"]
