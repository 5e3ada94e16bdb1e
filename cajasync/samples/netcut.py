"""A TCP forwarder that can cut the line: how the demo and fault tests take a terminal offline.

The terminal connects to the forwarder instead of the broker. `cut()` drops every open
connection and refuses new ones (as a dead network would); `restore()` lets them through.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from types import TracebackType


class NetCut:
    """Forward 127.0.0.1:<port> to `target`; cut and restore on demand."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._online = threading.Event()
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._listen(self._listener)

    @property
    def online(self) -> bool:
        return self._online.is_set()

    def cut(self) -> None:
        """Drop every forwarded connection; new ones are refused (nothing listens)."""
        self._online.clear()
        _close(self._listener)
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                _close(sock)

    def restore(self) -> None:
        """Listen again on the same port."""
        if not self._online.is_set() and not self._closing.is_set():
            self._listen(socket.create_server(("127.0.0.1", self.port)))

    def close(self) -> None:
        self._closing.set()
        self.cut()

    def _listen(self, listener: socket.socket) -> None:
        self._listener = listener
        self._online.set()
        threading.Thread(target=self._accept, args=(listener,), name="netcut", daemon=True).start()

    def __enter__(self) -> NetCut:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()

    def _accept(self, listener: socket.socket) -> None:
        while not self._closing.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by cut()
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        try:
            selector.register(a, selectors.EVENT_READ, b)
            selector.register(b, selectors.EVENT_READ, a)
            while True:
                for key, _ in selector.select(timeout=1.0):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)
        except (OSError, ValueError):
            return
        finally:
            selector.close()
            _close(a)
            _close(b)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
