"""TLS on the connector's three links: which failures are the certificates' fault, what to
say about them, and the client context the source and `cdc check` use.

Each adapter hands its library the TLS options of its link (`source.tls`, `sink.tls`,
`checkpoint.redis.tls`) and translates its library's errors (`cdc.source.mysql`,
`cdc.sink.elastic`, `cdc.state.redis`); what they share is here. A TLS failure that retrying
cannot fix is found inside the library's exception by `failure`, and `refusal` turns it into a
terminal `CdcError` naming the server, the reason and the fix:

    the server's certificate is not accepted   unknown CA, expired, not valid yet, not naming
                                               the host
    the server refuses the connector's         none given, unknown CA, expired
    a TLS file does not load                   not PEM, the key not the certificate's
    the server does not speak TLS there        a plaintext port

A TLS connection that breaks (EOF, reset, a timeout) is none of these: the adapter's transient
error, retried like any lost link. One refusal looks just like that, though: a TLS 1.3 server
checks the client's certificate after the client has finished its handshake, and a client that
writes first (Redis) finds the connection closed, the server's alert unread. `ended_early`
tells such a failure, and `diagnose` shakes hands again and reads, which finds the alert.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
from collections.abc import Iterator

from cdc.errors import CdcError

# OpenSSL's verify codes (X509_V_ERR_*) that say why the server's certificate was refused.
_EXPIRED = 10
_NOT_YET_VALID = 9
_NAME_MISMATCH = frozenset({62, 64})  # host name, IP address
_UNTRUSTED = frozenset({2, 18, 19, 20, 21, 24, 27})

# Alerts a server sends about the client's certificate, by OpenSSL's reason code.
_CERTIFICATE_REQUIRED = "TLSV13_ALERT_CERTIFICATE_REQUIRED"
_CLIENT_CERTIFICATE_REFUSED = frozenset(
    {
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "SSLV3_ALERT_CERTIFICATE_REVOKED",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
        "TLSV1_ALERT_UNKNOWN_CA",
        "TLSV1_ALERT_ACCESS_DENIED",
    }
)
# What the client sees when the peer answers the handshake with something that is not TLS.
_NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "PACKET_LENGTH_TOO_LONG", "HTTP_REQUEST"})
_TERMINAL_REASONS = _CLIENT_CERTIFICATE_REFUSED | _NOT_TLS | {_CERTIFICATE_REQUIRED}


def context(
    *,
    verify: bool = True,
    verify_identity: bool = True,
    ca_file: str | None = None,
    client_cert: str | None = None,
    client_key: str | None = None,
) -> ssl.SSLContext:
    """A client context: the server's certificate checked against `ca_file` (the system's CAs
    without one) when `verify`, and that it names the host when `verify_identity` too; the
    client certificate presented when given. Raises `ssl.SSLError` (a file that does not load)
    and `OSError` (one that cannot be read)."""
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.check_hostname = verify and verify_identity
    if not verify:
        ctx.verify_mode = ssl.CERT_NONE
    if client_cert is not None:
        ctx.load_cert_chain(client_cert, client_key)
    return ctx


def handshake(host: str, port: int, ctx: ssl.SSLContext, timeout: float, read: bool = False) -> str:
    """The TLS version `host:port` agrees to with `ctx` (for a protocol that starts with TLS:
    Redis, HTTPS); with `read`, after waiting up to `timeout` seconds for what the server says
    first (a TLS 1.3 server's verdict on the client's certificate comes after the handshake).
    Raises `OSError` (`ssl.SSLError` included) when the handshake or that read fails."""
    with (
        socket.create_connection((host, port), timeout=timeout) as sock,
        ctx.wrap_socket(sock, server_hostname=host) as tls,
    ):
        if read:
            with contextlib.suppress(TimeoutError):
                tls.recv(1)
        return tls.version() or "TLS"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what it wraps: causes and contexts, PyMySQL's `original_exception`,
    elastic-transport's `errors`."""
    todo, seen = [exc], set()
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        errors = getattr(current, "errors", ())
        for inner in (
            current.__cause__,
            current.__context__,
            getattr(current, "original_exception", None),
            *(errors if isinstance(errors, tuple | list) else ()),
        ):
            if isinstance(inner, BaseException):
                todo.append(inner)


def _loading(exc: ssl.SSLError) -> bool:
    # An SSLError made in Python (not by OpenSSL) has no `library` or `reason`.
    return getattr(exc, "library", None) in ("PEM", "X509") or "PEM lib" in str(exc)


def _reason(exc: ssl.SSLError) -> str:
    return str(getattr(exc, "reason", None) or "")


def failure(exc: BaseException) -> ssl.SSLError | None:
    """The TLS failure behind `exc` that retrying cannot fix (see the module), or None."""
    for found in _chain(exc):
        if isinstance(found, ssl.SSLError) and (
            isinstance(found, ssl.SSLCertVerificationError)
            or _loading(found)
            or _reason(found) in _TERMINAL_REASONS
        ):
            return found
    return None


def ended_early(exc: BaseException) -> bool:
    """Whether the connection behind `exc` was closed under the client without a word (EOF
    where a TLS record was due, a reset, a broken pipe): a lost link, or an unread refusal."""
    lost = (ssl.SSLEOFError, ConnectionResetError, BrokenPipeError)
    return any(isinstance(found, lost) for found in _chain(exc))


def diagnose(host: str, port: int, ctx: ssl.SSLContext, timeout: float) -> ssl.SSLError | None:
    """The refusal (as `failure` finds it) of a server that closed a TLS connection without a
    word, found by shaking hands with `ctx` again and reading for up to `timeout` seconds;
    None when the server accepts the connection or cannot be reached (a broken link). For a
    protocol in which the client speaks first, so a server that accepts says nothing."""
    try:
        handshake(host, port, ctx, timeout, read=True)
    except OSError as exc:
        return failure(exc)
    return None


def _said(exc: ssl.SSLError) -> str:
    """OpenSSL's words, without the `[LIB: REASON]` tag and the `(_ssl.c:123)` place."""
    text = exc.verify_message if isinstance(exc, ssl.SSLCertVerificationError) else None
    text = text or (exc.args[1] if len(exc.args) > 1 else str(exc))
    text = re.sub(r"^\[[^\]]*\]\s*", "", str(text))
    return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", text).rstrip(".")


def refusal(
    found: ssl.SSLError,
    what: str,
    fields: str,
    *,
    server: str = "the server",
    plaintext: str | None = None,
) -> CdcError:
    """The terminal error for `found` (from `failure`) met while doing `what` with `server`
    (`host:port`, unless `what` names it), whose TLS options are under `fields` (e.g.
    `source.tls`); `plaintext` says how to reach it without TLS, for a server that does not
    speak TLS."""
    said = _said(found)
    if isinstance(found, ssl.SSLCertVerificationError):
        code = found.verify_code
        if code == _EXPIRED:
            return CdcError(
                f"{what}: the TLS certificate of {server} has expired",
                hint="renew the server's certificate (if it has not expired, correct this "
                "host's clock)",
            )
        if code == _NOT_YET_VALID:
            return CdcError(
                f"{what}: the TLS certificate of {server} is not valid yet",
                hint="correct this host's clock, or the certificate's validity dates",
            )
        if code in _NAME_MISMATCH:
            return CdcError(
                f"{what}: the TLS certificate of {server} does not name the host connected "
                f"to ({said})",
                hint="connect by a name the certificate holds, or reissue the certificate "
                "with this host among its subject alternative names",
            )
        if code in _UNTRUSTED:
            return CdcError(
                f"{what}: the TLS certificate of {server} is not signed by a CA the connector "
                f"trusts ({said})",
                hint=f"set {fields}.ca_file to the certificate (PEM) of the CA that signed the "
                "server's certificate",
            )
        return CdcError(
            f"{what}: the TLS certificate of {server} was not accepted ({said})",
            hint=f"set {fields}.ca_file to the CA that signed the server's certificate, or "
            "renew the certificate",
        )
    if _loading(found):
        return CdcError(
            f"{what}: the TLS files of {fields} do not load ({said})",
            hint=f"give PEM files in {fields}.ca_file, client_cert and client_key, the key "
            "being the one of the certificate",
        )
    reason = _reason(found)
    if reason == _CERTIFICATE_REQUIRED:
        return CdcError(
            f"{what}: {server} requires a TLS client certificate and the connector gave none",
            hint=f"set {fields}.client_cert and client_key to a certificate signed by a CA "
            "the server trusts",
        )
    if reason in _CLIENT_CERTIFICATE_REFUSED:
        return CdcError(
            f"{what}: {server} refused the connector's TLS client certificate ({said})",
            hint=f"set {fields}.client_cert and client_key to a valid certificate signed by "
            "a CA the server trusts",
        )
    return CdcError(
        f"{what}: {server} does not speak TLS on that port ({said})",
        hint=plaintext or "check the port: it must be the server's TLS port",
    )
