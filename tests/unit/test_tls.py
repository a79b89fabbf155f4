"""Which TLS failures are the certificates' fault, and what each link says about them.

The failures come from real handshakes, run in memory (`ssl.MemoryBIO`) between a server
context and the client context the connector would build, with certificates made for the test:
a CA the client does not trust, an expired certificate, one naming another host, a client
certificate missing or signed by a CA the server does not know, a peer that is not TLS, a
handshake cut short. The adapters then meet them wrapped as their libraries wrap them.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TypeVar

import pymysql
import pytest
import redis
from certs import Issued, Pki
from elastic_transport import TlsError

from cdc import tls
from cdc.config import SinkConfig, SourceConfig
from cdc.errors import CdcError, SinkUnreachable
from cdc.sink.elastic import ElasticSink
from cdc.source.mysql import connection_settings, translate_error
from cdc.state.redis import translate

E = TypeVar("E", bound=BaseException)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA nobody trusts."""
    return Pki(tmp_path_factory.mktemp("stranger"), "stranger CA")


def _server(cert: Issued, clients: Path | None = None) -> ssl.SSLContext:
    """A server context presenting `cert`, requiring a client certificate signed by `clients`."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert.cert, cert.key)
    if clients is not None:
        ctx.load_verify_locations(clients)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _client(ca: Path, cert: Issued | None = None) -> ssl.SSLContext:
    return tls.context(
        ca_file=str(ca),
        client_cert=None if cert is None else str(cert.cert),
        client_key=None if cert is None else str(cert.key),
    )


def _pump(src: ssl.MemoryBIO, dst: ssl.MemoryBIO) -> None:
    data = src.read()
    if data:
        dst.write(data)


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> ssl.SSLError | None:
    """What the client meets shaking hands with the server (as `127.0.0.1`) and reading the
    first bytes after it: None when all went well."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    near = client.wrap_bio(c_in, c_out, server_hostname="127.0.0.1")
    far = server.wrap_bio(s_in, s_out, server_side=True)
    near_done = far_done = False
    for _ in range(10):
        if not near_done:
            try:
                near.do_handshake()
                near_done = True
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                return exc
        _pump(c_out, s_in)
        if not far_done:
            try:
                far.do_handshake()
                far_done = True
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError:
                far_done = True  # its alert is on the way to the client
        _pump(s_out, c_in)
        if near_done and far_done:
            break
    # TLS 1.3 tells the client what the server thought of its certificate after the handshake.
    try:
        near.read(1)
    except ssl.SSLWantReadError:
        return None
    except ssl.SSLError as exc:
        return exc
    return None


def _refused(found: ssl.SSLError | None) -> CdcError:
    assert found is not None
    failure = tls.failure(found)
    assert failure is found
    return tls.refusal(failure, "connecting to db:3306", "source.tls", server="db:3306")


def test_a_good_handshake_fails_nothing(pki: Pki) -> None:
    assert _handshake(_server(pki.server(), pki.ca), _client(pki.ca, pki.client())) is None


def test_a_certificate_signed_by_an_unknown_ca_names_the_ca_file_field(
    pki: Pki, stranger: Pki
) -> None:
    error = _refused(_handshake(_server(stranger.server()), _client(pki.ca)))

    assert not error.transient
    assert error.message == (
        "connecting to db:3306: the TLS certificate of db:3306 is not signed by a CA the "
        "connector trusts (unable to get local issuer certificate)"
    )
    assert error.hint == (
        "set source.tls.ca_file to the certificate (PEM) of the CA that signed the server's "
        "certificate"
    )


def test_an_expired_certificate_says_renew_it(pki: Pki) -> None:
    error = _refused(_handshake(_server(pki.server("old", expired=True)), _client(pki.ca)))

    assert error.message == "connecting to db:3306: the TLS certificate of db:3306 has expired"
    assert error.hint is not None and error.hint.startswith("renew the server's certificate")


def test_a_certificate_for_another_host_says_so(pki: Pki) -> None:
    error = _refused(_handshake(_server(pki.server("elsewhere", ("db.example",))), _client(pki.ca)))

    assert error.message.startswith(
        "connecting to db:3306: the TLS certificate of db:3306 does not name the host "
        "connected to (IP address mismatch"
    )
    assert error.hint is not None and "subject alternative names" in error.hint


def test_not_checking_the_name_accepts_a_certificate_for_another_host(pki: Pki) -> None:
    client = tls.context(ca_file=str(pki.ca), verify_identity=False)

    assert _handshake(_server(pki.server("elsewhere2", ("db.example",))), client) is None


def test_a_missing_client_certificate_names_the_client_fields(pki: Pki) -> None:
    error = _refused(_handshake(_server(pki.server(), pki.ca), _client(pki.ca)))

    assert error.message == (
        "connecting to db:3306: db:3306 requires a TLS client certificate and the connector "
        "gave none"
    )
    assert error.hint is not None and error.hint.startswith("set source.tls.client_cert and")


def test_a_client_certificate_the_server_does_not_trust_is_named(pki: Pki, stranger: Pki) -> None:
    server = _server(pki.server(), pki.ca)

    error = _refused(_handshake(server, _client(pki.ca, stranger.client("outsider"))))

    assert error.message.startswith(
        "connecting to db:3306: db:3306 refused the connector's TLS client certificate ("
    )


def test_a_peer_that_does_not_speak_tls_says_how_to_go_without_it(pki: Pki) -> None:
    c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    near = _client(pki.ca).wrap_bio(c_in, c_out, server_hostname="127.0.0.1")
    c_in.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(ssl.SSLError) as raised:
        near.do_handshake()

    found = tls.failure(raised.value)
    assert found is not None
    error = tls.refusal(found, "x", "sink.tls", plaintext="use an http:// URL")
    assert error.message.startswith("x: the server does not speak TLS on that port (")
    assert error.hint == "use an http:// URL"


def test_a_handshake_cut_short_is_a_broken_link_not_a_certificate_problem(pki: Pki) -> None:
    c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    near = _client(pki.ca).wrap_bio(c_in, c_out, server_hostname="127.0.0.1")
    c_in.write_eof()
    with pytest.raises(ssl.SSLError) as raised:
        near.do_handshake()

    assert tls.failure(raised.value) is None
    assert tls.failure(ConnectionResetError(104, "reset")) is None
    assert tls.failure(TimeoutError("_ssl.c:989: The handshake operation timed out")) is None


def test_a_file_that_is_not_pem_says_which_fields_to_fix(tmp_path: Path) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
    with pytest.raises(ssl.SSLError) as raised:
        tls.context(ca_file=str(garbage))

    found = tls.failure(raised.value)
    assert found is not None
    error = tls.refusal(found, "x", "checkpoint.redis.tls")
    assert error.message.startswith("x: the TLS files of checkpoint.redis.tls do not load (")
    assert error.hint is not None and "checkpoint.redis.tls.ca_file" in error.hint


# -- the adapters ---------------------------------------------------------------------------


def _expired(pki: Pki) -> ssl.SSLError:
    found = _handshake(_server(pki.server("stale", expired=True)), _client(pki.ca))
    assert found is not None
    return found


def _wrapped(wrapper: E, cause: BaseException) -> E:
    """`wrapper`, raised while `cause` was handled, as the libraries raise theirs."""
    try:
        try:
            raise cause
        except BaseException:
            raise wrapper  # noqa: B904 - the implicit context is what the libraries leave
    except BaseException:
        return wrapper


def test_pymysql_wraps_a_refused_certificate_in_a_connection_error_that_is_terminal(
    pki: Pki,
) -> None:
    cause = _expired(pki)
    lost = pymysql.err.OperationalError(2003, f"Can't connect to MySQL server on 'db' ({cause})")
    lost.original_exception = cause  # type: ignore[attr-defined]

    error = translate_error(lost, "connecting to db:3306")

    assert not error.transient
    assert error.message == "connecting to db:3306: the TLS certificate of the server has expired"


@pytest.mark.parametrize(
    ("code", "message", "hint"),
    [
        (
            3159,
            "Connections using insecure transport are prohibited while "
            "--require_secure_transport=ON.",
            "add source.tls",
        ),
        (2026, "SSL is required but the server doesn't support it", "remove source.tls"),
    ],
)
def test_a_server_requiring_tls_or_lacking_it_says_which_way_to_go(
    code: int, message: str, hint: str
) -> None:
    error = translate_error(pymysql.err.OperationalError(code, message), "connecting to db:3306")

    assert not error.transient
    assert error.hint is not None and hint in error.hint


def test_a_lost_tls_link_is_still_retried() -> None:
    eof = ssl.SSLEOFError(8, "EOF occurred in violation of protocol")
    lost = _wrapped(pymysql.err.OperationalError(2013, "Lost connection to MySQL server"), eof)

    assert translate_error(lost, "reading the binlog").transient


def test_the_source_uses_tls_only_as_configured(pki: Pki) -> None:
    base = {"user": "cdc", "server_id": 7}
    plain = connection_settings(SourceConfig(**base))
    unverified = connection_settings(SourceConfig(**base, tls={"verify": False}))
    nameless = connection_settings(
        SourceConfig(**base, tls={"ca_file": str(pki.ca), "verify_identity": False})
    )

    assert plain["ssl_disabled"] is True and "ssl" not in plain
    assert unverified["ssl"].verify_mode == ssl.CERT_NONE
    assert nameless["ssl"].verify_mode == ssl.CERT_REQUIRED
    assert nameless["ssl"].check_hostname is False


def test_redis_wraps_a_refused_certificate_in_a_connection_error_that_is_terminal(
    pki: Pki,
) -> None:
    lost = _wrapped(redis.ConnectionError("Error 1 connecting to r:6380."), _expired(pki))

    error = translate(lost, "reading the checkpoint", server="r:6380")

    assert not error.transient
    assert error.message == "reading the checkpoint: the TLS certificate of r:6380 has expired"


def test_elasticsearch_reports_a_refused_certificate_terminally_and_names_the_url(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = ElasticSink(SinkConfig(urls=["https://es:9200"]))
    refused = _wrapped(TlsError("certificate verify failed"), _expired(pki))

    def perform_request(*args: object, **kwargs: object) -> None:
        raise refused

    monkeypatch.setattr(sink._transport, "perform_request", perform_request)
    with pytest.raises(CdcError) as raised:
        sink.info()

    assert not isinstance(raised.value, SinkUnreachable)
    assert raised.value.message == (
        "connecting to Elasticsearch: the TLS certificate of https://es:9200 has expired"
    )


def test_redis_asks_why_a_tls_connection_closed_without_a_word(pki: Pki) -> None:
    refusal = _handshake(_server(pki.server(), pki.ca), _client(pki.ca))
    assert refusal is not None
    closed = ssl.SSLEOFError(8, "EOF occurred in violation of protocol")
    lost = _wrapped(redis.ConnectionError("Error 8 while writing to socket."), closed)
    asked: list[bool] = []

    def diagnose() -> ssl.SSLError | None:
        asked.append(True)
        return refusal

    refused = translate(lost, "x", server="r:6380", diagnose=diagnose)
    accepted = translate(lost, "x", server="r:6380", diagnose=lambda: None)
    refused_alone = translate(
        _wrapped(redis.ConnectionError("Error 111 connecting"), ConnectionRefusedError(111, "no")),
        "x",
        diagnose=diagnose,
    )

    assert not refused.transient
    assert (
        refused.message == "x: r:6380 requires a TLS client certificate and the connector gave none"
    )
    assert accepted.transient and refused_alone.transient
    assert asked == [True]  # not for a connection that was refused outright
