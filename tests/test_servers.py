"""Real servers, real HTTP: Flask's dev server, gunicorn gthread and gevent, waitress.

Each server runs as a subprocess with one of the small apps in tests/apps/; events are
published over HTTP from the test process, so delivery crosses processes and sockets.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest
import requests
from conftest import free_port
from servers import Server, running

from sseproto import Decoder, Event

sseclient = __import__("sseclient")

# Which app each server runs (a Flask one, and the plain WSGI one under waitress), and how.
APPS = {"flask-dev": "apps.flask_app", "gunicorn-gthread": "apps.flask_app",
        "gunicorn-gevent": "apps.flask_app", "waitress": "apps.wsgi_app"}
SETTINGS = {"SSE_HEARTBEAT": "0.3", "SSE_QUEUE_SIZE": "100"}


def start(name: str, port: int | None = None, **env: str) -> AbstractContextManager[Server]:
    return running(name, app=APPS[name], port=port, **{**SETTINGS, **env})


@pytest.fixture(scope="module", params=list(APPS))
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    with start(request.param) as srv:
        yield srv


def open_events(url: str, headers: dict[str, str] | None = None) -> tuple[Iterator[Any], requests.Response]:
    """sseclient-py reading ``url`` over a streamed requests response (and that response)."""
    r = requests.get(url, stream=True, headers={"Accept": "text/event-stream", **(headers or {})},
                     timeout=(5, 10))
    r.raise_for_status()
    return sseclient.SSEClient(r.iter_content(chunk_size=None)).events(), r


def take(events: Iterator[Any], n: int) -> list[Any]:
    return [next(events) for _ in range(n)]


def raw_stream(server: Server, path: str, **headers: str) -> tuple[http.client.HTTPConnection, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", path, headers={"Accept-Encoding": "gzip, br", **headers})
    return conn, conn.getresponse()


def test_headers_arrive_at_once_then_heartbeats(server: Server) -> None:
    # Nothing is published on this channel: the headers must not wait for an event.
    conn, resp = raw_stream(server, "/sse/stream?channel=headers")
    try:
        assert resp.status == 200
        assert resp.getheader("Content-Type") == "text/event-stream; charset=utf-8"
        assert resp.getheader("Cache-Control") == "no-cache, no-transform"
        assert resp.getheader("X-Accel-Buffering") == "no"
        assert resp.getheader("Content-Encoding") is None
        comments: list[str] = []
        decoder = Decoder(on_comment=comments.append)
        assert decoder.feed(resp.read1(65536)) == []
        assert decoder.retry == 200
        for _ in range(50):  # heartbeats every 0.3 s; bounded
            if comments:
                break
            assert decoder.feed(resp.read1(65536)) == []
        assert comments == [""]  # a ":" line
    finally:
        conn.close()


def test_events_exactly_once_then_exact_replay(server: Server) -> None:
    url = server.url + "/sse/stream?channel=once,other"
    events, r = open_events(url)
    assert server.wait_for("subscribers", 1, "once") == 1
    ids = [server.publish_ids({"n": i}, "once" if i % 2 else "other", event="tick")[0] for i in range(6)]
    got = take(events, 6)
    assert [(e.event, json.loads(e.data)["n"], e.id) for e in got] == [("tick", i, ids[i]) for i in range(6)]
    r.close()
    # Missed while away, then resume with Last-Event-ID: exactly those, then live ones.
    missed = [server.publish_ids(f"m{i}", "once")[0] for i in range(3)]
    rest, r2 = open_events(url, {"Last-Event-ID": ids[3]})
    assert [(e.data, e.id) for e in take(rest, 3)] == [
        (json.dumps({"n": 4}, separators=(",", ":")), ids[4]),
        (json.dumps({"n": 5}, separators=(",", ":")), ids[5]),
        ("m0", missed[0]),
    ]
    live = server.publish_ids("live", "other")[0]
    assert [(e.data, e.id) for e in take(rest, 3)] == [
        ("m1", missed[1]), ("m2", missed[2]), ("live", live)
    ]
    r2.close()


def test_polyfill_query_parameter_and_gap(server: Server) -> None:
    first = server.publish_ids("a", "poly")[0]
    second = server.publish_ids("b", "poly")[0]
    events, r = open_events(server.url + f"/sse/stream?channel=poly&lastEventId={first}")
    got = take(events, 1)
    assert (got[0].data, got[0].id) == ("b", second)
    r.close()
    events, r = open_events(server.url + "/sse/stream?channel=poly", {"Last-Event-ID": "no-such-id"})
    got = take(events, 3)
    assert got[0].event == "sseproto.gap"
    assert json.loads(got[0].data) == {"lastEventId": "no-such-id", "channels": ["poly"]}
    assert [e.data for e in got[1:]] == ["a", "b"]
    r.close()


def test_vanished_client_is_unsubscribed(server: Server) -> None:
    socks = []
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        s.sendall(b"GET /sse/stream?channel=vanish HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        socks.append(s)
    assert server.wait_for("subscribers", 3, "vanish") == 3
    for s in socks:
        s.close()
    assert server.wait_for("subscribers", 0, "vanish") == 0


def test_a_stalled_client_is_cut_off_and_never_slows_others(server: Server) -> None:
    """One client stops reading; another must still get every event, at once and once."""
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.settimeout(10)
    stalled.connect(("127.0.0.1", server.port))
    stalled.sendall(b"GET /sse/stream?channel=stall HTTP/1.1\r\nHost: x\r\n\r\n")
    assert stalled.recv(4096).startswith(b"HTTP/1.1 200")  # then it reads nothing more
    events, r = open_events(server.url + "/sse/stream?channel=stall")
    assert server.wait_for("subscribers", 2, "stall") == 2
    total = 1000  # 8 MB: more than the kernel buffers of the stalled connection hold
    received: list[str] = []

    def read() -> None:
        for event in events:
            received.append(event.id)
            if len(received) == total:
                break

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    # Bursts of 10 stay well inside the reading client's queue of 100.
    ids = [i for _ in range(total // 10) for i in server.publish_ids("x" * 8000, "stall", 10)]
    reader.join(30)
    assert received == ids
    if server.name != "waitress":  # waitress buffers a slow client's output itself, unbounded
        # The stalled one was dropped at its queue's overflow.
        assert server.status("stall")["subscribers"] == 1
    stalled.close()
    r.close()
    assert server.wait_for("subscribers", 0, "stall") == 0


def test_limits_and_errors_over_http(server: Server) -> None:
    assert requests.get(server.url + "/sse/stream?channel=bad%20name", timeout=10).status_code == 400
    assert requests.get(server.url + "/sse/stream?channel=a", headers={"Last-Event-ID": "x" * 300},
                        timeout=10).status_code == 400


def test_chromium_eventsource_resumes_without_loss(browser: Any) -> None:
    with start("gunicorn-gthread") as srv:
        page = browser.new_page()
        try:
            page.goto(srv.url + "/?channel=browser")
            page.wait_for_function("window.opens >= 1", timeout=10_000)
            ids = [srv.publish_ids(f"e{i}", "browser")[0] for i in range(3)]
            page.wait_for_function("window.got.length >= 3", timeout=10_000)
            requests.post(srv.url + "/end", timeout=10)  # the server ends every stream
            ids += [srv.publish_ids(f"e{i}", "browser")[0] for i in range(3, 6)]  # sent while reconnecting
            page.wait_for_function("window.opens >= 2 && window.got.length >= 6", timeout=10_000)
            ids.append(srv.publish_ids("e6", "browser")[0])
            page.wait_for_function("window.got.length >= 7", timeout=10_000)
            got = page.evaluate("window.got")
            assert got == [[ids[i], f"e{i}"] for i in range(7)]
            assert page.evaluate("window.gaps") == []
        finally:
            page.close()


def test_event_round_trip_matches_our_encoder(server: Server) -> None:
    """Multi-line data and custom types survive the server and parse as we encode them."""
    url = server.url + "/sse/stream?channel=lines"
    r = requests.get(url, stream=True, timeout=(5, 10))
    try:
        chunks = r.iter_content(chunk_size=None)
        decoder = Decoder()
        decoder.feed(next(chunks))
        assert server.wait_for("subscribers", 1, "lines") == 1
        event_id = server.publish_ids("one\ntwo\r\nthree", "lines", event="multi")[0]
        got: list[Event] = []
        for chunk in chunks:
            got += decoder.feed(chunk)
            if got:
                break
        assert got == [Event("one\ntwo\nthree", "multi", event_id)]
    finally:
        r.close()


def test_chromium_cross_origin_eventsource_with_credentials(browser: Any) -> None:
    """localhost and 127.0.0.1 are two origins: CORS with credentials must let the stream through."""
    port = free_port()
    with start("gunicorn-gthread", port, SSE_CORS_ORIGINS=f"http://localhost:{port}") as srv:
        page = browser.new_page()
        denied = browser.new_page()
        try:
            page.goto(f"http://localhost:{port}/?channel=cors&origin=http://127.0.0.1:{port}")
            page.wait_for_function("window.opens >= 1", timeout=10_000)
            event_id = srv.publish_ids("through", "cors")[0]
            page.wait_for_function("window.got.length >= 1", timeout=10_000)
            assert page.evaluate("window.got") == [[event_id, "through"]]
            # 127.0.0.1 reading from localhost is not an allowed origin: the browser refuses.
            denied.goto(f"http://127.0.0.1:{port}/?channel=cors&origin=http://localhost:{port}")
            denied.wait_for_function("window.errors >= 1", timeout=10_000)
            # A CORS failure closes an EventSource for good (readyState 2), unlike a network error.
            denied.wait_for_function("window.es.readyState === 2", timeout=10_000)
            assert denied.evaluate("[window.opens, window.got]") == [0, []]
        finally:
            page.close()
            denied.close()


def test_our_client_resumes_across_server_side_drops(server: Server) -> None:
    """sseproto's client: every event exactly once while the server ends its streams."""
    from sseproto.client import EventSource

    received: list[tuple[str, str | None]] = []
    opened = threading.Event()
    source = EventSource(server.url + "/sse/stream?channel=ours", timeout=(5, 5), reconnect_delay=0.1)

    def read() -> None:
        for event in source:
            received.append((event.data, event.id))
            opened.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert server.wait_for("subscribers", 1, "ours") == 1
        sent: list[tuple[str, str]] = []
        for round_ in range(3):
            for i in range(5):
                data = f"r{round_}e{i}"
                sent.append((data, server.publish_ids(data, "ours")[0]))
            # End every stream: the client reconnects with Last-Event-ID and replays.
            requests.post(server.url + "/end", timeout=10).raise_for_status()
        deadline = time.monotonic() + 15
        while len(received) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert received == sent
        assert source.last_event_id == sent[-1][1]
    finally:
        source.close()
        reader.join(5)
    assert not reader.is_alive()
