"""A TCP proxy that injects network faults between the connector and a server.

`FaultProxy` listens on a local port and forwards every accepted connection to one target,
bytes both ways, for any number of concurrent connections. A single background thread runs a
`selectors` loop; the calling thread switches the fault mode at any time:

- `pass_through()` (the default): forward everything as it arrives.
- `latency(seconds)`: forward everything, but hold each chunk read from either side for
  `seconds` before writing it on, so a request/response round trip gains `2 * seconds`. It is a
  delay, not a bandwidth limit: chunks in flight overlap.
- `reset()`: close every current connection with a TCP RST (SO_LINGER 0) on both sides, and
  reset each new connection as soon as it is accepted, until another mode is chosen.
- `blackhole()`: accept new connections and keep existing ones open, but read, forward and
  answer nothing, in either direction: a network partition, the fault that hangs a client
  without a read timeout. Leaving the black hole (`pass_through()` or `latency()`) resets every
  connection that was open or accepted during it and forwards only new connections. A real
  partition heal behaves much the same: by the time the network is back, the peers have timed
  the connection out, and the first packet either side sends is answered with an RST.

A mode change is synchronous: when the method returns, the proxy has applied it (connections
are reset, frozen or dropped). Reading a counter (`connections_total`, `bytes_up`,
`bytes_down`, `connections_open`) waits for the proxy thread to finish its current step, so it
counts every byte a client has already received and every connection already accepted.

Half-closes pass through: a FIN from one side is passed on once its pending bytes are written.
An error on either side of a connection (or a target that refuses the connection) resets both.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal, Self

Mode = Literal["pass_through", "latency", "reset", "blackhole"]

_CHUNK = 65536
# A side stops being read while this much of its data waits to be written to the other side,
# so a slow reader slows the writer down instead of growing the proxy's memory.
_HIGH_WATER = 1 << 20
_LINGER_RST = struct.pack("ii", 1, 0)
_COMMAND_TIMEOUT = 10.0
_LISTENER = "listener"
_WAKE = "wake"


def _reset(sock: socket.socket) -> None:
    """Close `sock` so that the peer sees an RST instead of a FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    sock.close()


def _nothing() -> None:
    return


def _resolve(host: str, port: int) -> tuple[socket.AddressFamily, Any]:
    family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    return family, sockaddr


class _Pipe:
    """Bytes read from one side, waiting to be written to the other; each chunk carries the
    monotonic time before which it must not be written."""

    __slots__ = ("chunks", "eof", "queued", "shut")

    def __init__(self) -> None:
        self.chunks: deque[tuple[float, bytes]] = deque()
        self.queued = 0
        self.eof = False  # the source side sent FIN
        self.shut = False  # the FIN has been passed on

    def ready(self, now: float) -> bool:
        return bool(self.chunks) and self.chunks[0][0] <= now

    def waiting(self, now: float) -> bool:
        return bool(self.chunks) and self.chunks[0][0] > now


class _Conn:
    """One proxied connection: the accepted client socket and the socket to the target."""

    __slots__ = ("client", "connecting", "down", "frozen", "registered", "up", "upstream")

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.connecting = True
        self.frozen = False
        self.up = _Pipe()  # client -> target
        self.down = _Pipe()  # target -> client
        self.registered: dict[socket.socket, int] = {}


class FaultProxy:
    """A fault-injecting TCP proxy from `listen_host:listen_port` to `target_host:target_port`.

    The listening socket is bound in the constructor, so `port` is known (and clients may
    connect) before `start()`; connections wait in the backlog until the proxy thread runs.
    `listen_port=0` picks a free port. Use as a context manager, or call `start()` and `close()`.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        listen_port: int = 0,
        listen_host: str = "127.0.0.1",
    ) -> None:
        self._target = _resolve(target_host, target_port)
        family, sockaddr = _resolve(listen_host, listen_port)
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(sockaddr)
        self._listener.listen(128)
        self._listener.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ, _LISTENER)
        self._sel.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        self._commands: queue.SimpleQueue[tuple[Callable[[], None], threading.Event]] = (
            queue.SimpleQueue()
        )
        self._conns: set[_Conn] = set()
        self._held: list[socket.socket] = []  # accepted during a black hole, never read
        self._waiting: set[_Conn] = set()  # connections holding chunks that are not yet due
        self._mode: Mode = "pass_through"
        self._delay = 0.0
        self._stopping = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._connections_total = 0
        self._bytes_up = 0
        self._bytes_down = 0

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) the proxy listens on."""
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    @property
    def port(self) -> int:
        """The port the proxy listens on."""
        return self.address[1]

    @property
    def mode(self) -> Mode:
        """The current fault mode."""
        return self._mode

    @property
    def connections_total(self) -> int:
        """Connections accepted so far, including those reset or black-holed on arrival."""
        self._submit(_nothing)
        return self._connections_total

    @property
    def bytes_up(self) -> int:
        """Bytes written to the target (client -> target)."""
        self._submit(_nothing)
        return self._bytes_up

    @property
    def bytes_down(self) -> int:
        """Bytes written to clients (target -> client)."""
        self._submit(_nothing)
        return self._bytes_down

    @property
    def connections_open(self) -> int:
        """Client connections the proxy holds right now (forwarding, frozen or held)."""
        self._submit(_nothing)
        return len(self._conns) + len(self._held)

    def start(self) -> Self:
        """Start the proxy thread. Idempotent; returns the proxy."""
        if self._closed:
            raise RuntimeError("the proxy is closed")
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"fault-proxy:{self.port}", daemon=True
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop the proxy, reset every connection and release the port. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stopping = True
        if self._thread is not None:
            self._wake()
            self._thread.join(_COMMAND_TIMEOUT)
        else:
            self._teardown()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- fault modes (called from any thread) -----------------------------------------------

    def pass_through(self) -> None:
        """Forward everything without delay. Leaving `blackhole()` resets the connections that
        were open or accepted during it."""
        self._submit(lambda: self._forward(0.0))

    def latency(self, seconds: float) -> None:
        """Forward everything, holding each chunk for `seconds` first. Leaving `blackhole()`
        resets the connections that were open or accepted during it."""
        if seconds < 0:
            raise ValueError("latency must not be negative")
        self._submit(lambda: self._forward(seconds))

    def reset(self) -> None:
        """Reset every open connection now, and every new one on arrival, until the mode
        changes."""
        self._submit(self._reset_all)

    def blackhole(self) -> None:
        """Stop all traffic: existing connections stay open but frozen, new ones are accepted
        and ignored."""
        self._submit(self._freeze_all)

    # -- command plumbing -------------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _submit(self, command: Callable[[], None]) -> None:
        thread = self._thread
        if thread is None or not thread.is_alive():
            # No loop to race with: before start() only the mode changes; after close() the
            # sockets are gone and only the mode is recorded.
            command()
            return
        done = threading.Event()
        self._commands.put((command, done))
        self._wake()
        if not done.wait(_COMMAND_TIMEOUT):
            raise RuntimeError("the proxy thread did not apply the mode change")

    def _run_commands(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass
        while True:
            try:
                command, done = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                command()
            finally:
                done.set()

    def _forward(self, delay: float) -> None:
        if self._mode == "blackhole":
            self._drop_all()
        self._delay = delay
        self._mode = "latency" if delay > 0 else "pass_through"

    def _reset_all(self) -> None:
        self._mode = "reset"
        self._drop_all()

    def _freeze_all(self) -> None:
        self._mode = "blackhole"
        for conn in list(self._conns):
            conn.frozen = True
            self._refresh(conn, time.monotonic())

    def _drop_all(self) -> None:
        for conn in list(self._conns):
            self._abort(conn)
        for sock in self._held:
            _reset(sock)
        self._held.clear()

    # -- the loop (proxy thread only) -------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping:
                events = self._sel.select(self._timeout())
                now = time.monotonic()
                touched: set[_Conn] = set()
                for key, mask in events:
                    if key.data == _LISTENER:
                        self._accept()
                    elif key.data == _WAKE:
                        self._run_commands()
                    else:
                        conn, is_client = key.data
                        if conn in self._conns:
                            self._on_event(conn, is_client, mask, now)
                            touched.add(conn)
                touched.update(c for c in self._waiting if c.up.ready(now) or c.down.ready(now))
                for conn in touched:
                    if conn in self._conns:
                        self._refresh(conn, now)
        finally:
            self._run_commands()
            self._teardown()

    def _timeout(self) -> float | None:
        dues = [p.chunks[0][0] for c in self._waiting for p in (c.up, c.down) if p.chunks]
        if not dues:
            return None
        return max(0.0, min(dues) - time.monotonic())

    def _teardown(self) -> None:
        self._drop_all()
        self._sel.close()
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # Out of file descriptors or the like: the backlog keeps the client waiting.
                return
            self._connections_total += 1
            if self._mode == "reset":
                _reset(client)
                continue
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._mode == "blackhole":
                self._held.append(client)
                continue
            family, sockaddr = self._target
            upstream = socket.socket(family, socket.SOCK_STREAM)
            upstream.setblocking(False)
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            err = upstream.connect_ex(sockaddr)
            if err not in (0, errno.EINPROGRESS):
                _reset(client)
                upstream.close()
                continue
            conn = _Conn(client, upstream)
            self._conns.add(conn)
            self._refresh(conn, time.monotonic())

    def _on_event(self, conn: _Conn, is_client: bool, mask: int, now: float) -> None:
        try:
            if is_client:
                if mask & selectors.EVENT_READ:
                    self._read(conn.client, conn.up, now)
                if mask & selectors.EVENT_WRITE:
                    self._bytes_down += self._write(conn.client, conn.down, now)
            elif conn.connecting:
                err = conn.upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, os.strerror(err))
                conn.connecting = False
            else:
                if mask & selectors.EVENT_READ:
                    self._read(conn.upstream, conn.down, now)
                if mask & selectors.EVENT_WRITE:
                    self._bytes_up += self._write(conn.upstream, conn.up, now)
        except OSError:
            self._abort(conn)

    def _read(self, sock: socket.socket, pipe: _Pipe, now: float) -> None:
        try:
            data = sock.recv(_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            pipe.eof = True
            return
        pipe.chunks.append((now + self._delay, data))
        pipe.queued += len(data)

    @staticmethod
    def _write(sock: socket.socket, pipe: _Pipe, now: float) -> int:
        sent = 0
        while pipe.ready(now):
            due, chunk = pipe.chunks[0]
            try:
                n = sock.send(chunk)
            except (BlockingIOError, InterruptedError):
                break
            sent += n
            pipe.queued -= n
            if n < len(chunk):
                pipe.chunks[0] = (due, chunk[n:])
                break
            pipe.chunks.popleft()
        return sent

    def _refresh(self, conn: _Conn, now: float) -> None:
        """Pass on finished half-closes and register the events the connection now needs."""
        read, write = selectors.EVENT_READ, selectors.EVENT_WRITE
        client_mask = upstream_mask = 0
        try:
            if not conn.frozen:
                if not conn.connecting:
                    self._pass_fin(conn.up, conn.upstream)
                self._pass_fin(conn.down, conn.client)
                if conn.up.shut and conn.down.shut:
                    self._finish(conn)
                    return
                if not conn.up.eof and conn.up.queued < _HIGH_WATER:
                    client_mask |= read
                if conn.down.ready(now):
                    client_mask |= write
                if conn.connecting:
                    upstream_mask = write
                else:
                    if not conn.down.eof and conn.down.queued < _HIGH_WATER:
                        upstream_mask |= read
                    if conn.up.ready(now):
                        upstream_mask |= write
            self._register(conn, conn.client, client_mask, True)
            self._register(conn, conn.upstream, upstream_mask, False)
        except OSError:
            self._abort(conn)
            return
        if not conn.frozen and (conn.up.waiting(now) or conn.down.waiting(now)):
            self._waiting.add(conn)
        else:
            self._waiting.discard(conn)

    @staticmethod
    def _pass_fin(pipe: _Pipe, dest: socket.socket) -> None:
        if pipe.eof and not pipe.chunks and not pipe.shut:
            dest.shutdown(socket.SHUT_WR)
            pipe.shut = True

    def _register(self, conn: _Conn, sock: socket.socket, mask: int, is_client: bool) -> None:
        current = conn.registered.get(sock, 0)
        if mask == current:
            return
        if current == 0:
            self._sel.register(sock, mask, (conn, is_client))
        elif mask == 0:
            self._sel.unregister(sock)
        else:
            self._sel.modify(sock, mask, (conn, is_client))
        if mask:
            conn.registered[sock] = mask
        else:
            del conn.registered[sock]

    def _forget(self, conn: _Conn) -> None:
        for sock in conn.registered:
            self._sel.unregister(sock)
        conn.registered.clear()
        self._conns.discard(conn)
        self._waiting.discard(conn)

    def _abort(self, conn: _Conn) -> None:
        self._forget(conn)
        _reset(conn.client)
        _reset(conn.upstream)

    def _finish(self, conn: _Conn) -> None:
        self._forget(conn)
        conn.client.close()
        conn.upstream.close()
