"""Every spec vector against headless Chromium's native EventSource: the authority for spec/.

In-process threaded servers on several free ports send each vector's chunks exactly (one
write per chunk, a short pause between them, close-delimited HTTP/1.1) and close. When
the EventSource reconnects, the server records the ``Last-Event-ID`` header and the delay
since it closed, and answers 204, which makes the EventSource close for good. One page
opens an EventSource per vector, all at once (at most ``PER_PORT`` vectors per port, so
Chromium's six connections per host never queue a reconnect), and collects every
dispatched event. Per vector we check:

- the events (type, data, lastEventId), in order;
- the final last event id: the ``Last-Event-ID`` the reconnect carries, which Chromium
  sends as UTF-8 with leading and trailing spaces and tabs trimmed, and leaves out when
  the id is empty;
- the reconnection time: the reconnect comes ``retry`` ms after the close (Chromium's
  default, 3000 ms, for ``retry: null``), within [-EARLY_MS, +LATE_MS]. A retry longer
  than ``MEASURED_UP_TO`` is checked by seeing no reconnect for ``OBSERVE_MS`` after the
  close; the page then closes the EventSource, so such a vector's final last event id
  is not observed (the header is never sent).
"""

from __future__ import annotations

import math
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from vectors import Expected, Vector, load_all

pytestmark = pytest.mark.browser

VECTORS = load_all()
PER_PORT = 5  # streams per port: below Chromium's 6 connections per host
PAUSE = 0.004  # seconds between two chunks, so that they arrive separately
DEFAULT_RETRY_MS = 3000  # Chromium's kDefaultReconnectDelay
MEASURED_UP_TO = 4000  # ms: reconnection times up to this are measured
OBSERVE_MS = 4500  # ms without a reconnect that shows a longer reconnection time
EARLY_MS = 25  # a reconnect may come this much before the retry (clock granularity)
LATE_MS = 1700  # ... and this much after it (a loaded 2-core machine); still
# below the gap between any two values a vector tells apart (200 vs 2500, 1200 vs 3000)

PAGE = b"<!doctype html><meta charset=utf-8><title>spec vectors</title>"

RUN_JS = """
async (specs) => {
  const results = {};
  await Promise.all(specs.map((s) => new Promise((resolve) => {
    const r = { events: [], opens: 0, errors: 0, closedBy: null };
    results[s.name] = r;
    const es = new EventSource(s.url);
    const finish = (how) => {
      if (r.closedBy !== null) return;
      r.closedBy = how;
      es.close();
      resolve();
    };
    const listener = (e) => {
      if (e instanceof MessageEvent) {
        r.events.push({ type: e.type, data: e.data, lastEventId: e.lastEventId });
      } else if (e.type === 'open') {
        r.opens++;
      } else if (e.type === 'error') {
        r.errors++;
        if (es.readyState === EventSource.CLOSED) finish('browser');
        else if (r.errors === 1 && s.observeMs !== null) setTimeout(() => finish('page'), s.observeMs);
      }
    };
    for (const type of s.types) es.addEventListener(type, listener);
    setTimeout(() => finish('timeout'), s.timeoutMs);
  })));
  return results;
}
"""


@dataclass
class Request:
    at: float  # time.monotonic() when the request line arrived
    last_event_id: bytes | None  # the raw header value, None when absent


@dataclass
class Log:
    """What one vector's server saw."""

    requests: list[Request] = field(default_factory=list)
    closed_at: float | None = None
    error: str | None = None


class VectorServer(socketserver.ThreadingTCPServer):
    """Serves the test page at / and each vector at /v/<name>; answers reconnects with 204."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, vectors: dict[str, Vector]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.vectors = vectors
        self.logs = {name: Log() for name in vectors}
        self.lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _Handler(socketserver.StreamRequestHandler):
    server: VectorServer

    def handle(self) -> None:
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request_line = self.rfile.readline(8192)
        at = time.monotonic()
        last_event_id: bytes | None = None
        while True:
            line = self.rfile.readline(65536)
            if line in (b"\r\n", b"\n", b""):
                break
            header, _, value = line.partition(b":")
            if header.strip().lower() == b"last-event-id":
                # Keep the value's bytes exactly: only the separator space and the CRLF go.
                value = value.removesuffix(b"\n").removesuffix(b"\r")
                last_event_id = value.removeprefix(b" ")
        parts = request_line.split(b" ")
        target = parts[1].decode("ascii", "replace") if len(parts) == 3 else ""
        if target == "/":
            self._reply(b"200 OK", [b"Content-Type: text/html; charset=utf-8"], PAGE)
            return
        name = target.removeprefix("/v/")
        if not target.startswith("/v/") or name not in self.server.vectors:
            self._reply(b"404 Not Found", [], b"")
            return
        log = self.server.logs[name]
        with self.server.lock:
            log.requests.append(Request(at, last_event_id))
            first = len(log.requests) == 1
        if not first:
            self._reply(b"204 No Content", [b"Access-Control-Allow-Origin: *"], b"")
            return
        head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Access-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n"
        )
        try:
            self.connection.sendall(head)
            for chunk in self.server.vectors[name].chunks:
                time.sleep(PAUSE)
                self.connection.sendall(chunk)
            time.sleep(PAUSE)
            # Taken before the close, so a delayed thread can only lengthen the measured delay.
            log.closed_at = time.monotonic()
            self.connection.shutdown(socket.SHUT_WR)
        except OSError as exc:
            log.error = repr(exc)

    def _reply(self, status: bytes, headers: list[bytes], body: bytes) -> None:
        lines = [b"HTTP/1.1 " + status, *headers, b"Content-Length: %d" % len(body), b"Connection: close"]
        self.connection.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)


def retry_ms(vector: Vector) -> int:
    """The reconnection time Chromium should use after the vector's stream."""
    return DEFAULT_RETRY_MS if vector.retry is None else vector.retry


def measured(vector: Vector) -> bool:
    return retry_ms(vector) <= MEASURED_UP_TO


def listened_types(vector: Vector) -> list[str]:
    """Event types to listen for: the expected ones, message, and every event field value in
    the stream (read leniently), so that an event of an unexpected type is seen too."""
    types = {"message", "open", "error", *(e.type for e in vector.events)}
    text = vector.stream.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
    for line in text.split("\n"):
        line = line.lstrip("\ufeff")
        if line.startswith("event:"):
            value = line[len("event:") :]
            types.update({value, value.removeprefix(" "), value.strip()})
    types.discard("")
    return sorted(types)


@dataclass
class Outcome:
    events: list[Expected]
    closed_by: str
    log: Log


@pytest.fixture(scope="module")
def chromium(browser: Any) -> Iterator[dict[str, Outcome]]:
    """Runs every vector in Chromium at once; the outcome per vector name."""
    servers = []
    try:
        for i in range(math.ceil(len(VECTORS) / PER_PORT)):
            group = VECTORS[i * PER_PORT : (i + 1) * PER_PORT]
            server = VectorServer({v.name: v for v in group})
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
            servers.append(server)
        specs = []
        for server in servers:
            for v in server.vectors.values():
                stream_s = (len(v.chunks) + 2) * (PAUSE + 0.002) + 2
                wait_ms = retry_ms(v) + LATE_MS if measured(v) else OBSERVE_MS
                specs.append({
                    "name": v.name,
                    "url": f"http://127.0.0.1:{server.port}/v/{v.name}",
                    "types": listened_types(v),
                    "observeMs": None if measured(v) else OBSERVE_MS,
                    "timeoutMs": int(stream_s * 1000 + wait_ms + 5000),
                })
        page = browser.new_page()
        try:
            page.goto(f"http://127.0.0.1:{servers[0].port}/")
            results = page.evaluate(RUN_JS, specs)
        finally:
            page.close()
        time.sleep(0.2)  # a late reconnect of a page-closed vector would show in its log now
        logs = {name: log for server in servers for name, log in server.logs.items()}
        yield {
            name: Outcome([Expected(**e) for e in r["events"]], r["closedBy"], logs[name])
            for name, r in results.items()
        }
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


@pytest.mark.parametrize("vector", VECTORS, ids=[v.name for v in VECTORS])
def test_chromium_matches_vector(vector: Vector, chromium: dict[str, Outcome]) -> None:
    outcome = chromium[vector.name]
    log = outcome.log
    assert log.error is None, f"the server could not send the stream: {log.error}"
    assert log.requests and log.requests[0].last_event_id is None, "the first request had a Last-Event-ID"
    assert outcome.events == list(vector.events)
    assert log.closed_at is not None
    if not measured(vector):
        assert outcome.closed_by == "page" and len(log.requests) == 1, (
            f"Chromium reconnected although the stream asked for {vector.retry} ms"
        )
        return
    assert outcome.closed_by == "browser", f"no close after the 204 ({outcome.closed_by})"
    assert len(log.requests) == 2, f"{len(log.requests)} requests"
    # Chromium sends the last event id as UTF-8, with leading and trailing spaces and tabs
    # trimmed (HTTP whitespace), and no header at all when the id is empty.
    header = log.requests[1].last_event_id
    if vector.last_event_id == "":
        assert header is None, f"Last-Event-ID {header!r} sent for an empty last event id"
    else:
        assert header is not None, "no Last-Event-ID sent"
        assert header.decode("utf-8") == vector.last_event_id.strip(" \t"), f"Last-Event-ID {header!r}"
    delay_ms = (log.requests[1].at - log.closed_at) * 1000
    expected = retry_ms(vector)
    assert expected - EARLY_MS <= delay_ms <= expected + LATE_MS, (
        f"reconnected after {delay_ms:.0f} ms, expected {expected} ms"
    )


def test_vectors_cover_measured_and_long_reconnection_times() -> None:
    """The suite checks both kinds of retry, and no retry falls where neither check can tell."""
    values = [retry_ms(v) for v in VECTORS]
    assert any(v == DEFAULT_RETRY_MS for v in values) and any(v > MEASURED_UP_TO for v in values)
    assert not [v for v in values if MEASURED_UP_TO < v < OBSERVE_MS + 1500], "retry too close to the window"
    # A browser wrongly keeping its default would still reconnect outside every explicit band.
    explicit = [v.retry for v in VECTORS if v.retry is not None and measured(v)]
    assert max(explicit) < DEFAULT_RETRY_MS - LATE_MS - EARLY_MS
