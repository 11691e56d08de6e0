"""Several server processes on one Redis (or Valkey): gunicorn gthread (two workers) and gevent.

Events are published over HTTP through one server; every client of every process must get
every event exactly once, also when clients move to another process with Last-Event-ID,
when servers end their streams, and when Redis restarts under them.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from conftest import STORES, running_store, wait_for_port, wait_until
from servers import Server, spawn, stop

from sseproto import Decoder, Event
from sseproto.client import OPEN, EventSource

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]
SETTINGS = {"SSE_HEARTBEAT": "0.3", "SSE_MAX_CONNECTIONS": "500"}  # of tests/apps/fault_app.py


@contextlib.contextmanager
def running(broker_url: str) -> Iterator[list[Server]]:
    """gunicorn gthread (two workers) and gevent on ``broker_url``, started and stopped together."""
    servers: list[Server] = []
    try:
        servers.append(spawn("gunicorn-gthread", broker_url, workers=2, threads=100, wait=False, **SETTINGS))
        servers.append(spawn("gunicorn-gevent", broker_url, connections=500, wait=False, **SETTINGS))
        for server in servers:
            wait_for_port(server.port, server.proc)
        yield servers
    finally:
        stop(*servers)


@pytest.fixture(scope="module", params=STORES)
def store_url(request: pytest.FixtureRequest) -> str:
    """The session's redis-server, then its valkey-server: every test here runs on both."""
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture(scope="module")
def servers(store_url: str) -> Iterator[list[Server]]:
    with running(store_url) as both:
        yield both


class Client:
    """An EventSource read by a thread; it can drop and resume on another server with Last-Event-ID."""

    def __init__(self, url: str) -> None:
        self.events: list[Event] = []
        self._open(url, None)

    def _open(self, url: str, last_event_id: str | None) -> None:
        self.source = EventSource(url, last_event_id=last_event_id, timeout=(5, 5), reconnect_delay=0.2,
                                  max_backoff=1.0)
        self.thread = threading.Thread(target=self._read, args=(self.source,), daemon=True)
        self.thread.start()

    def _read(self, source: EventSource) -> None:
        for event in source:
            self.events.append(event)

    def is_open(self) -> bool:
        return self.source.ready_state == OPEN

    def drop(self) -> None:
        self.source.close()
        self.thread.join(10)
        assert not self.thread.is_alive()

    def resume(self, url: str) -> None:
        last = self.source.last_event_id
        assert last == (self.events[-1].id if self.events else "")
        self._open(url, last or None)


def test_every_client_of_every_process_gets_every_event_exactly_once(servers: list[Server]) -> None:
    tag = uuid.uuid4().hex[:8]
    a, b, unread = f"a-{tag}", f"b-{tag}", f"c-{tag}"
    path = f"/sse/stream?channel={a}&channel={b}"
    clients = [Client(servers[i % 2].url + path) for i in range(12)]
    expected: list[tuple[str, str]] = []
    counter = iter(range(1000))

    def publish(n: int) -> None:
        for _ in range(n):
            i = next(counter)
            channel = (a, b, unread)[i % 3]
            r = servers[0].publish(f"e{i}", channel)  # all through one server
            r.raise_for_status()
            if channel != unread:
                expected.append((r.json()["id"], f"e{i}"))

    def received(c: Client) -> list[tuple[str, str]]:
        return [(e.id or "", e.data) for e in c.events]

    try:
        assert wait_until(lambda: all(c.is_open() for c in clients), 20)
        publish(9)
        # Half the clients drop; events go on; they come back on the other server type.
        moving = clients[::2]
        assert wait_until(lambda: all(len(c.events) >= 2 for c in moving), 20)
        for c in moving:
            c.drop()
        publish(9)
        for i, c in enumerate(moving):
            c.resume(servers[(i + 1) % 2].url + path)
        publish(9)
        # Every process ends its streams; clients reconnect by themselves, anywhere.
        for server in servers:
            for _ in range(4):  # gunicorn hands each request to one of its workers
                requests.post(server.url + "/end", timeout=10).raise_for_status()
        publish(9)
        assert wait_until(lambda: all(len(c.events) >= len(expected) for c in clients), 30)
        time.sleep(0.5)  # anything extra (a repeat) would arrive now
        for c in clients:
            assert received(c) == expected
        assert len(expected) == 24
    finally:
        for c in clients:
            c.source.close()


def redis_connections(pid: int, redis_port: int) -> int:
    """Established TCP connections of process ``pid`` to ``redis_port``, from /proc."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[2].rsplit(":", 1)[1], 16) == redis_port and fields[3] == "01":
                inodes.add(fields[9])
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            link = os.readlink(fd)
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            count += 1
    return count


def open_raw(server: Server, path: str) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", path)
    resp = conn.getresponse()  # the headers come after the broker subscribed
    assert resp.status == 200
    return resp


def test_connections_per_process_do_not_grow_with_streams(servers: list[Server], store_url: str) -> None:
    channel = f"many-{uuid.uuid4().hex[:8]}"
    streams = [open_raw(servers[i % 2], f"/sse/stream?channel={channel}") for i in range(150)]
    try:
        r = servers[0].publish("to all", channel)
        r.raise_for_status()
        for resp in streams:
            decoder = Decoder()
            got: list[Event] = []
            for _ in range(50):  # chunks: the opening, heartbeats, the event (bounded)
                got += decoder.feed(resp.read1(65536))
                if got:
                    break
            assert [e.data for e in got] == ["to all"]
        redis_port = int(urlsplit(store_url).port or 6379)
        per_worker = {pid: redis_connections(pid, redis_port) for s in servers for pid in s.workers()}
        assert len(per_worker) == 3, per_worker
        # One listener plus at most a pool of 4 per process, for 150 streams (a gthread
        # worker that was handed no stream may hold none).
        assert all(n <= 5 for n in per_worker.values()), per_worker
        assert sum(n > 0 for n in per_worker.values()) >= 2, per_worker
    finally:
        for resp in streams:
            resp.close()


class RawStream:
    """One HTTP connection to a stream, read by a thread: events, heartbeats, and whether it ended."""

    def __init__(self, server: Server, path: str, last_event_id: str | None = None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        self.conn.request("GET", path, headers={"Last-Event-ID": last_event_id} if last_event_id else {})
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200
        self.events: list[Event] = []
        self.heartbeats = 0
        self.ended = False
        self.decoder = Decoder(on_comment=self._comment)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _comment(self, text: str) -> None:
        self.heartbeats += 1

    def _read(self) -> None:
        try:
            while chunk := self.resp.read1(65536):
                self.events += self.decoder.feed(chunk)
        except (OSError, ValueError, AttributeError, http.client.HTTPException):
            pass  # closed by the test (http.client drops its file object on close)
        self.ended = True

    def close(self) -> None:
        self.conn.close()


@pytest.mark.parametrize("kind", STORES)
def test_redis_restart_under_running_servers_loses_nothing(kind: str) -> None:
    streams: list[RawStream] = []
    with running_store(kind, persistent=True) as redis_server, running(redis_server.url) as servers:
        try:
            path = "/sse/stream?channel=restart"
            streams = [RawStream(servers[i % 2], path) for i in range(6)]
            first = servers[0].publish("e0", "restart").json()["id"]
            assert wait_until(lambda: all(len(s.events) == 1 for s in streams), 20)
            redis_server.stop()
            refused = servers[1].publish("lost", "restart")
            assert refused.status_code == 503 and "unreachable" in refused.json()["error"]
            beats = [s.heartbeats for s in streams]
            # The streams stay open through the outage: heartbeats go on.
            assert wait_until(
                lambda: all(s.heartbeats >= n + 2 for s, n in zip(streams, beats, strict=True)), 20
            )
            # A stream that needs a replay now is answered, then ended at once: its client
            # comes back after ``retry`` with the same Last-Event-ID.
            for server in servers:
                retried = RawStream(server, path, last_event_id=first)
                assert wait_until(lambda stream=retried: stream.ended, 10)
                assert retried.events == [] and retried.decoder.retry == 200
                retried.close()
            redis_server.start()
            ids = [first]
            for i, server in enumerate(servers * 2):
                r = server.publish(f"e{i + 1}", "restart")
                assert r.status_code == 200, r.text
                ids.append(r.json()["id"])
            assert wait_until(lambda: all(len(s.events) >= 5 for s in streams), 30)
            time.sleep(0.3)
            for s in streams:
                assert [(e.id, e.data) for e in s.events] == [(ids[i], f"e{i}") for i in range(5)]
                assert not s.ended
            # Persisted through the restart: a client of before it resumes exactly.
            late = RawStream(servers[1], path, last_event_id=first)
            streams.append(late)
            assert wait_until(lambda: len(late.events) >= 4, 20)
            assert [e.data for e in late.events] == ["e1", "e2", "e3", "e4"]
        finally:
            for s in streams:
                s.close()
