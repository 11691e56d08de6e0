"""Behind nginx: what the README promises about running streams through a reverse proxy.

A real nginx (Debian's) proxies to gunicorn gthread running tests/apps/fault_app.py, with
nginx's defaults where the README says nothing: response buffering on, HTTP/1.0 to the
upstream (under which nginx holds a buffered response until its buffers fill). Each
promise is checked beside a control that shows what happens without it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import free_port, missing, wait_for_port, wait_until
from servers import Server, open_until_refused, slow_headers, spawn, stop

from sseproto import Decoder, Event
from sseproto.client import EventSource

pytestmark = pytest.mark.timeout(120)

LIMIT = 24  # SSE_MAX_CONNECTIONS of the app
THREADS = 48  # gunicorn gthread threads
READ_TIMEOUT = 1  # nginx proxy_read_timeout, seconds: above the app's heartbeat, below the quiet one's

CONF = """
{user}
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    proxy_read_timeout {read_timeout}s;
    server {{
        listen 127.0.0.1:{port};
        location / {{ proxy_pass http://127.0.0.1:{app}; }}
        # Control: the app's X-Accel-Buffering header ignored, so nginx buffers as by default.
        location /buffered/ {{ proxy_pass http://127.0.0.1:{app}/; proxy_ignore_headers X-Accel-Buffering; }}
        # Control: an app whose heartbeat is longer than proxy_read_timeout.
        location /quiet/ {{ proxy_pass http://127.0.0.1:{quiet}/; }}
    }}
}}
"""


class Nginx:
    """An nginx process with its own prefix directory and configuration."""

    def __init__(self, app_port: int, quiet_port: int) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(binary).exists():
            missing("nginx")
        self.dir = Path(tempfile.mkdtemp(prefix="sseproto-nginx-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        conf = self.dir / "nginx.conf"
        user = "user root;" if os.geteuid() == 0 else ""  # else nginx's workers run as nobody
        conf.write_text(CONF.format(user=user, dir=self.dir, port=self.port, app=app_port, quiet=quiet_port,
                                    read_timeout=READ_TIMEOUT))
        args = [binary, "-p", str(self.dir), "-e", str(self.dir / "error.log"), "-c", str(conf)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(self.port, self.proc)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[Nginx, Server, Server]]:
    """nginx in front of two gthread servers: the app (heartbeat 0.3 s) and a quiet one (10 s)."""
    settings = {"SSE_MAX_CONNECTIONS": str(LIMIT), "SSE_HEARTBEAT": "0.3"}
    app = spawn("gunicorn-gthread", threads=THREADS, wait=False, **settings)
    quiet = spawn("gunicorn-gthread", threads=8, wait=False, SSE_HEARTBEAT="10")
    try:
        wait_for_port(app.port, app.proc)
        wait_for_port(quiet.port, quiet.proc)
        proxy = Nginx(app.port, quiet.port)
        try:
            yield proxy, app, quiet
        finally:
            proxy.close()
    finally:
        stop(app, quiet)


def uid() -> str:
    return uuid.uuid4().hex[:8]


class Reader:
    """One stream through the proxy on a raw socket, read by a thread: events, and whether it ended."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        self.head = b""
        self.events: list[Event] = []
        self.ended = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        decoder = Decoder()
        data = b""
        try:
            while chunk := self.sock.recv(65536):
                if not self.head:
                    data += chunk
                    if b"\r\n\r\n" not in data:
                        continue
                    self.head, _, chunk = data.partition(b"\r\n\r\n")
                # Chunked framing aside, the event lines are intact: "data: ..." never holds CRLF.
                self.events += decoder.feed(chunk)
        except OSError:
            pass
        self.ended = True

    def close(self) -> None:
        self.sock.close()
        self.thread.join(5)


def test_events_pass_nginx_at_once_because_of_x_accel_buffering(stack: tuple[Nginx, Server, Server]) -> None:
    """nginx buffers proxied responses by default; ``X-Accel-Buffering: no`` turns that off per
    stream. Buffered, an event waits in nginx, and a vanished client keeps its stream slot: nginx
    notices only when its buffers fill (heartbeats are 2 bytes)."""
    proxy, app, _ = stack
    channel = "prompt-" + uid()
    direct = Reader(proxy.port, f"/sse/stream?channel={channel}")
    buffered = Reader(proxy.port, f"/buffered/sse/stream?channel={channel}")
    try:
        assert app.wait_for("subscribers", 2, channel) == 2
        app.publish("hello", channel).raise_for_status()
        assert wait_until(lambda: [e.data for e in direct.events] == ["hello"], 10)
        assert b"200 OK" in direct.head and b"text/event-stream" in direct.head
        time.sleep(1.5)
        assert buffered.events == []  # the control: still in nginx's buffer
        direct.close()
        buffered.close()
        assert app.wait_for("streams", 1) == 1  # ours is released within a heartbeat or two
        time.sleep(1.5)
        assert app.status()["streams"] == 1  # the control's is not
    finally:
        direct.close()
        buffered.close()
        requests.post(app.url + "/end", timeout=10).raise_for_status()  # ends the control's stream
    assert app.wait_for("streams", 0) == 0


def test_resume_with_last_event_id_through_nginx(stack: tuple[Nginx, Server, Server]) -> None:
    """The client's ``Last-Event-ID`` header reaches the app through the proxy: nothing missed."""
    proxy, app, _ = stack
    channel = "resume-" + uid()
    first = app.publish_ids("e", channel, 3)
    missed = app.publish_ids("m", channel, 2)
    with EventSource(f"{proxy.url}/sse/stream?channel={channel}", last_event_id=first[-1],
                     timeout=(5, 10)) as source:
        got = [next(source) for _ in range(2)]
        assert [e.id for e in got] == missed
        live = app.publish_ids("live", channel)
        assert next(source).id == live[0]


def test_heartbeats_keep_an_idle_stream_open_past_proxy_read_timeout(
    stack: tuple[Nginx, Server, Server],
) -> None:
    """A heartbeat below nginx's ``proxy_read_timeout`` keeps an idle stream up; above it, nginx cuts it."""
    proxy, app, quiet = stack
    channel = "idle-" + uid()
    kept = Reader(proxy.port, f"/sse/stream?channel={channel}")
    cut = Reader(proxy.port, f"/quiet/sse/stream?channel={channel}")
    try:
        assert app.wait_for("subscribers", 1, channel) == 1
        assert quiet.wait_for("subscribers", 1, channel) == 1
        assert wait_until(lambda: cut.ended, READ_TIMEOUT + 10)  # nginx closed the idle one
        time.sleep(READ_TIMEOUT * 2)
        assert not kept.ended
        app.publish("still here", channel).raise_for_status()
        assert wait_until(lambda: [e.data for e in kept.events] == ["still here"], 10)
    finally:
        kept.close()
        cut.close()


def test_behind_nginx_slowloris_no_longer_starves_gthread(stack: tuple[Nginx, Server, Server]) -> None:
    """More slow-header connections than gthread has threads: alone they lock gthread out
    (tests/test_hostile.py); nginx holds them itself until a request is complete, so healthy
    clients get every stream slot and then a 503."""
    proxy, app, _ = stack
    assert app.wait_for("streams", 0) == 0  # the streams of the tests before have ended
    streams: list[socket.socket] = []
    try:
        with slow_headers(proxy.port, THREADS + 2):
            channel = "healthy-" + uid()
            answers, _, streams = open_until_refused(proxy.port, channel, LIMIT + 1)
            assert answers == [200] * LIMIT + [503]
            assert app.status(channel)["streams"] == LIMIT
    finally:
        for sock in streams:
            sock.close()
    assert app.wait_for("streams", 0) == 0
