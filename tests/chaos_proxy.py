"""A threaded TCP proxy that cuts connections: the network fault of the fault tests.

Every accepted connection is relayed to the upstream port by two pump threads and cut
after a random lifetime (``min_life``..``max_life`` seconds, from a seeded RNG, so a run
can be replayed): half of the cuts with a FIN, half with a RST (``SO_LINGER`` 0), at any
byte, mid-event included. ``retarget(port)`` sends new connections to another upstream
(a client "reconnecting elsewhere"). Counters say what happened.

    with ChaosProxy(server_port, seed=1) as proxy:
        ...  # clients connect to proxy.port
    print(proxy.accepted, proxy.cut)
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from types import TracebackType


class _Link:
    """One proxied connection: the client's socket, the upstream socket, when to cut it."""

    def __init__(self, client: socket.socket, upstream: socket.socket, deadline: float | None) -> None:
        self.client = client
        self.upstream = upstream
        self.deadline = deadline
        self.closed = False
        self.lock = threading.Lock()

    def close(self, reset: bool = False) -> bool:
        """Close both ends (with a RST when ``reset``); False if already closed."""
        with self.lock:
            if self.closed:
                return False
            self.closed = True
        for sock in (self.client, self.upstream):
            try:
                if reset:
                    # Linger 0: the last close sends a RST. SHUT_RD wakes a pump blocked in
                    # recv() without sending anything, so that close is the last one.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.shutdown(socket.SHUT_RD)
                else:
                    sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        return True


class ChaosProxy:
    """Relay 127.0.0.1:``port`` to ``upstream_port``, cutting each connection after a random lifetime.

    ``cut=False`` relays without cutting (a plain proxy, for retargeting only).
    """

    def __init__(
        self,
        upstream_port: int,
        *,
        seed: int = 0,
        min_life: float = 0.5,
        max_life: float = 3.0,
        cut: bool = True,
    ) -> None:
        self.upstream_port = upstream_port
        self.min_life = min_life
        self.max_life = max_life
        self.cutting = cut
        self.accepted = 0  # connections accepted from clients
        self.refused = 0  # connections whose upstream could not be reached
        self.cut = 0  # connections cut by the proxy while both ends were open
        self.resets = 0  # of those, cut with a RST
        self.bytes_down = 0  # bytes relayed from upstream to clients
        self._rng = random.Random(seed)
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.port: int = self._listener.getsockname()[1]
        self._threads = [
            threading.Thread(target=self._accept, name="chaos-accept", daemon=True),
            threading.Thread(target=self._reap, name="chaos-reaper", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def retarget(self, upstream_port: int) -> None:
        """Send connections accepted from now on to ``upstream_port``."""
        self.upstream_port = upstream_port

    def cut_all(self) -> int:
        """Cut every open connection now; return how many."""
        with self._lock:
            links = list(self._links)
        return sum(self._cut(link) for link in links)

    @property
    def open_connections(self) -> int:
        with self._lock:
            return sum(not link.closed for link in self._links)

    def close(self) -> None:
        """Stop accepting, close every connection, join the proxy's own threads."""
        self._stopping.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            links = list(self._links)
        for link in links:
            link.close()
        for thread in self._threads:
            thread.join(5)

    def __enter__(self) -> ChaosProxy:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def stats(self) -> dict[str, int]:
        return {"accepted": self.accepted, "cut": self.cut, "resets": self.resets,
                "refused": self.refused, "bytes_down": self.bytes_down}

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                with self._lock:
                    self.accepted += 1
                    self.refused += 1
                client.close()
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.accepted += 1
                life = self._rng.uniform(self.min_life, self.max_life) if self.cutting else None
                link = _Link(client, upstream, None if life is None else time.monotonic() + life)
                self._links.append(link)
            threading.Thread(target=self._pump, args=(link, client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(link, upstream, client, True), daemon=True).start()

    def _pump(self, link: _Link, src: socket.socket, dst: socket.socket, down: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
                if down:
                    with self._lock:
                        self.bytes_down += len(data)
        except OSError:
            pass
        link.close()  # either side ended: end the other one too

    def _reap(self) -> None:
        while not self._stopping.wait(0.02):
            now = time.monotonic()
            with self._lock:
                due = [link for link in self._links if link.deadline is not None and link.deadline <= now]
                self._links = [link for link in self._links
                               if not link.closed and (link.deadline is None or link.deadline > now)]
            for link in due:
                self._cut(link)

    def _cut(self, link: _Link) -> bool:
        with self._lock:
            reset = self._rng.random() < 0.5
        if not link.close(reset=reset):
            return False
        with self._lock:
            self.cut += 1
            self.resets += reset
        return True
