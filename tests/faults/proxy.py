"""A loopback TCP proxy a test can take down, bring back, or make cut a stream halfway.

It stands between a client and a real server (Redis, RabbitMQ) that other tests share,
so that a test can give its own connections an outage without stopping the server.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from ..support.redis_server import free_port

#: Decides, for a chunk going one way, how much of it to forward before cutting the
#: connection (both sides); None forwards it all. It sees the connection's own state dict;
#: a cutter of the client's stream that sets ``state["hold"]`` keeps the connection open
#: instead, and drops all the client sends from then on (the server never gets it).
Cutter = Callable[[bytes, dict[str, object]], int | None]


@dataclass
class _Pair:
    client: socket.socket
    server: socket.socket
    state: dict[str, object] = field(default_factory=dict)

    def close(self) -> None:
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):  # already shut by the other side
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target``, one pair of threads per connection.

    Parameters:
      target(tuple[str, int]): The real server's host and port.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.cut_to_server: Cutter | None = None
        self.cut_to_client: Cutter | None = None
        #: Called after a cutter closed a connection, e.g. to take the proxy down at that moment.
        self.after_cut: Callable[[], None] | None = None
        self.connections_made = 0
        self._pairs: list[_Pair] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None

    def up(self) -> TcpProxy:
        """Accept connections (again) on the same port."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def down(self) -> None:
        """Close every connection and refuse new ones, as a server that went away."""
        listener, self._listener = self._listener, None
        if listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would leave it
            # accepting, with the port still open.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            pair.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # the listener was closed: down()
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            for sock in (client, server):
                # Without it, Nagle's algorithm holds each small reply back for a delayed ACK: 40 ms a round trip.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = _Pair(client, server)
            with self._lock:
                self._pairs.append(pair)
                self.connections_made += 1
            threading.Thread(target=self._pump, args=(pair, client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(pair, server, client, False), daemon=True).start()

    def _pump(self, pair: _Pair, source: socket.socket, sink: socket.socket, to_server: bool) -> None:
        try:
            while True:
                chunk = source.recv(65536)
                if not chunk:
                    break
                if to_server and pair.state.get("hold"):
                    continue
                cutter = self.cut_to_server if to_server else self.cut_to_client
                cut_at = cutter(chunk, pair.state) if cutter is not None else None
                if cut_at is None:
                    sink.sendall(chunk)
                    continue
                sink.sendall(chunk[:cut_at])
                if not (to_server and pair.state.get("hold")):
                    pair.close()
                    if self.after_cut is not None:
                        self.after_cut()
                    break
        except OSError:
            pass
        pair.close()
        with self._lock:
            if pair in self._pairs:
                self._pairs.remove(pair)
