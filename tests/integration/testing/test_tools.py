"""The fault tools themselves, over real sockets: FaultProxy in front of a local echo server, and
EsStandIn through `elastic_transport` (the connector's HTTP client) and the standard library."""

from __future__ import annotations

import gzip
import http.client
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from elastic_transport import ConnectionTimeout, NodeConfig, Transport

from cdc.sink.bulk import classify
from cdc.sink.elastic import BULK_PATH
from cdc.testing import BulkOp, EsStandIn, FaultProxy

# -- helpers ---------------------------------------------------------------------------------


class EchoServer:
    """A threaded TCP server that writes back whatever it reads and closes on EOF."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.received = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    with self._lock:
                        self.received += len(data)
                    conn.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", echo.port) as p:
        yield p


def connect(port: int, timeout: float = 2.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        chunk = sock.recv(min(65536, n - got))
        if not chunk:
            raise EOFError(f"connection closed after {got} of {n} bytes")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def round_trip(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    return recv_exactly(sock, len(payload))


class Es:
    """A tiny client over elastic_transport, configured like the connector's sink (no retries,
    so injected failures reach the test)."""

    def __init__(self, standin: EsStandIn, timeout: float = 5.0) -> None:
        self.transport = Transport(
            [NodeConfig("http", "127.0.0.1", standin.port, request_timeout=timeout)],
            max_retries=0,
            retry_on_timeout=False,
            meta_header=False,
        )

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
        headers = {"accept": "application/json"}
        if body is not None:
            headers["content-type"] = "application/x-ndjson"
        resp = self.transport.perform_request(method, path, body=body, headers=headers)
        return resp.meta.status, resp.body

    def bulk(self, *ops: tuple[str, str, int | None, dict[str, Any] | None]) -> tuple[int, Any]:
        return self.call("POST", "/_bulk", ndjson(*ops))

    def close(self) -> None:
        self.transport.close()


def ndjson(*ops: tuple[str, str, int | None, dict[str, Any] | None], index: str = "t") -> bytes:
    """`_bulk` body from (op, id, external version or None, document or None) tuples."""
    out = []
    for op, doc_id, version, doc in ops:
        meta: dict[str, Any] = {"_index": index, "_id": doc_id}
        if version is not None:
            meta |= {"version": version, "version_type": "external"}
        out.append(orjson.dumps({op: meta}))
        if op == "index":
            out.append(orjson.dumps(doc))
    return b"\n".join(out) + b"\n"


def statuses(resp: Any) -> list[int]:
    return [next(iter(item.values()))["status"] for item in resp["items"]]


def error_types(resp: Any) -> list[str | None]:
    return [next(iter(item.values())).get("error", {}).get("type") for item in resp["items"]]


@pytest.fixture
def standin() -> Iterator[EsStandIn]:
    with EsStandIn() as s:
        yield s


@pytest.fixture
def es(standin: EsStandIn) -> Iterator[Es]:
    client = Es(standin)
    yield client
    client.close()


# -- FaultProxy ------------------------------------------------------------------------------


def test_proxy_forwards_many_concurrent_connections(proxy: FaultProxy) -> None:
    payloads = [bytes([i]) * (1 << 20 if i == 0 else 1000 + i) for i in range(12)]
    results: dict[int, bytes] = {}

    def client(i: int) -> None:
        with connect(proxy.port, timeout=10) as sock:
            results[i] = round_trip(sock, payloads[i])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(payloads))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)

    assert results == dict(enumerate(payloads))
    total = sum(map(len, payloads))
    assert proxy.connections_total == len(payloads)
    assert proxy.bytes_up == total
    assert proxy.bytes_down == total


def test_proxy_passes_half_close_on(proxy: FaultProxy) -> None:
    with connect(proxy.port) as sock:
        sock.sendall(b"last words")
        sock.shutdown(socket.SHUT_WR)
        assert recv_exactly(sock, 10) == b"last words"
        assert sock.recv(10) == b""  # the echo server's FIN came back through the proxy


def test_proxy_resets_when_target_refuses() -> None:
    with socket.create_server(("127.0.0.1", 0)) as spare:
        dead_port = spare.getsockname()[1]
    # The reset may arrive before connect() returns, or at the first read.
    with (
        FaultProxy("127.0.0.1", dead_port) as p,
        pytest.raises(ConnectionResetError),
        connect(p.port) as sock,
    ):
        sock.sendall(b"anyone?")
        sock.recv(10)


def test_reset_kills_open_and_new_connections_until_pass_through(
    proxy: FaultProxy, echo: EchoServer
) -> None:
    sock = connect(proxy.port)
    assert round_trip(sock, b"ping") == b"ping"

    proxy.reset()
    with pytest.raises(ConnectionResetError):
        sock.recv(10)
    sock.close()
    with pytest.raises(ConnectionResetError), connect(proxy.port) as fresh:
        fresh.sendall(b"ping")
        fresh.recv(10)
    assert proxy.connections_open == 0

    proxy.pass_through()
    with connect(proxy.port) as healed:
        assert round_trip(healed, b"back") == b"back"


def test_blackhole_hangs_clients_while_direct_path_works(
    proxy: FaultProxy, echo: EchoServer
) -> None:
    before = connect(proxy.port, timeout=0.5)
    assert round_trip(before, b"ping") == b"ping"
    up, down = proxy.bytes_up, proxy.bytes_down

    proxy.blackhole()
    before.sendall(b"lost")
    with pytest.raises(TimeoutError):
        before.recv(10)
    during = connect(proxy.port, timeout=0.5)  # the connection itself is accepted
    during.sendall(b"lost too")
    with pytest.raises(TimeoutError):
        during.recv(10)
    with connect(echo.port) as direct:
        assert round_trip(direct, b"direct") == b"direct"
    assert (proxy.bytes_up, proxy.bytes_down) == (up, down)

    proxy.pass_through()
    for stale in (before, during):
        with pytest.raises(ConnectionResetError):
            stale.sendall(b"still there?")
            stale.recv(10)
        stale.close()
    with connect(proxy.port) as healed:
        assert round_trip(healed, b"healed") == b"healed"


def test_latency_delays_each_direction(proxy: FaultProxy) -> None:
    delay = 0.2
    with connect(proxy.port) as sock:
        proxy.latency(delay)
        started = time.monotonic()
        assert round_trip(sock, b"slow") == b"slow"
        elapsed = time.monotonic() - started
        # Once on the way to the target, once on the way back.
        assert 2 * delay <= elapsed < 2 * delay + 1.0

        proxy.pass_through()
        started = time.monotonic()
        assert round_trip(sock, b"fast") == b"fast"
        assert time.monotonic() - started < delay


def test_latency_overlaps_chunks_instead_of_throttling(proxy: FaultProxy) -> None:
    delay = 0.2
    proxy.latency(delay)
    with connect(proxy.port) as sock:
        started = time.monotonic()
        for _ in range(5):
            sock.sendall(b"x" * 1000)
            time.sleep(0.02)
        recv_exactly(sock, 5000)
        elapsed = time.monotonic() - started
    # Five chunks sent 20 ms apart arrive after one round-trip delay, not five.
    assert 2 * delay <= elapsed < 4 * delay


# -- EsStandIn -------------------------------------------------------------------------------


def test_standin_cluster_info_and_index_lifecycle(es: Es, standin: EsStandIn) -> None:
    status, info = es.call("GET", "/")
    assert status == 200
    assert info["version"]["number"] == "8.15.0"
    assert info["tagline"] == "You Know, for Search"

    assert es.call("HEAD", "/orders")[0] == 404
    status, body = es.call("PUT", "/orders", b'{"mappings":{"properties":{"n":{"type":"long"}}}}')
    assert (status, body["acknowledged"]) == (200, True)
    assert es.call("HEAD", "/orders")[0] == 200
    status, body = es.call("PUT", "/orders", b"{}")
    assert status == 400
    assert body["error"]["type"] == "resource_already_exists_exception"
    assert es.call("GET", "/orders")[1]["orders"]["mappings"]["properties"]["n"]["type"] == "long"

    assert es.call("POST", "/orders/_refresh")[0] == 200
    status, body = es.call("POST", "/missing/_refresh")
    assert (status, body["error"]["type"]) == (404, "index_not_found_exception")
    assert standin.indices() == ["orders"]


def test_standin_external_versions_conflict_and_leave_tombstones(
    es: Es, standin: EsStandIn
) -> None:
    status, resp = es.bulk(
        ("index", "1", 5, {"v": 5}),
        ("index", "1", 3, {"v": 3}),  # older
        ("index", "1", 5, {"v": "again"}),  # equal is stale too
        ("index", "1", 7, {"v": 7}),
        ("delete", "1", 6, None),  # older than the document
        ("delete", "gone", 4, None),  # never existed: tombstone anyway
        ("index", "gone", 3, {"v": 3}),  # older than the tombstone
    )
    assert status == 200
    assert resp["errors"] is True
    assert statuses(resp) == [201, 409, 409, 200, 409, 404, 409]
    assert error_types(resp)[1] == "version_conflict_engine_exception"
    assert [next(iter(i.values())).get("result") for i in resp["items"]] == [
        "created",
        None,
        None,
        "updated",
        None,
        "not_found",
        None,
    ]
    assert standin.docs("t") == {"1": {"v": 7}}
    assert standin.version("t", "gone") == 4

    status, resp = es.bulk(
        ("delete", "1", 8, None),
        ("index", "1", 8, {"v": "stale"}),  # equal to the tombstone
        ("index", "1", 9, {"v": 9}),
    )
    assert statuses(resp) == [200, 409, 201]
    assert standin.docs("t") == {"1": {"v": 9}}
    assert standin.version("t", "1") == 9
    assert es.call("GET", "/t/_doc/1")[1]["_source"] == {"v": 9}
    assert standin.items == {
        "created": 2,
        "updated": 1,
        "deleted": 1,
        "not_found": 1,
        "conflict": 5,
    }


@pytest.mark.parametrize(
    ("status", "kind"),
    [(429, "es_rejected_execution_exception"), (503, "unavailable_shards_exception")],
)
def test_standin_fail_next_fails_whole_requests_then_recovers(
    es: Es, standin: EsStandIn, status: int, kind: str
) -> None:
    standin.fail_next(2, status)
    for _ in range(2):
        got, body = es.bulk(("index", "1", 1, {"n": 1}))
        assert got == status
        assert body["error"]["type"] == kind
        assert standin.docs("t") == {}

    got, body = es.bulk(("index", "1", 1, {"n": 1}))
    assert (got, statuses(body)) == (200, [201])
    assert standin.docs("t") == {"1": {"n": 1}}
    assert (standin.bulk_requests, standin.failed_requests) == (3, 2)


def test_standin_fail_items_by_predicate_and_by_status(es: Es, standin: EsStandIn) -> None:
    seen: list[BulkOp] = []

    def unlucky(op: BulkOp) -> bool:
        seen.append(op)
        return op.doc_id == "2"

    standin.fail_items(unlucky)
    _, resp = es.bulk(("index", "1", 1, {"n": 1}), ("index", "2", 1, {"n": 2}))
    assert statuses(resp) == [201, 429]
    assert error_types(resp) == [None, "es_rejected_execution_exception"]
    assert standin.docs("t") == {"1": {"n": 1}}
    assert seen[1].source() == {"n": 2}
    assert (seen[1].op, seen[1].index, seen[1].version) == ("index", "t", 1)

    standin.fail_items(503)
    _, resp = es.bulk(("index", "2", 1, {"n": 2}), ("delete", "1", 2, None))
    assert statuses(resp) == [503, 503]

    standin.fail_items(None)
    _, resp = es.bulk(("index", "2", 1, {"n": 2}))
    assert statuses(resp) == [201]
    assert standin.docs("t") == {"1": {"n": 1}, "2": {"n": 2}}
    assert standin.items["failed"] == 3


def test_standin_reject_when_rejects_matching_documents(es: Es, standin: EsStandIn) -> None:
    standin.reject_when("price", "not a number")
    standin.reject_when("meta.kind", "poison")
    _, resp = es.bulk(
        ("index", "1", 1, {"price": 3}),
        ("index", "2", 1, {"price": "not a number"}),
        ("index", "3", 1, {"meta": {"kind": "poison"}}),
        ("index", "4", 1, {"meta": {"kind": "fine"}}),
    )
    assert statuses(resp) == [201, 400, 400, 201]
    assert error_types(resp)[1:3] == ["mapper_parsing_exception"] * 2
    assert sorted(standin.docs("t")) == ["1", "4"]

    standin.clear_faults()
    _, resp = es.bulk(("index", "2", 1, {"price": "not a number"}))
    assert statuses(resp) == [201]


def test_standin_malformed_bulk_applies_nothing(es: Es, standin: EsStandIn) -> None:
    body = ndjson(("index", "1", 1, {"n": 1})) + b'{"update":{"_index":"t","_id":"1"}}\n{}\n'
    status, resp = es.call("POST", "/_bulk", body)
    assert status == 400
    assert resp["error"]["type"] == "illegal_argument_exception"
    assert standin.docs("t") == {}


def test_standin_cuts_bulk_responses_to_the_connectors_filter_path(
    es: Es, standin: EsStandIn
) -> None:
    """The connector asks for each item's status and error only (`BULK_PATH`); the stand-in
    answers as Elasticsearch does, so results stay classifiable and rejections explained."""
    standin.reject_when("price", "not a number")
    body = ndjson(("index", "1", 1, {"price": 1}), ("index", "2", 1, {"price": "not a number"}))
    status, resp = es.call("POST", BULK_PATH, body)
    assert status == 200
    assert resp["errors"] is True
    assert resp["items"][0] == {"index": {"status": 201}}
    assert set(resp["items"][1]["index"]) == {"status", "error"}
    assert [classify(item).outcome for item in resp["items"]] == ["ok", "rejected"]

    malformed = b'{"update":{"_index":"t","_id":"1"}}\n{}\n'
    status, resp = es.call("POST", BULK_PATH, malformed)
    assert status == 400
    assert resp["error"]["type"] == "illegal_argument_exception"


def test_standin_down_refuses_connections_and_up_restores_them(standin: EsStandIn) -> None:
    index_one = ndjson(("index", "1", 1, {"n": 1}))
    pooled = http.client.HTTPConnection("127.0.0.1", standin.port, timeout=5)
    pooled.request("POST", "/_bulk", index_one)
    assert pooled.getresponse().read()

    standin.down()
    with pytest.raises(ConnectionRefusedError):
        connect(standin.port).close()
    with pytest.raises((ConnectionError, http.client.RemoteDisconnected)):
        pooled.request("GET", "/")
        pooled.getresponse()
    pooled.close()

    standin.up()
    with urllib.request.urlopen(f"{standin.url}/t/_doc/1", timeout=5) as resp:
        assert orjson.loads(resp.read())["_source"] == {"n": 1}


def test_standin_keeps_connections_alive(standin: EsStandIn) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", standin.port, timeout=5)
    conn.request("GET", "/")
    conn.getresponse().read()
    local = conn.sock.getsockname()
    for _ in range(3):
        conn.request("POST", "/_bulk", ndjson(("index", "1", None, {"n": 1})))
        resp = conn.getresponse()
        assert (resp.status, resp.read()[:1]) == (200, b"{")
    assert conn.sock.getsockname() == local
    conn.close()
    assert standin.version("t", "1") == 3  # internal versioning counts up


def test_standin_slow_delays_responses_but_applies_the_request(standin: EsStandIn) -> None:
    standin.slow(0.3)
    patient, hasty = Es(standin, timeout=5), Es(standin, timeout=0.1)
    try:
        started = time.monotonic()
        assert patient.call("GET", "/")[0] == 200
        assert time.monotonic() - started >= 0.3

        with pytest.raises(ConnectionTimeout):
            hasty.bulk(("index", "1", 1, {"n": 1}))
        # The client gave up, but the write happened: a retry will see a 409.
        assert standin.version("t", "1") == 1
    finally:
        patient.close()
        hasty.close()


def test_standin_accepts_gzip_and_chunked_bodies(standin: EsStandIn) -> None:
    body = ndjson(("index", "1", 1, {"n": 1}), ("index", "2", 1, {"n": 2}))
    request = urllib.request.Request(
        f"{standin.url}/_bulk", data=gzip.compress(body), headers={"Content-Encoding": "gzip"}
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert statuses(orjson.loads(resp.read())) == [201, 201]

    conn = http.client.HTTPConnection("127.0.0.1", standin.port, timeout=5)
    conn.request("POST", "/_bulk", iter([body[:10], body[10:]]), encode_chunked=True)
    assert statuses(orjson.loads(conn.getresponse().read())) == [409, 409]
    conn.close()


def test_standin_without_store_acks_every_item_cheaply() -> None:
    ops: list[tuple[str, str, int | None, dict[str, Any] | None]] = []
    for i in range(1000):
        if i % 4 == 3:
            ops.append(("delete", str(i), i + 1, None))
        else:
            ops.append(("index", str(i), i + 1, {"n": i}))
    body = ndjson(*ops)
    with EsStandIn(store=False) as standin:
        client = Es(standin)
        try:
            status, resp = client.call("POST", "/_bulk", body)
            # Replaying the same versions is not a conflict: nothing was stored.
            again = client.call("POST", "/_bulk", body)[1]
        finally:
            client.close()
        assert (status, resp["errors"], again["errors"]) == (200, False, False)
        assert statuses(resp) == [200 if op == "delete" else 201 for op, *_ in ops]
        assert [next(iter(i.values()))["_id"] for i in resp["items"]] == [o[1] for o in ops]
        assert standin.items == {"created": 1500, "deleted": 500}
        assert standin.bytes_received == 2 * len(body)
        assert standin.docs("t") == {}


def test_standin_without_store_still_injects_item_faults() -> None:
    with EsStandIn(store=False) as standin:
        standin.reject_when("bad", True)
        client = Es(standin)
        try:
            _, resp = client.bulk(("index", "1", 1, {"bad": True}), ("index", "2", 1, {}))
        finally:
            client.close()
        assert statuses(resp) == [400, 201]


def test_standin_http_errors_reach_urllib_clients(standin: EsStandIn) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{standin.url}/nope/_doc/1", timeout=5)
    assert caught.value.code == 404
