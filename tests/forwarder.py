"""A TCP forwarder the test owns, to lose a dependency for real (issue 15).

``TcpForwarder(5432)`` listens on a free local port and forwards every connection
to 127.0.0.1:5432. ``cut()`` closes the listening socket and every forwarded
connection (the database, as the application sees it, is gone: connections
refused, open ones dropped); ``cut(blackhole=True)`` instead keeps accepting and
never answers (a host that went away: connection attempts hang until their
timeout). ``restore()`` listens again on the same port.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType


class TcpForwarder:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self._target = (target_host, target_port)
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._blackhole = False
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = int(probe.getsockname()[1])
        probe.close()
        self.restore()

    # -- control ----------------------------------------------------------------------

    def cut(self, blackhole: bool = False) -> None:
        """Lose the target: refuse (or, ``blackhole``, swallow) new connections and
        drop every open one."""
        with self._lock:
            self._blackhole = blackhole
            if not blackhole and self._listener is not None:
                _close(self._listener)
                self._listener = None
            for sock in list(self._sockets):
                _close(sock)
            self._sockets.clear()

    def restore(self) -> None:
        with self._lock:
            self._blackhole = False
            if self._listener is not None:
                return
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(128)
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def close(self) -> None:
        self.cut()

    def __enter__(self) -> TcpForwarder:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- forwarding -------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut: the listening socket was closed
            with self._lock:
                blackhole = self._blackhole
                self._sockets.add(client)
            if blackhole:
                continue  # held open, never answered, closed by the next cut or restore
            try:
                upstream = socket.create_connection(self._target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._sockets.add(upstream)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                _close(sock)
                with self._lock:
                    self._sockets.discard(sock)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
