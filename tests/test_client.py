"""The requests client against a real scripted HTTP server: reconnection, resume, stops, limits, close."""

from __future__ import annotations

import http.client
import logging
import random
import shutil
import socket
import ssl
import subprocess
import threading
import tracemalloc
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from conftest import missing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scripted_server import DROP, SSE_HEADERS, Framing, Gate, Pause, Repeat, Reply, ScriptedServer, Step, sse
from strategies import splits

from sseproto import Decoder, Event, LimitExceeded
from sseproto._event import MAX_RETRY
from sseproto.client import (
    CLOSED,
    CONNECTING,
    MAX_DELAY,
    MIN_FAILURE_DELAY,
    OPEN,
    ContentTypeError,
    EventSource,
    EventSourceError,
    HTTPStatusError,
    iter_events,
)
from sseproto.client._policy import comment_pieces as _comment_pieces
from sseproto.client._sync import _Dechunker

pytestmark = pytest.mark.timeout(60)

# Short everything: a server that misbehaves costs at most a few seconds, never a hang.
FAST: dict[str, Any] = {"timeout": (2.0, 5.0), "reconnect_delay": 0.02, "max_backoff": 0.2}
END = Reply(204, {}, ())


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as s:
        yield s


class Reader(threading.Thread):
    """Iterates a source in a thread, recording events, the exception and whether it ended."""

    def __init__(self, source: EventSource) -> None:
        super().__init__(daemon=True)
        self.source = source
        self.events: list[Event] = []
        self.got_event = threading.Event()
        self.error: BaseException | None = None
        self.ended = False

    def run(self) -> None:
        try:
            for event in self.source:
                self.events.append(event)
                self.got_event.set()
            self.ended = True
        except BaseException as exc:
            self.error = exc

    def finish(self, timeout: float = 10.0) -> None:
        self.join(timeout)
        assert not self.is_alive(), "the iterator did not end"


def collect(source: EventSource, limit: int = 100) -> list[Event]:
    out = []
    for event in source:
        out.append(event)
        if len(out) >= limit:
            break
    return out


def test_resumes_with_last_event_id_and_drops_the_half_event(server: ScriptedServer) -> None:
    url = server.script(
        "/s",
        Reply(
            body=sse("retry: 20\nid: 1\ndata: one\n\n", "id: 2\ndata: two\n\n", "data: half"), framing="close"
        ),
        Reply(body=[b"id: 3\ndata: three\n\n", b"id: 4\ndata: hal", DROP]),
        Reply(body=sse("data: four\n\n")),
        END,
    )
    with EventSource(url, **FAST) as source:
        events = collect(source)
        assert source.ready_state == CLOSED
    assert [(e.data, e.id) for e in events] == [("one", "1"), ("two", "2"), ("three", "3"), ("four", "3")]
    sent = [r.headers.get("last-event-id") for r in server.seen("/s")]
    assert sent == [None, "2", "3", "3"]
    assert all(r.headers["accept"] == "text/event-stream" for r in server.seen("/s"))


def test_a_content_length_body_is_read_to_its_end(server: ScriptedServer) -> None:
    url = server.script(
        "/s", Reply(body=sse("id: 1\ndata: a\n\n", "data: b\n\ndata: c"), framing="length"), END
    )
    with EventSource(url, **FAST) as source:
        assert [e.data for e in collect(source)] == ["a", "b"]
    assert server.seen("/s")[1].headers["last-event-id"] == "1"


def test_chunk_framing_split_anywhere_on_the_wire(
    server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Chunk-size lines, data and CRLFs arrive in separate packets, with an extension too.
    wire = [b"9\r", b"\ndata: a\n", b"\n\r", b"\nf;ext=1\r\n", b"id: 2\ndata: b\n\n\r\n", b"0\r\n\r\n"]
    body: list[Step] = []
    for part in wire:
        body += [part, Pause(0.01)]
    headers = {**SSE_HEADERS, "Transfer-Encoding": "chunked"}
    url = server.script("/s", Reply(headers=headers, body=body, framing="close"), END)
    caplog.set_level(logging.INFO, logger="sseproto.client")
    with EventSource(url, **FAST) as source:
        assert [(e.data, e.id) for e in collect(source)] == [("a", ""), ("b", "2")]
    assert server.seen("/s")[1].headers["last-event-id"] == "2"
    assert not [r for r in caplog.records if "dropped" in r.getMessage()]  # a clean end, not a drop


def test_dechunker_in_random_splits() -> None:
    rng = random.Random(7)
    payloads = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))) for _ in range(40)]
    wire = b"".join(
        b"%x%s\r\n%s\r\n" % (len(p), b";x=y" if i % 5 == 0 else b"", p) for i, p in enumerate(payloads)
    )
    wire += b"0\r\nTrailer: t\r\n\r\n"
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(wire)), rng.randrange(0, 40)))
        dechunker, out = _Dechunker(), []
        for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True):
            out.append(dechunker.feed(wire[a:b]))
        assert b"".join(out) == b"".join(payloads)
        assert dechunker.done
    with pytest.raises(http.client.HTTPException):
        _Dechunker().feed(b"zz\r\n")
    with pytest.raises(http.client.HTTPException):
        _Dechunker().feed(b"3\r\nabcXY")


def test_initial_last_event_id_is_sent(server: ScriptedServer) -> None:
    url = server.script("/s", Reply(body=sse("data: x\n\n")), END)
    with EventSource(url, last_event_id="41", **FAST) as source:
        assert source.last_event_id == "41"
        assert [e.id for e in collect(source)] == ["41"]
    assert [r.headers.get("last-event-id") for r in server.seen("/s")] == ["41", "41"]


def test_a_non_latin1_id_is_sent_back_as_utf8(server: ScriptedServer) -> None:
    url = server.script("/s", Reply(body=sse("id: \u65e5\u672c\U0001f600\ndata: x\n\n")), END)
    with EventSource(url, **FAST) as source:
        assert [e.id for e in collect(source)] == ["\u65e5\u672c\U0001f600"]
    sent = server.seen("/s")[1].headers["last-event-id"]  # the server read the bytes as latin-1
    assert sent.encode("latin-1").decode("utf-8") == "\u65e5\u672c\U0001f600"


def test_spaces_around_the_id_are_trimmed_from_the_header(server: ScriptedServer) -> None:
    """Chromium trims them (a header value cannot start with a space); requests would refuse it."""
    first, second = Reply(body=sse("id:  \tx \ndata: a\n\n")), Reply(body=sse("id:   \ndata: b\n\n"))
    url = server.script("/s", first, second, END)
    with EventSource(url, **FAST) as source:
        assert [(e.data, e.id) for e in collect(source)] == [("a", " \tx "), ("b", "  ")]
    seen = server.seen("/s")
    assert [r.headers.get("last-event-id") for r in seen] == [None, "x", None]


def test_an_id_without_data_still_moves_last_event_id(server: ScriptedServer) -> None:
    url = server.script("/s", Reply(body=sse("data: a\nid: 7\n\n", "id: 8\n\n")), END)
    with EventSource(url, **FAST) as source:
        assert [e.data for e in collect(source)] == ["a"]
        assert source.last_event_id == "8"
    assert server.seen("/s")[1].headers["last-event-id"] == "8"


def test_retry_field_sets_the_reconnection_time(
    server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = server.script("/s", Reply(body=sse("retry: 35\ndata: a\n\n")), END)
    caplog.set_level(logging.INFO, logger="sseproto.client")
    with EventSource(url, reconnect_delay=9.0, timeout=(2, 5)) as source:
        assert source.reconnection_time == 9.0
        collect(source)
        assert source.reconnection_time == 0.035
    assert "reconnecting to %s in %.3f s" in [r.msg for r in caplog.records]
    assert [r.args[1] for r in caplog.records if r.msg.startswith("reconnecting")] == [0.035]  # type: ignore[index]


def test_204_stops_quietly(server: ScriptedServer) -> None:
    url = server.script("/s", END, Reply(body=sse("data: never\n\n")))
    with EventSource(url, **FAST) as source:
        assert source.ready_state == CONNECTING
        assert collect(source) == []
        assert source.ready_state == CLOSED
    assert len(server.seen("/s")) == 1


@pytest.mark.parametrize("status", [500, 404, 401])
def test_error_status_raises_with_the_response(server: ScriptedServer, status: int) -> None:
    body = b"something broke"
    url = server.script("/s", Reply(status, {"Content-Type": "text/plain"}, [body], "length"))
    source = EventSource(url, **FAST)
    with pytest.raises(HTTPStatusError) as info:
        collect(source)
    assert isinstance(info.value, requests.RequestException)
    assert info.value.response is not None
    assert info.value.response.status_code == status
    assert info.value.response.text == "something broke"
    assert str(status) in str(info.value)
    assert source.ready_state == CLOSED
    assert collect(source) == []
    assert len(server.seen("/s")) == 1


def test_retry_statuses_reconnect_with_the_last_id_and_honour_retry_after(server: ScriptedServer) -> None:
    """Opt-in: a proxy's 502/503 during a deploy is a failed attempt, not the end; the
    client waits at least Retry-After and resumes from its last id."""
    busy = Reply(503, {"Content-Type": "text/plain", "Retry-After": "1"}, [b"deploying"], "length")
    bad_gateway = Reply(502, {"Content-Type": "text/plain"}, [b"no upstream"], "length")
    url = server.script("/s", Reply(body=sse("id: 1\ndata: a\n\n")), busy, bad_gateway,
                        Reply(body=sse("id: 2\ndata: b\n\n")), END)
    with EventSource(url, retry_statuses=(502, 503), **FAST) as source:
        assert [e.data for e in collect(source)] == ["a", "b"]
    seen = server.seen("/s")
    assert len(seen) == 5
    assert [r.headers.get("last-event-id") for r in seen[1:4]] == ["1", "1", "1"]
    assert seen[2].at - seen[1].at >= 1.0  # Retry-After: 1 s, though the backoff here is 0.2 s at most
    assert seen[3].at - seen[2].at < 1.0  # no Retry-After: the backoff alone


def test_statuses_not_listed_still_end_the_stream(server: ScriptedServer) -> None:
    url = server.script("/s", Reply(500, {"Content-Type": "text/plain"}, [b"x"], "length"))
    with pytest.raises(HTTPStatusError), EventSource(url, retry_statuses=(502, 503), **FAST) as source:
        collect(source)
    assert len(server.seen("/s")) == 1
    with pytest.raises(ValueError, match="retry_statuses"):
        EventSource(url, retry_statuses=(200,))


@pytest.mark.parametrize("ctype", ["text/plain", "application/json", None])
def test_wrong_content_type_raises(server: ScriptedServer, ctype: str | None) -> None:
    headers = {} if ctype is None else {"Content-Type": ctype}
    url = server.script("/s", Reply(200, headers, sse("data: x\n\n")))
    with pytest.raises(ContentTypeError) as info, EventSource(url, **FAST) as source:
        collect(source)
    assert isinstance(info.value, EventSourceError)
    assert info.value.response is not None
    assert info.value.response.status_code == 200
    assert len(server.seen("/s")) == 1


def test_content_type_parameters_and_case_are_accepted(server: ScriptedServer) -> None:
    headers = {"Content-Type": "Text/Event-Stream; charset=utf-8"}
    url = server.script("/s", Reply(200, headers, sse("data: x\n\n")), END)
    with EventSource(url, **FAST) as source:
        assert [e.data for e in collect(source)] == ["x"]


def test_redirects_are_followed_and_reconnection_starts_over(server: ScriptedServer) -> None:
    start = server.script("/old", Reply(307, {"Location": "/new"}, (), "length"))
    server.script("/new", Reply(body=sse("id: 1\ndata: a\n\n")), Reply(body=sse("id: 2\ndata: b\n\n")), END)
    with EventSource(start, **FAST) as source:
        assert [e.data for e in collect(source)] == ["a", "b"]
    assert len(server.seen("/old")) == 3
    assert [r.headers.get("last-event-id") for r in server.seen("/new")] == [None, "1", "2"]


def test_headers_auth_and_cookies_go_with_every_reconnection(server: ScriptedServer) -> None:
    first = Reply(200, {**SSE_HEADERS, "Set-Cookie": "session=abc; Path=/"}, sse("data: a\n\n"))
    url = server.script("/s", first, Reply(body=sse("data: b\n\n")), END)
    with EventSource(url, headers={"X-Token": "t0k"}, auth=("user", "pw"), **FAST) as source:
        assert [e.data for e in collect(source)] == ["a", "b"]
    seen = server.seen("/s")
    assert len(seen) == 3
    assert all(r.headers["x-token"] == "t0k" for r in seen)
    assert all(r.headers["authorization"] == "Basic dXNlcjpwdw==" for r in seen)
    assert [r.headers.get("cookie") for r in seen] == [None, "session=abc", "session=abc"]


def test_a_given_session_is_used_and_left_open(server: ScriptedServer) -> None:
    url = server.script("/s", Reply(body=sse("data: a\n\n")), END)
    session = requests.Session()
    session.headers["X-From-Session"] = "yes"
    with EventSource(url, session=session, **FAST) as source:
        collect(source)
    assert all(r.headers["x-from-session"] == "yes" for r in server.seen("/s"))
    assert session.get(url).status_code == 204  # still usable
    session.close()


def test_silent_server_is_detected_by_the_read_timeout(server: ScriptedServer) -> None:
    url = server.script(
        "/s", Reply(body=[b"id: 1\ndata: a\n\n", Pause(30)]), Reply(body=sse("data: b\n\n")), END
    )
    with EventSource(url, timeout=(2.0, 0.3), reconnect_delay=0.01) as source:
        assert [e.data for e in collect(source)] == ["a", "b"]
    assert [r.headers.get("last-event-id") for r in server.seen("/s")] == [None, "1", "1"]


def test_heartbeats_keep_a_quiet_stream_open(server: ScriptedServer) -> None:
    beats: list[bytes | Pause] = []
    for _ in range(6):
        beats += [Pause(0.05), b": ping\n"]
    url = server.script("/s", Reply(body=[*beats, b"data: a\n\n"]), END)
    comments: list[str] = []
    with EventSource(url, timeout=(2.0, 1.0), reconnect_delay=0.01, on_comment=comments.append) as source:
        assert [e.data for e in collect(source)] == ["a"]
    assert comments == ["ping"] * 6
    assert len(server.seen("/s")) == 2  # one stream, then the 204


@pytest.mark.parametrize("framing", ["chunked", "close"])
def test_event_is_delivered_before_more_bytes_arrive(server: ScriptedServer, framing: Framing) -> None:
    # The server holds the connection after one small event until the client has it: a client
    # that waits to fill a read buffer would only get it when the gate times out.
    gate = Gate(timeout=10.0)
    url = server.script(
        "/s", Reply(body=[b"data: first\n\n", gate, b"data: second\n\n"], framing=framing), END
    )
    with EventSource(url, **FAST) as source:
        for event in source:
            if event.data == "first":
                gate.event.set()
            else:
                break
    assert gate.passed == [True]


@pytest.mark.parametrize("framing", ["chunked", "close"])
def test_gzip_stream_is_decoded_and_delivered_promptly(server: ScriptedServer, framing: Framing) -> None:
    gz = zlib.compressobj(wbits=31)
    gate = Gate(timeout=10.0)
    body: list[Step] = [
        gz.compress(b"data: one\n\n") + gz.flush(zlib.Z_SYNC_FLUSH),
        gate,
        gz.compress(b"data: two\n\n") + gz.flush(),
    ]
    headers = {**SSE_HEADERS, "Content-Encoding": "gzip"}
    url = server.script("/s", Reply(headers=headers, body=body, framing=framing), END)
    got = []
    with EventSource(url, **FAST) as source:
        for event in source:
            got.append(event.data)
            gate.event.set()
    assert got == ["one", "two"]
    assert gate.passed == [True]


@pytest.mark.parametrize("framing", ["chunked", "close"])
def test_close_from_another_thread_ends_a_blocked_read(server: ScriptedServer, framing: Framing) -> None:
    url = server.script("/s", Reply(body=[b"data: a\n\n", Pause(60)], framing=framing))
    source = EventSource(url, timeout=(2.0, 60.0))
    reader = Reader(source)
    reader.start()
    assert reader.got_event.wait(10)
    assert source.ready_state == OPEN
    source.close()
    reader.finish()
    assert reader.ended and reader.error is None
    assert [e.data for e in reader.events] == ["a"]
    assert source.ready_state == CLOSED
    assert len(server.seen("/s")) == 1


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (openssl), and its key."""
    openssl = shutil.which("openssl")
    if openssl is None:
        missing("the openssl command")  # skips, or fails in CI
    assert openssl is not None
    d = tmp_path_factory.mktemp("tls")
    cert, key = str(d / "cert.pem"), str(d / "key.pem")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.mark.parametrize("framing", ["chunked", "close"])
def test_https_stream_is_prompt_and_closes(
    tls_files: tuple[str, str], framing: Framing, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = tls_files
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", cert)  # our session trusts the test certificate
    gate = Gate(timeout=10.0)
    with ScriptedServer(tls=context) as server:
        url = server.script(
            "/s", Reply(body=[b"data: a\n\n", gate, b"data: b\n\n", Pause(60)], framing=framing)
        )
        assert url.startswith("https://")
        source = EventSource(url, timeout=(5.0, 60.0))
        reader = Reader(source)
        reader.start()
        assert reader.got_event.wait(10)
        gate.event.set()
        for _ in range(200):
            if len(reader.events) == 2:
                break
            reader.join(0.05)
        source.close()
        reader.finish()
    assert gate.passed == [True]
    assert [e.data for e in reader.events] == ["a", "b"]
    assert reader.ended and reader.error is None


def test_close_while_waiting_for_response_headers() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        source = EventSource(f"http://127.0.0.1:{listener.getsockname()[1]}/", timeout=(2.0, 60.0))
        reader = Reader(source)
        reader.start()
        conn, _ = listener.accept()  # the request is sent; no answer ever comes
        with conn:
            source.close()
            reader.finish()
    assert reader.ended and reader.error is None
    assert source.ready_state == CLOSED


def test_refused_connections_back_off_and_close_ends_the_wait(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    caplog.set_level(logging.INFO, logger="sseproto.client")
    source = EventSource(f"http://127.0.0.1:{port}/", reconnect_delay=0.0, max_backoff=0.4)
    reader = Reader(source)
    reader.start()
    for _ in range(400):
        if sum(r.msg.startswith("reconnecting") for r in caplog.records) >= 4:
            break
        reader.join(0.05)
    source.close()
    reader.finish()
    assert reader.ended and reader.error is None
    delays = [r.args[1] for r in caplog.records if r.msg.startswith("reconnecting")]  # type: ignore[index]
    assert len(delays) >= 4
    # Even with a zero reconnection time, failures never retry faster than the floor.
    assert all(MIN_FAILURE_DELAY <= d <= 0.4 for d in delays)  # type: ignore[operator]


def test_backoff_grows_with_jitter_up_to_the_cap_and_honours_a_longer_retry() -> None:
    source = EventSource("http://127.0.0.1:9/", reconnect_delay=0.5, max_backoff=8.0, rng=random.Random(1))
    assert source.next_delay(0) == 0.5
    for failures in range(1, 12):
        bound = min(8.0, 0.5 * 2**failures)
        samples = [source.next_delay(failures) for _ in range(200)]
        assert all(0.5 <= d <= bound for d in samples)
        assert max(samples) > 0.5 + 0.8 * (bound - 0.5)  # jitter spreads over the range
    long = EventSource("http://127.0.0.1:9/", reconnect_delay=20.0, max_backoff=8.0)
    assert long.next_delay(3) == 20.0
    source.close()
    long.close()


def test_a_successful_connection_resets_the_backoff(
    server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = server.script("/s", Reply(body=sse("retry: 10\ndata: a\n\n")), Reply(body=sse("data: b\n\n")), END)
    caplog.set_level(logging.INFO, logger="sseproto.client")
    with EventSource(url, max_backoff=5.0, timeout=(2, 5)) as source:
        source._failures = 5  # as after five refused attempts
        assert [e.data for e in collect(source)] == ["a", "b"]
    delays = [r.args[1] for r in caplog.records if r.msg.startswith("reconnecting")]  # type: ignore[index]
    assert delays == [0.01, 0.01]


def test_close_inside_the_loop_stops_at_once_and_keeps_the_delivered_id(server: ScriptedServer) -> None:
    url = server.script("/s", Reply(body=sse("id: 1\ndata: a\n\nid: 2\ndata: b\n\nid: 3\ndata: c\n\n")))
    got = []
    with EventSource(url, **FAST) as source:
        for event in source:
            got.append(event.data)
            if event.data == "a":
                source.close()
        # The decoder read all three in one chunk; a resume must start after "a", not "c".
        assert source.last_event_id == "1"
    assert got == ["a"]


@pytest.mark.parametrize(
    "shape",
    [
        Repeat(b"data: " + b"x" * 1018 + b"\n", 10 * 1024),  # 10 MB of data lines: max_event_size
        Repeat(b"x" * 1024, 10 * 1024),  # one 10 MB line: max_line_size
    ],
    ids=["many-lines", "one-line"],
)
def test_oversized_event_raises_with_bounded_memory(server: ScriptedServer, shape: Repeat) -> None:
    url = server.script("/s", Reply(body=[b"data: ok\n\n", b"data: ", shape, b"\n\n"]))
    with EventSource(url, max_event_size=64 * 1024, max_line_size=64 * 1024, **FAST) as source:
        got = []
        tracemalloc.start()
        try:
            with pytest.raises(LimitExceeded) as info:
                for event in source:
                    got.append(event.data)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert source.ready_state == CLOSED
    assert got == ["ok"]
    assert info.value.limit in ("max_event_size", "max_line_size")
    assert "exceeds" in str(info.value)
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes while rejecting a 10 MB event"
    assert len(server.seen("/s")) == 1


def test_iter_events_decodes_an_existing_response(server: ScriptedServer) -> None:
    url = server.script("/s", Reply(body=sse("id: 1\ndata: a\n\n", "event: x\ndata: b\n\n", "data: cut")))
    with requests.get(url, stream=True, timeout=5) as response:
        assert [(e.event, e.data, e.id) for e in iter_events(response)] == [
            ("message", "a", "1"),
            ("x", "b", "1"),
        ]
    decoder = Decoder()
    response = requests.get(url, timeout=5)  # not streamed: the body is already read
    assert [e.data for e in iter_events(response, decoder=decoder)] == ["a", "b"]
    assert decoder.last_event_id == "1"


def test_iter_events_checks_the_response(server: ScriptedServer) -> None:
    url = server.script("/s", Reply(500, {"Content-Type": "text/plain"}, [b"no"], "length"))
    with pytest.raises(HTTPStatusError), requests.get(url, stream=True, timeout=5) as response:
        list(iter_events(response))
    url = server.script("/e", END)
    with requests.get(url, stream=True, timeout=5) as response:
        assert list(iter_events(response)) == []


def test_iter_events_reports_a_drop_as_a_requests_error(server: ScriptedServer) -> None:
    url = server.script("/s", Reply(body=[b"data: a\n\n", b"data: b", DROP]))
    got = []
    with (
        pytest.raises(requests.exceptions.ChunkedEncodingError),
        requests.get(url, stream=True, timeout=5) as r,
    ):
        for event in iter_events(r):
            got.append(event.data)
    assert got == ["a"]


def test_source_closed_before_iterating_yields_nothing(server: ScriptedServer) -> None:
    url = server.script("/s", Reply(body=sse("data: a\n\n")))
    source = EventSource(url, **FAST)
    source.close()
    assert list(source) == []
    assert source.ready_state == CLOSED
    assert server.seen("/s") == []


# -- regressions found by hostile probes -------------------------------------------------


def _ordered(stream: Iterator[Event], seen: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Events of ``stream`` appended to ``seen``, where the comment callback appends too."""
    for event in stream:
        seen.append(("event", event.data))
    return seen


# Comments between, after and before events, in one write, then across writes.
ORDER_WIRE = [b"data: Hello\n\n:Hello\n", b": a\ndata: 1\n\n: b\n: c\ndata: 2\r\n\r\n:d\rdata: 3\n\n",
              b"data: 4\n", Pause(0.05), b"\n: after 4\n"]
ORDER = [("event", "Hello"), ("comment", "Hello"), ("comment", "a"), ("event", "1"), ("comment", "b"),
         ("comment", "c"), ("event", "2"), ("comment", "d"), ("event", "3"), ("event", "4"),
         ("comment", "after 4")]


def test_comments_and_events_reach_the_caller_in_stream_order(server: ScriptedServer) -> None:
    """on_comment used to fire for a whole chunk before its events were yielded."""
    url = server.script("/s", Reply(body=ORDER_WIRE), END)
    seen: list[tuple[str, str]] = []
    with EventSource(url, on_comment=lambda text: seen.append(("comment", text)), **FAST) as source:
        assert _ordered(source, seen) == ORDER


def test_iter_events_keeps_comments_in_stream_order(server: ScriptedServer) -> None:
    url = server.script("/s", Reply(body=ORDER_WIRE))
    seen: list[tuple[str, str]] = []
    decoder = Decoder(on_comment=lambda text: seen.append(("comment", text)))
    with requests.get(url, stream=True, timeout=5) as response:
        assert _ordered(iter_events(response, decoder=decoder), seen) == ORDER


_order_parts = st.sampled_from(
    [b"data: x", b"data: y", b"id: 1", b"event: t", b":", b": c", b": d", b"\n", b"\r", b"\r\n", b"\n\n",
     b"\r\r", b"\n:", b"\r:", b" ", b"x", b"\xef\xbb\xbf"]
)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_order_parts, max_size=40).map(b"".join), st.data())
def test_comment_pieces_keep_stream_order_under_any_chunking(stream: bytes, data: st.DataObject) -> None:
    """Fed byte by byte, the decoder finishes at most one line per call: that order is the
    stream's. Any chunking, cut into comment pieces, must give the same order."""

    def order(chunks: list[bytes], cut: bool) -> list[tuple[str, str]]:
        seen: list[tuple[str, str]] = []
        decoder = Decoder(on_comment=lambda text: seen.append(("comment", text)))
        for chunk in chunks:
            for piece in _comment_pieces(chunk) if cut else (chunk,):
                assert piece
                seen += [("event", e.data) for e in decoder.feed(piece)]
        return seen

    expected = order([stream[i : i + 1] for i in range(len(stream))], cut=False)
    chunks = [c for c in data.draw(splits(stream)) if c]
    assert order(chunks, cut=True) == expected
    assert b"".join(p for c in chunks for p in _comment_pieces(c)) == stream


def test_comment_pieces_leave_runs_of_heartbeats_whole() -> None:
    assert _comment_pieces(b"data: a\n\n") == (b"data: a\n\n",)
    assert _comment_pieces(b": a\n: b\n: c\n") == [b": a\n: b\n: c\n"]
    assert _comment_pieces(b"data: a\n\n: b\n: c\ndata: d\n\n:e\n") == [
        b"data: a\n\n", b": b\n: c\ndata: d\n\n", b":e\n"]
    # A leading line break may end a blank line begun in the last chunk: an event, then the comment.
    assert _comment_pieces(b"\n: after\n") == [b"\n", b": after\n"]


@pytest.mark.parametrize(
    ("body", "limit"),
    [([b"data: " + b"x" * 200 + b"\n\n"], "max_line_size"),
     ([b"data: " + b"x" * 90 + b"\n"] * 3 + [b"\n"], "max_event_size")],
    ids=["line", "event"],
)
def test_limit_error_names_the_client_arguments(server: ScriptedServer, body: list[Step], limit: str) -> None:
    """The message named the Decoder, which a client user never sees or configures."""
    url = server.script("/s", Reply(body=[b"data: ok\n\n", *body]))
    with EventSource(url, max_event_size=100, max_line_size=100, **FAST) as source:
        got = []
        with pytest.raises(LimitExceeded) as info:
            for event in source:
                got.append(event.data)
    assert got == ["ok"]
    assert (info.value.limit, info.value.value) == (limit, 100)
    message = str(info.value)
    assert f"exceeds {limit}=100" in message and f"EventSource({limit}=...)" in message
    assert "Decoder" not in message


def test_retry_zero_and_close_at_once_meets_the_backoff(
    server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A server answering retry: 0 and closing got 2,133 connections in 3 s: a stream that
    delivers no event is a failed attempt (backoff with jitter, floor min_failure_delay)."""
    url = server.script("/s", Reply(body=sse("retry: 0\n: nothing here\n"), framing="close"))
    caplog.set_level(logging.INFO, logger="sseproto.client")
    source = EventSource(url, timeout=(2, 5), rng=random.Random(3))
    reader = Reader(source)
    reader.start()
    reader.join(3.0)
    source.close()
    reader.finish()
    assert reader.error is None and reader.events == []
    connections = len(server.seen("/s"))
    # The floor alone allows 3 / 0.1 + 1 = 31; the exponential bound makes it a handful.
    assert 2 <= connections <= 10, connections
    delays = [r.args[1] for r in caplog.records if r.msg.startswith("reconnecting")]  # type: ignore[index]
    assert all(d >= MIN_FAILURE_DELAY for d in delays)  # type: ignore[operator]
    assert source.next_delay(0) == 0.0  # the stream's retry: 0 holds once an event arrives


def test_a_quiet_stream_that_stayed_open_is_no_failed_attempt(
    server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A channel with no events, ended by the server after a while (SSE_MAX_DURATION), comes
    back after the stream's retry, not after a growing backoff: only short event-less
    streams count as failed attempts."""
    quiet = Reply(body=[*sse("retry: 20\n:\n"), Pause(0.4), *sse(":\n")], framing="close")
    url = server.script("/s", quiet, quiet, quiet, Reply(body=sse("data: a\n\n")), END)
    caplog.set_level(logging.INFO, logger="sseproto.client")
    with EventSource(url, timeout=(2, 5), min_failure_delay=0.1, max_backoff=0.3) as source:
        assert [e.data for e in collect(source)] == ["a"]
    delays = [r.args[1] for r in caplog.records if r.msg.startswith("reconnecting")]  # type: ignore[index]
    assert delays[:3] == [0.02, 0.02, 0.02]


def test_an_event_resets_the_backoff_of_event_less_streams(
    server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    empty = Reply(body=sse("retry: 10\n"), framing="close")
    url = server.script("/s", empty, empty, Reply(body=sse("data: a\n\n")), empty, END)
    caplog.set_level(logging.INFO, logger="sseproto.client")
    with EventSource(url, timeout=(2, 5), min_failure_delay=0.05, max_backoff=0.3) as source:
        assert [e.data for e in collect(source)] == ["a"]
    delays = [r.args[1] for r in caplog.records if r.msg.startswith("reconnecting")]  # type: ignore[index]
    assert len(delays) == 4
    assert all(0.05 <= d <= 0.3 for d in delays[:2])  # type: ignore[operator]
    assert delays[2] == 0.01  # after the event: the stream's retry
    assert 0.05 <= delays[3] <= 0.1  # one failure again: the first step of the backoff
    with pytest.raises(ValueError, match="min_failure_delay"):
        EventSource(url, min_failure_delay=0)
    with pytest.raises(ValueError, match="max_backoff"):
        EventSource(url, max_backoff=float("nan"))


def test_a_huge_retry_is_clamped_not_an_overflow(
    server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    """retry: 2**64-1 (ms) made the wait raise OverflowError out of iteration."""
    url = server.script("/s", Reply(body=sse(f"retry: {MAX_RETRY}\ndata: a\n\n"), framing="close"))
    caplog.set_level(logging.INFO, logger="sseproto.client")
    source = EventSource(url, timeout=(2, 5))
    reader = Reader(source)
    reader.start()
    for _ in range(200):
        if any(r.msg.startswith("reconnecting") for r in caplog.records) or not reader.is_alive():
            break
        reader.join(0.05)
    assert reader.is_alive() and reader.error is None  # waiting, as the server asked
    assert source.ready_state == CONNECTING
    source.close()  # the wait ends at once
    reader.finish()
    assert reader.ended and reader.error is None
    assert [e.data for e in reader.events] == ["a"]
    delays = [r.args[1] for r in caplog.records if r.msg.startswith("reconnecting")]  # type: ignore[index]
    assert delays == [MAX_DELAY]
    assert source.next_delay(5) == MAX_DELAY
    assert len(server.seen("/s")) == 1


def test_a_huge_read_timeout_is_clamped(server: ScriptedServer) -> None:
    url = server.script("/s", Reply(body=sse("data: a\n\n")), END)
    with EventSource(url, timeout=(2, 1e12), reconnect_delay=0.01) as source:
        assert [e.data for e in collect(source)] == ["a"]


@pytest.fixture
def other_origin() -> Iterator[ScriptedServer]:
    """A second server: another port of 127.0.0.1, so another origin."""
    with ScriptedServer() as s:
        yield s


def _sign(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """An auth callable that sets its own header."""
    request.headers["X-Signed"] = "sig"
    return request


@pytest.mark.parametrize("forward", [False, True], ids=["default", "forward_headers"])
def test_headers_stay_with_their_origin_across_redirects(
    server: ScriptedServer, other_origin: ScriptedServer, forward: bool
) -> None:
    """A redirect to another host used to get the user's X-Api-Key (requests strips only
    Authorization and Cookie). Every reconnection starts again at the URL given."""
    start = server.script("/start", Reply(302, {"Location": "/old"}, (), "length"))
    server.script("/old", Reply(307, {"Location": other_origin.url("/new")}, (), "length"))
    other_origin.script("/new", Reply(body=sse("id: 1\ndata: a\n\n")), Reply(body=sse("id: 2\ndata: b\n\n")),
                        END)
    session = requests.Session()
    session.headers["X-From-Session"] = "s"
    with EventSource(start, session=session, headers={"X-Api-Key": "k"}, auth=_sign, forward_headers=forward,
                     **FAST) as source:
        assert [e.data for e in collect(source)] == ["a", "b"]
    session.close()
    mine = [*server.seen("/start"), *server.seen("/old")]
    assert len(mine) == 6  # three connections, each through both hops of the first origin
    ours = [(r.headers["x-api-key"], r.headers["x-signed"], r.headers["x-from-session"]) for r in mine]
    assert ours == [("k", "sig", "s")] * 6
    theirs = other_origin.seen("/new")
    assert [r.headers.get("last-event-id") for r in theirs] == [None, "1", "2"]
    assert all(r.headers["accept"] == "text/event-stream" for r in theirs)
    for name, value in (("x-api-key", "k"), ("x-signed", "sig"), ("x-from-session", "s")):
        assert [r.headers.get(name) for r in theirs] == [value if forward else None] * 3


def test_a_redirect_loop_raises_too_many_redirects(server: ScriptedServer) -> None:
    url = server.script("/loop", Reply(302, {"Location": "/loop"}, (), "length"))
    session = requests.Session()
    session.max_redirects = 3
    with pytest.raises(requests.TooManyRedirects), EventSource(url, session=session, **FAST) as source:
        collect(source)
    assert len(server.seen("/loop")) == 4
    session.close()
