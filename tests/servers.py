"""Real HTTP servers as subprocesses: Flask's dev server, gunicorn gthread and gevent, waitress.

Each runs one of the small apps in tests/apps/ (``app`` names its module; each module
serves ``app``); tests reach its endpoints ``/publish``, ``/count`` and ``/end`` over HTTP.
Also the clients of the slowloris tests: connections that never finish their headers,
and healthy ones that open streams until refused.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
from conftest import PYTHON, free_port, wait_for_port

TESTS = Path(__file__).resolve().parent
SERVERS: dict[str, list[str]] = {
    "gunicorn-gthread": [PYTHON, "-m", "gunicorn", "-k", "gthread", "--threads", "{threads}",
                         "-w", "{workers}", "--graceful-timeout", "{graceful}", "-b", "127.0.0.1:{port}",
                         "{app}:app"],
    "gunicorn-gevent": [PYTHON, "-m", "gunicorn", "-k", "gevent", "--worker-connections", "{connections}",
                        "-w", "{workers}", "--graceful-timeout", "{graceful}", "-b", "127.0.0.1:{port}",
                        "{app}:app"],
    "flask-dev": [PYTHON, "-m", "flask", "--app", "{app}", "run", "--host", "127.0.0.1",
                  "--port", "{port}", "--with-threads", "--no-reload", "--no-debugger"],
    "waitress": [PYTHON, "-m", "waitress", "--listen=127.0.0.1:{port}", "--threads={threads}",
                 "--channel-request-lookahead=1", "{app}:app"],
}


class Server:
    """A server process and the test endpoints of its app."""

    def __init__(self, name: str, port: int, proc: subprocess.Popen[bytes]) -> None:
        self.name = name
        self.port = port
        self.proc = proc
        self.url = f"http://127.0.0.1:{port}"

    def publish(self, data: object, channel: str, *, event: str | None = None, id: str | None = None,
                repeat: int = 1) -> requests.Response:
        body = {"data": data, "channel": channel, "event": event, "id": id, "repeat": repeat}
        return requests.post(self.url + "/publish", json=body, timeout=10)

    def publish_ids(self, data: object, channel: str, repeat: int = 1, *,
                    event: str | None = None) -> list[str]:
        """The ids of ``repeat`` new events."""
        r = self.publish(data, channel, event=event, repeat=repeat)
        r.raise_for_status()
        return [str(i) for i in r.json()["ids"]]

    def status(self, channel: str | None = None) -> dict[str, Any]:
        """What ``/count`` says: ``subscribers`` (of ``channel``, else all), ``streams``, ..."""
        r = requests.get(self.url + "/count", params={"channel": channel} if channel else {}, timeout=10)
        r.raise_for_status()
        return dict(r.json())

    def wait_for(self, key: str, n: int, channel: str | None = None, seconds: float = 10.0) -> int:
        """Poll ``/count`` until ``key`` is ``n`` (bounded); return the last value."""
        deadline = time.monotonic() + seconds
        while (value := int(self.status(channel)[key])) != n and time.monotonic() < deadline:
            time.sleep(0.05)
        return value

    def workers(self) -> list[int]:
        """The pids of the gunicorn workers (children of the master)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                    pids.append(int(entry.name))
        return pids


def spawn(name: str, broker_url: str | None = None, *, app: str = "apps.fault_app", threads: int = 64,
          workers: int = 1, connections: int = 1000, graceful: float = 1, port: int | None = None,
          log: Path | None = None, config: Path | None = None, args: Sequence[str] = (), wait: bool = True,
          **env: str) -> Server:
    """Start server ``name`` on ``app`` in its own process group; unless ``wait`` is false, wait
    until it accepts connections.

    ``threads`` is for gthread and waitress, ``connections`` for gevent; ``workers``,
    ``graceful`` and ``config`` (a config file, ``-c``) for gunicorn; ``args``, more waitress
    options (``--outbuf-high-watermark=...``). ``log`` receives the
    output. ``env`` adds to the environment: ``SSE_HEARTBEAT`` 0.5 and ``SSE_BROKER_URL``
    ``broker_url`` (none: in memory) unless given.
    """
    port = port or free_port()
    cmd = [part.format(port=port, app=app, threads=threads, workers=workers, connections=connections,
                       graceful=graceful) for part in SERVERS[name]]
    if config is not None:
        assert cmd[1:3] == ["-m", "gunicorn"], name
        cmd[3:3] = ["-c", str(config)]
    if args:
        assert name == "waitress", name
        cmd[-1:-1] = list(args)  # before the app
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)]),
               "SSE_HEARTBEAT": "0.5", "SSE_BROKER_URL": broker_url or "", **env}
    out = subprocess.DEVNULL if log is None else log.open("wb")
    try:
        proc = subprocess.Popen(cmd, cwd=TESTS, env=environ, stdout=out, stderr=out, start_new_session=True)
    finally:
        if log is not None:
            out.close()  # type: ignore[union-attr]
    server = Server(name, port, proc)
    if wait:
        try:
            wait_for_port(port, proc)
        except BaseException:
            stop(server)
            raise
    return server


def stop(*servers: Server) -> None:
    """SIGTERM to every server at once; then to each whole process group SIGKILL after at most 5 s."""
    for server in servers:
        if server.proc.poll() is None:
            server.proc.send_signal(signal.SIGTERM)
    for server in servers:
        try:
            server.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(server.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        server.proc.wait(5)


@contextmanager
def running(name: str, broker_url: str | None = None, **options: Any) -> Iterator[Server]:
    """A server of :func:`spawn`, stopped afterwards."""
    server = spawn(name, broker_url, **options)
    try:
        yield server
    finally:
        stop(server)


@contextmanager
def slow_headers(port: int, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections to ``port`` that send request headers one byte per socket every
    0.1 s and never finish them (slowloris); they are all in and trickling when this yields."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]
    request_line = b"GET /sse/stream?channel=loris HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
    done = threading.Event()

    def trickle() -> None:
        for i in range(len(request_line)):  # never a blank line
            for sock in socks:
                try:
                    sock.sendall(request_line[i : i + 1])
                except OSError:
                    pass
            if done.wait(0.1):
                return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        time.sleep(1.0)  # every thread of a gthread worker is now reading headers
        yield socks
    finally:
        done.set()
        thread.join(5)
        for sock in socks:
            sock.close()


def open_until_refused(port: int, channel: str, most: int) -> tuple[list[int], bytes, list[socket.socket]]:
    """Open streams of ``channel`` one by one, at most ``most``, until one is refused: the
    statuses, the refusing response's head, and the open streams' sockets (to close)."""
    answers: list[int] = []
    streams: list[socket.socket] = []
    for _ in range(most):
        sock = socket.create_connection(("127.0.0.1", port), timeout=3)
        sock.sendall(f"GET /sse/stream?channel={channel} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = sock.recv(65536)
        assert head, "the server hung up"
        answers.append(int(head.split(b" ", 2)[1]))
        if answers[-1] != 200:
            sock.close()
            return answers, head, streams
        streams.append(sock)
    return answers, b"", streams
