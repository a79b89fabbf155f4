"""TLS on every link, against real servers with certificates the tests make (`certs.Pki`).

A MariaDB with `require_secure_transport=ON`, a Redis with only a TLS port that requires client
certificates, and the Elasticsearch stand-in behind HTTPS (client certificates required too),
each once with a good certificate and once with an expired one. The connector streams over all
three with the right CA and client certificates; with a CA that did not sign the server's
certificate, an expired certificate, no client certificate, or no TLS at all where the server
requires it, `cdc check` and `cdc run` stop at once on that link with one paragraph naming the
server and the fix, instead of retrying forever.
"""

from __future__ import annotations

import os
import ssl
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from certs import Issued, Pki
from harness import CdcProcess, run_until_caught_up, write_config
from rig import BinaryMissing, MariaDB, Redis, Server, ServerTls
from typer.testing import CliRunner, Result

from cdc.cli.app import app
from cdc.testing import EsStandIn

S = TypeVar("S", bound=Server)

X509_USER = "cdc_x509"
"""A MariaDB user that must log in with a client certificate (`REQUIRE X509`)."""
DB = "shop"
FAIL_FAST = 20.0
"""Seconds within which `cdc run` must have given up on a refused certificate; a retried error
would keep it running (until `FAIL_FAST` kills it)."""


@dataclass(frozen=True)
class Certs:
    ca: Path
    """The CA that signed every server and client certificate below."""
    other_ca: Path
    """A CA that signed none of them."""
    server: Issued
    expired: Issued
    client: Issued


@dataclass(frozen=True)
class Site:
    """One server per link, all with the certificate the site is named for."""

    mariadb: MariaDB
    redis: Redis
    es: EsStandIn


def _build(factory: Callable[[], S]) -> S:
    try:
        return factory().start()
    except BinaryMissing as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{exc} (CI=true: integration tests must not be skipped)", pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    base = tmp_path_factory.mktemp("pki")
    pki = Pki(base / "ca")
    return Certs(
        ca=pki.ca,
        other_ca=Pki(base / "other", "another CA").ca,
        server=pki.server(),
        expired=pki.server("expired", expired=True),
        client=pki.client(),
    )


def _site(certs: Certs, server: Issued) -> Iterator[Site]:
    mariadb_tls = ServerTls(server.cert, server.key, certs.ca)
    redis_tls = ServerTls(server.cert, server.key, certs.ca, certs.client.cert, certs.client.key)
    es_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=certs.ca)
    es_context.load_cert_chain(server.cert, server.key)
    es_context.verify_mode = ssl.CERT_REQUIRED
    mariadb = _build(lambda: MariaDB(tls=mariadb_tls, extra_args=["--require-secure-transport=ON"]))
    redis = _build(lambda: Redis(tls=redis_tls))
    with mariadb, redis, EsStandIn(ssl_context=es_context) as es:
        yield Site(mariadb, redis, es)


@pytest.fixture(scope="module")
def site(certs: Certs) -> Iterator[Site]:
    """Servers with a good certificate; MariaDB has `shop.items` and the X509 user."""
    for found in _site(certs, certs.server):
        db = found.mariadb
        db.sql(f"CREATE DATABASE {DB}")
        db.sql(f"CREATE TABLE {DB}.items (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL)")
        db.sql(f"CREATE USER '{X509_USER}'@'%' IDENTIFIED BY 'x' REQUIRE X509")
        db.sql(f"GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO '{X509_USER}'@'%'")
        yield found


@pytest.fixture(scope="module")
def expired_site(certs: Certs) -> Iterator[Site]:
    """Servers whose certificate expired yesterday."""
    yield from _site(certs, certs.expired)


def _config(
    path: Path,
    certs: Certs,
    site: Site,
    *,
    source: dict[str, Any] | None = None,
    redis: dict[str, Any] | None = None,
    sink: dict[str, Any] | None = None,
) -> Path:
    """A config using every link with TLS, the right CA and client certificates; what is given
    here replaces those settings of the link (`source={"tls": None}` leaves TLS out). The
    connector and its index are named after the test's directory, so tests share no state."""
    client = {"client_cert": str(certs.client.cert), "client_key": str(certs.client.key)}
    good = {"ca_file": str(certs.ca), **client}
    source_section = {"user": X509_USER, "password": "x", "tls": good, **(source or {})}
    source_section = {key: value for key, value in source_section.items() if value is not None}
    redis_section = {"url": f"{site.redis.url}/0", "tls": good, **(redis or {})}
    return write_config(
        path,
        port=site.mariadb.port,
        es_url=site.es.url,
        redis_url=redis_section["url"],
        tables=[{"table": f"{DB}.items", "index": _name(path)}],
        name=_name(path),
        source=source_section,
        checkpoint={"redis": redis_section},
        sink={"tls": good, **(sink or {})},
    )


def _name(config: Path) -> str:
    return config.parent.name.lower()


def _check(config: Path) -> Result:
    return CliRunner().invoke(app, ["check", "--config", str(config)])


def _lines(output: str) -> dict[str, str]:
    """`cdc check` output as {check name: whole line}."""
    found = {}
    for line in output.splitlines():
        if line[:2] in ("✓ ", "✗ ", "! "):
            found[line[2:].split(":", 1)[0]] = line
    return found


def _rows(mariadb: MariaDB) -> dict[str, dict[str, Any]]:
    rows = mariadb.query(f"SELECT id, name FROM {DB}.items")
    return {str(row_id): {"id": row_id, "name": name} for row_id, name in rows}


def _run_fails_fast(config: Path) -> str:
    """The log of a `cdc run` that must exit 1 on its own within `FAIL_FAST` seconds."""
    with CdcProcess(config) as run:
        try:
            code = run.wait(timeout=FAIL_FAST)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"cdc run still running after {FAIL_FAST} s:\n{run.log()}"
            ) from None
        log = run.log()
    assert code == 1, log
    return log


def _one_paragraph(log: str, message: str, fix: str) -> None:
    """The error is logged once, as its message and a `Fix:` line, and nothing was retried."""
    assert log.count(message) == 1, log
    assert f"{message}\nFix: {fix}\n" in log, log
    assert "retry" not in log.lower() and "unavailable" not in log.lower(), log


# -- streaming --------------------------------------------------------------------------------


def test_rows_stream_end_to_end_over_tls_on_every_link(
    certs: Certs, site: Site, tmp_path: Path
) -> None:
    config = _config(tmp_path / "c.yaml", certs, site)
    run_until_caught_up(config)  # from the current position: the rows below are new
    db = site.mariadb
    db.sql(f"INSERT INTO {DB}.items VALUES (1, 'tea'), (2, 'cups'), (3, 'pot')")
    db.sql(f"UPDATE {DB}.items SET name = 'green tea' WHERE id = 1")
    db.sql(f"DELETE FROM {DB}.items WHERE id = 2")

    run_until_caught_up(config)

    assert (
        site.es.docs(_name(config))
        == _rows(db)
        == {
            "1": {"id": 1, "name": "green tea"},
            "3": {"id": 3, "name": "pot"},
        }
    )
    with site.redis.client() as client:
        assert client.get(f"cdc:{_name(config)}:checkpoint") is not None


def test_check_reports_the_tls_state_of_each_link(certs: Certs, site: Site, tmp_path: Path) -> None:
    result = _check(_config(tmp_path / "c.yaml", certs, site))

    assert result.exit_code == 0, result.output
    lines = _lines(result.stdout)
    verified = f"TLSv1.3, certificate verified against {certs.ca}"
    client = f"client certificate {certs.client.cert}"
    assert lines["checkpoint_store tls"] == f"✓ checkpoint_store tls: {verified}, {client}"
    assert lines["source tls"] == f"✓ source tls: {verified}, {client}"
    assert lines["sink tls"] == f"✓ sink tls: {verified}, {client}"
    assert all(line.startswith("✓ ") for line in lines.values()), result.stdout


def test_check_warns_about_a_link_whose_certificate_or_name_is_not_checked(
    certs: Certs, site: Site, tmp_path: Path
) -> None:
    client = {"client_cert": str(certs.client.cert), "client_key": str(certs.client.key)}
    config = _config(
        tmp_path / "c.yaml",
        certs,
        site,
        source={"tls": {"ca_file": str(certs.ca), "verify_identity": False, **client}},
        sink={"tls": {"verify": False, **client}},
    )

    result = _check(config)

    assert result.exit_code == 0, result.output
    lines = _lines(result.stdout)
    assert lines["source tls"] == (
        f"! source tls: TLSv1.3, certificate verified against {certs.ca}, client certificate "
        f"{certs.client.cert}, but not that it names the host — set "
        "source.tls.verify_identity: true"
    )
    assert lines["sink tls"] == (
        "! sink tls: TLSv1.3, but the server's certificate is not verified: anyone in "
        "between can read and change what is sent — set sink.tls.verify: true (and "
        "sink.tls.ca_file to the CA that signed the server's certificate)"
    )
    assert lines["checkpoint_store tls"].startswith("✓ ")
    assert result.stdout.splitlines()[-1].endswith(" passed, 2 warnings")


# -- refusals ---------------------------------------------------------------------------------

# What each link's refusal says; `{server}` is the server as the message names it.
UNTRUSTED = (
    "the TLS certificate of {server} is not signed by a CA the connector trusts "
    "(self-signed certificate in certificate chain)"
)
EXPIRED = "the TLS certificate of {server} has expired"


def _link_config(
    link: str, path: Path, certs: Certs, site: Site, tls: dict[str, Any]
) -> tuple[Path, str, str, str]:
    """A config whose `link` has the TLS options `tls` (against `site`), the other links good;
    with the check line's name, the message's start and the server as messages name it."""
    if link == "source":
        config = _config(path, certs, site, source={"tls": tls})
        return config, "source", f"connecting to 127.0.0.1:{site.mariadb.port}", "the server"
    if link == "checkpoint":
        config = _config(path, certs, site, redis={"tls": tls})
        what = f"reading the checkpoint from Redis (cdc:{_name(path)}:checkpoint)"
        return config, "checkpoint_store", what, f"127.0.0.1:{site.redis.port}"
    config = _config(path, certs, site, sink={"tls": tls})
    return config, "sink", "connecting to Elasticsearch", site.es.url


def _with_link_at(link: str, good: Site, bad: Site) -> Site:
    """The good site with `link`'s server taken from `bad`."""
    return Site(
        mariadb=bad.mariadb if link == "source" else good.mariadb,
        redis=bad.redis if link == "checkpoint" else good.redis,
        es=bad.es if link == "sink" else good.es,
    )


LINKS = ["source", "checkpoint", "sink"]
FIELDS = {"source": "source.tls", "checkpoint": "checkpoint.redis.tls", "sink": "sink.tls"}


@pytest.mark.parametrize("link", LINKS)
def test_a_ca_that_did_not_sign_the_certificate_stops_the_link_at_once_with_the_fix(
    link: str, certs: Certs, site: Site, tmp_path: Path
) -> None:
    wrong = {
        "ca_file": str(certs.other_ca),
        "client_cert": str(certs.client.cert),
        "client_key": str(certs.client.key),
    }
    config, name, what, server = _link_config(link, tmp_path / "c.yaml", certs, site, wrong)
    message = f"{what}: {UNTRUSTED.format(server=server)}"
    fix = (
        f"set {FIELDS[link]}.ca_file to the certificate (PEM) of the CA that signed the "
        "server's certificate"
    )

    checked = _check(config)
    log = _run_fails_fast(config)

    assert checked.exit_code == 1
    assert _lines(checked.stdout)[name] == f"✗ {name}: {message} — {fix}"
    _one_paragraph(log, message, fix)


@pytest.mark.parametrize("link", LINKS)
def test_an_expired_certificate_stops_the_link_at_once_with_the_fix(
    link: str, certs: Certs, site: Site, expired_site: Site, tmp_path: Path
) -> None:
    mixed = _with_link_at(link, site, expired_site)
    good = {
        "ca_file": str(certs.ca),
        "client_cert": str(certs.client.cert),
        "client_key": str(certs.client.key),
    }
    config, name, what, server = _link_config(link, tmp_path / "c.yaml", certs, mixed, good)
    message = f"{what}: {EXPIRED.format(server=server)}"
    fix = "renew the server's certificate (if it has not expired, correct this host's clock)"

    checked = _check(config)
    log = _run_fails_fast(config)

    assert checked.exit_code == 1
    assert _lines(checked.stdout)[name] == f"✗ {name}: {message} — {fix}"
    _one_paragraph(log, message, fix)


def test_a_server_requiring_tls_names_the_fix_to_a_config_without_it(
    certs: Certs, site: Site, tmp_path: Path
) -> None:
    config = _config(
        tmp_path / "c.yaml", certs, site, source={"user": "cdc", "password": "cdc", "tls": None}
    )
    port = site.mariadb.port
    message = (
        f"connecting to 127.0.0.1:{port}: access denied: Access denied for user "
        "'cdc'@'127.0.0.1' (using password: YES)"
    )
    fix = (
        "check source.user and source.password; or, if the server requires TLS "
        "(require_secure_transport=ON), add source.tls (with ca_file: the CA certificate that "
        "signed the server's certificate)"
    )

    checked = _check(config)
    log = _run_fails_fast(config)

    assert checked.exit_code == 1
    assert _lines(checked.stdout)["source"] == f"✗ source: {message} — {fix}"
    _one_paragraph(log, message, fix)


def test_a_server_requiring_a_client_certificate_names_the_fields_to_give_it(
    certs: Certs, site: Site, tmp_path: Path
) -> None:
    # TLS 1.3: Redis refuses the missing certificate after the handshake, and the client, which
    # writes first, mostly finds the connection closed before it reads why.
    config = _config(tmp_path / "c.yaml", certs, site, redis={"tls": {"ca_file": str(certs.ca)}})
    message = (
        f"reading the checkpoint from Redis (cdc:{_name(config)}:checkpoint): "
        f"127.0.0.1:{site.redis.port} requires a TLS client certificate and the connector "
        "gave none"
    )
    fix = (
        "set checkpoint.redis.tls.client_cert and client_key to a certificate signed by a CA "
        "the server trusts"
    )

    checked = _check(config)
    log = _run_fails_fast(config)

    assert checked.exit_code == 1
    assert _lines(checked.stdout)["checkpoint_store"] == f"✗ checkpoint_store: {message} — {fix}"
    _one_paragraph(log, message, fix)


def test_check_warns_when_the_source_offers_tls_the_config_does_not_use(
    certs: Certs, site: Site, tmp_path: Path
) -> None:
    config = _config(
        tmp_path / "c.yaml", certs, site, source={"user": "cdc", "password": "cdc", "tls": None}
    )
    site.mariadb.sql("SET GLOBAL require_secure_transport = OFF")
    try:
        result = _check(config)
    finally:
        site.mariadb.sql("SET GLOBAL require_secure_transport = ON")

    assert result.exit_code == 0, result.output
    assert _lines(result.stdout)["source tls"] == (
        f"! source tls: not encrypted, though 127.0.0.1:{site.mariadb.port} offers TLS — add "
        "source.tls (with ca_file: the CA certificate that signed the server's certificate)"
    )


def test_a_user_who_must_log_in_with_a_certificate_names_the_client_fields(
    certs: Certs, site: Site, tmp_path: Path
) -> None:
    config = _config(tmp_path / "c.yaml", certs, site, source={"tls": {"ca_file": str(certs.ca)}})

    checked = _check(config)

    assert checked.exit_code == 1
    assert _lines(checked.stdout)["source"] == (
        f"✗ source: connecting to 127.0.0.1:{site.mariadb.port}: access denied: Access denied "
        f"for user '{X509_USER}'@'127.0.0.1' (using password: YES) — check source.user and "
        "source.password; or, if the user must log in with a certificate (REQUIRE X509), set "
        "source.tls.client_cert and client_key"
    )
