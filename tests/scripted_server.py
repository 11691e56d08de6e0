"""A real threaded HTTP server whose answers are scripted per path and per request, for client tests.

Each path replays a list of :class:`Reply` objects, one per request (the last one repeats).
A reply's body is a list of steps: bytes to send (one write, one chunk when chunked),
:class:`Pause`, :class:`Gate` (wait until the test says so), :class:`Repeat` (a large
body in pieces) and :data:`DROP` (cut the connection with no proper end). Framing is
``"chunked"``, ``"close"`` (the body ends when the connection closes) or ``"length"``.
Every request is recorded with its headers; ``tls=`` serves HTTPS. Usable as a context
manager in a test, or as a process: ``python tests/scripted_server.py PORT`` serves a
small demo script.
"""

from __future__ import annotations

import socket
import ssl
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Literal

SSE_HEADERS: Mapping[str, str] = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


@dataclass(frozen=True)
class Pause:
    """Sleep before the next step (ends early when the server stops)."""

    seconds: float


@dataclass(frozen=True)
class Gate:
    """Wait until the test sets ``event`` (at most ``timeout`` s); ``passed`` records which happened."""

    event: threading.Event = field(default_factory=threading.Event)
    timeout: float = 10.0
    passed: list[bool] = field(default_factory=list)


@dataclass(frozen=True)
class Repeat:
    """Send ``chunk`` ``times`` times, one write each: a large body without holding it in memory."""

    chunk: bytes
    times: int


class _Drop:
    """Close the connection abruptly: no terminating chunk, the rest of the body never sent."""

    def __repr__(self) -> str:
        return "DROP"


DROP = _Drop()
Step = bytes | Pause | Gate | Repeat | _Drop
Framing = Literal["chunked", "close", "length"]


@dataclass(frozen=True)
class Reply:
    """One scripted response; ``reason`` replaces the status line's usual reason phrase."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=lambda: dict(SSE_HEADERS))
    body: Sequence[Step] = ()
    framing: Framing = "chunked"
    reason: str | None = None


@dataclass(frozen=True)
class Seen:
    """A request the server received."""

    path: str
    headers: Mapping[str, str]  # names in lower case
    at: float  # time.monotonic()


class ScriptedServer:
    """The server on 127.0.0.1 (a free port by default), in a thread; stop() also cuts open connections."""

    def __init__(self, port: int = 0, *, tls: ssl.SSLContext | None = None) -> None:
        self._scripts: dict[str, list[Reply]] = {}
        self._served: dict[str, int] = {}
        self.requests: list[Seen] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self._httpd.daemon_threads = True
        if tls is not None:
            # The handshake happens in the request's thread, on its first read.
            self._httpd.socket = tls.wrap_socket(
                self._httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self.scheme = "http" if tls is None else "https"
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05})

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def script(self, path: str, *replies: Reply) -> str:
        """Answer the next requests to ``path`` with ``replies`` in order (the last repeats); its URL."""
        if not replies:
            raise ValueError("script at least one reply")
        with self._lock:
            self._scripts[path] = list(replies)
            self._served[path] = 0
        return self.url(path)

    def seen(self, path: str) -> list[Seen]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def wait_requests(self, path: str, count: int, timeout: float = 10.0) -> list[Seen]:
        """Block until ``path`` was requested ``count`` times (or raise TimeoutError)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = self.seen(path)
            if len(seen) >= count:
                return seen
            time.sleep(0.005)
        raise TimeoutError(f"{path} requested {len(self.seen(path))} times, not {count}, in {timeout}s")

    def start(self) -> ScriptedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        with self._lock:
            for sock in self._open:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._httpd.server_close()
        self._thread.join(10)

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _next_reply(self, path: str, headers: Mapping[str, str]) -> Reply:
        with self._lock:
            self.requests.append(Seen(path, headers, time.monotonic()))
            replies = self._scripts.get(path)
            if replies is None:
                body = [b"no script for " + path.encode()]
                return Reply(404, {"Content-Type": "text/plain"}, body, "length")
            index = self._served[path]
            self._served[path] = index + 1
            return replies[min(index, len(replies) - 1)]


def _handler(server: ScriptedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.close_connection = True
            path = self.path.split("?", 1)[0]
            reply = server._next_reply(path, {k.lower(): v for k, v in self.headers.items()})
            with server._lock:
                server._open.add(self.connection)
            try:
                self._send(reply)
            except OSError:
                pass  # the client went away
            finally:
                with server._lock:
                    server._open.discard(self.connection)

        def _send(self, reply: Reply) -> None:
            reason = _reason(reply.status) if reply.reason is None else reply.reason
            head = [f"HTTP/1.1 {reply.status} {reason}"]
            head += [f"{k}: {v}" for k, v in reply.headers.items()]
            if reply.framing == "chunked":
                head.append("Transfer-Encoding: chunked")
            elif reply.framing == "length":
                size = sum(len(s) for s in reply.body if isinstance(s, bytes))
                head.append(f"Content-Length: {size}")
            head.append("Connection: close")
            out = self.wfile
            out.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            chunked = reply.framing == "chunked"
            for step in reply.body:
                if isinstance(step, bytes):
                    self._write(step, chunked)
                elif isinstance(step, Repeat):
                    for _ in range(step.times):
                        self._write(step.chunk, chunked)
                elif isinstance(step, Pause):
                    server.stopping.wait(step.seconds)
                elif isinstance(step, Gate):
                    step.passed.append(step.event.wait(step.timeout))
                else:
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
            if chunked:
                out.write(b"0\r\n\r\n")

        def _write(self, data: bytes, chunked: bool) -> None:
            if not data:
                return
            if chunked:
                data = b"%x\r\n%s\r\n" % (len(data), data)
            self.wfile.write(data)

    return Handler


def _reason(status: int) -> str:
    return {
        200: "OK",
        204: "No Content",
        301: "Moved Permanently",
        302: "Found",
        307: "Temporary Redirect",
        401: "Unauthorized",
        404: "Not Found",
        500: "Internal Server Error",
    }.get(status, "Status")


def sse(*events: bytes | str) -> list[Step]:
    """Body steps from wire text: each argument is one write."""
    return [e.encode() if isinstance(e, str) else e for e in events]


def _demo(args: Sequence[str]) -> None:
    """Serve a demo script in the foreground: /stream sends two events, then drops, then resumes."""
    server = ScriptedServer(int(args[0]) if args else 0)
    server.script(
        "/stream",
        Reply(
            body=sse("retry: 1000\nid: 1\ndata: one\n\n", "id: 2\ndata: two\n\n", "data: half"),
            framing="close",
        ),
        Reply(body=[b"id: 3\ndata: three\n\n", Pause(3600)]),
    )
    print(server.url("/stream"), flush=True)
    server.start()
    try:
        server.stopping.wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    _demo(sys.argv[1:])
