"""The WSGI stream endpoint and body, driven directly as a WSGI server would."""

from __future__ import annotations

import gc
import itertools
import json
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterable, Iterator
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from conftest import wait_until

from sseproto import Decoder, Event
from sseproto.brokers import MemoryBroker
from sseproto.wsgi import GAP_EVENT, PADDING, EventStream, EventStreamApp, Options


class Call:
    """One request to a WSGI app: status, headers and the body iterator."""

    def __init__(self, app: Any, path: str = "/", method: str = "GET", **headers: str) -> None:
        environ: dict[str, Any] = {"REQUEST_METHOD": method}
        path, _, query = path.partition("?")
        environ["PATH_INFO"] = path
        environ["QUERY_STRING"] = query
        for name, value in headers.items():
            environ["HTTP_" + name.upper()] = value
        setup_testing_defaults(environ)
        self.environ = environ
        self.status = ""
        self.headers: dict[str, str] = {}

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            self.status = status
            self.headers = dict(headers)

        self.body: Iterable[bytes] = app(environ, start_response)
        self.iter: Iterator[bytes] = iter(self.body)

    def chunk(self) -> bytes:
        return next(self.iter)

    def events(self, n: int, decoder: Decoder | None = None) -> list[Event]:
        """Read until ``n`` events decoded (at most 100 chunks)."""
        decoder = decoder or Decoder()
        got: list[Event] = []
        for _ in range(100):
            if len(got) >= n:
                break
            got += decoder.feed(self.chunk())
        assert len(got) == n
        return got

    def close(self) -> None:
        self.body.close()  # type: ignore[attr-defined]


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker()


def make(broker: MemoryBroker, **options: Any) -> EventStreamApp:
    options.setdefault("heartbeat", 0.05)
    return EventStreamApp(broker, Options(**options))


def test_headers_and_retry_go_out_before_any_event(broker: MemoryBroker) -> None:
    call = Call(make(broker), "/?channel=a")
    assert call.status == "200 OK"
    assert call.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert call.headers["Cache-Control"] == "no-cache, no-transform"
    assert call.headers["X-Accel-Buffering"] == "no"
    assert "Content-Encoding" not in call.headers and "Content-Length" not in call.headers
    first = call.chunk()  # nothing was published: this must not wait for an event
    assert first == b"retry: 3000\n\n"
    decoder = Decoder()
    assert decoder.feed(first) == [] and decoder.retry == 3000
    call.close()


def test_retry_jitter_staggers_clients(broker: MemoryBroker) -> None:
    app = make(broker, retry=1000, retry_jitter=500)
    seen = set()
    for _ in range(40):
        call = Call(app, "/")
        decoder = Decoder()
        decoder.feed(call.chunk())
        call.close()
        assert decoder.retry is not None and 1000 <= decoder.retry <= 1500
        seen.add(decoder.retry)
    assert len(seen) > 1


def test_no_retry_still_opens_with_a_comment(broker: MemoryBroker) -> None:
    call = Call(make(broker, retry=None), "/")
    assert call.chunk() == b":\n"
    call.close()


@pytest.mark.parametrize("config, query", [(True, ""), (False, "&padding=1")])
def test_padding_opens_with_2k_comment(broker: MemoryBroker, config: bool, query: str) -> None:
    call = Call(make(broker, padding=config), "/?channel=a" + query)
    first = call.chunk()
    assert first.startswith(PADDING) and len(PADDING) > 2048
    comments: list[str] = []
    assert Decoder(on_comment=comments.append).feed(first) == [] and len(comments) == 1
    call.close()


def test_heartbeat_when_idle(broker: MemoryBroker) -> None:
    call = Call(make(broker), "/")
    call.chunk()
    assert call.chunk() == b":\n"
    e = broker.publish("sse", Event("x"))
    assert call.events(1) == [e]
    call.close()


def test_live_events_in_order(broker: MemoryBroker) -> None:
    call = Call(make(broker), "/?channel=a&channel=b")
    call.chunk()
    published = [broker.publish(ch, Event(str(i))) for i, ch in enumerate("abcab")]
    assert call.events(4) == [published[i] for i in (0, 1, 3, 4)]
    call.close()


@pytest.mark.parametrize(
    "how",
    ["header", "lastEventId", "last-event-id", "last_event_id", "Last-Event-ID", "evs_last_event_id"],
)
def test_last_event_id_from_header_or_query(broker: MemoryBroker, how: str) -> None:
    app = make(broker)
    events = [broker.publish(ch, Event(str(i))) for i, ch in enumerate("abab")]
    if how == "header":
        call = Call(app, "/?channel=a,b", last_event_id=events[0].id or "")
    else:
        call = Call(app, f"/?channel=a,b&{how}={events[0].id}")
    assert call.events(3) == events[1:]
    later = broker.publish("b", Event("later"))
    assert call.events(1) == [later]
    call.close()


def test_header_wins_over_query(broker: MemoryBroker) -> None:
    events = [broker.publish("a", Event(str(i))) for i in range(3)]
    call = Call(make(broker), f"/?channel=a&lastEventId={events[0].id}", last_event_id=events[1].id or "")
    assert call.events(1) == [events[2]]
    call.close()


def test_gap_is_announced_then_retained_events_follow(broker: MemoryBroker) -> None:
    broker = MemoryBroker(replay_size=2)
    events = [broker.publish("a", Event(str(i))) for i in range(4)]
    call = Call(make(broker), "/?channel=a", last_event_id=events[0].id or "")
    decoder = Decoder(last_event_id=events[0].id or "")
    gap, *rest = call.events(3, decoder)
    assert gap.event == GAP_EVENT
    assert json.loads(gap.data) == {"lastEventId": events[0].id, "channels": ["a"]}
    assert gap.id == events[0].id  # the gap event carries no id of its own
    assert rest == events[2:]
    call.close()


def test_unknown_id_is_a_gap(broker: MemoryBroker) -> None:
    call = Call(make(broker), "/?channel=x", last_event_id="nope")
    (gap,) = call.events(1)
    assert gap.event == GAP_EVENT and json.loads(gap.data)["channels"] == ["x"]
    call.close()


def test_byte_cap_ends_at_an_event_boundary_and_resume_loses_nothing(broker: MemoryBroker) -> None:
    app = make(broker, max_bytes=500)
    published: list[Event] = []
    received: list[Event] = []
    decoder = Decoder()
    done = False
    for _ in range(40):  # each connection reads until the server ends it
        headers = {"last_event_id": decoder.last_event_id} if decoder.last_event_id else {}
        call = Call(app, "/?channel=a", **headers)
        if not published:  # the first connection is live when these go out
            published += [broker.publish("a", Event("x" * 50 + str(i))) for i in range(40)]
        wire = b""
        for chunk in call.iter:
            wire += chunk
            received += decoder.feed(chunk)
            if received and received[-1] == published[-1]:
                done = True
                break
        call.close()
        if done:
            break
        # The server ended this connection: after whole events only, near the cap.
        assert wire.count(b"data: ") == len(Decoder().feed(wire)) > 0
        body = len(wire) - len(b"retry: 3000\n\n")
        assert 500 <= body < 500 + max(len(e.encode()) for e in published)
    assert received == published


def test_padding_does_not_count_toward_the_byte_cap(broker: MemoryBroker) -> None:
    call = Call(make(broker, padding=True, max_bytes=100), "/")
    assert call.chunk().startswith(PADDING)
    e = broker.publish("sse", Event("x" * 200))
    assert call.events(1) == [e]  # the stream went on past the padding, then ends
    assert list(call.iter) == []


def test_limits_answer_400(broker: MemoryBroker) -> None:
    app = make(broker, max_channels=2, max_channel_length=5, max_last_event_id_length=8)
    for path, headers in [
        ("/?channel=a,b,c", {}),
        ("/?channel=abcdef", {}),
        ("/?channel=a%20b", {}),
        ("/?channel=a,", {}),
        ("/?channel=a", {"last_event_id": "123456789"}),
        ("/?channel=a&lastEventId=123456789", {}),
        ("/?" + "&".join(f"x{i}=1" for i in range(300)), {}),
    ]:
        call = Call(app, path, **headers)
        assert call.status == "400 Bad Request", path
        assert call.headers["Content-Type"].startswith("text/plain")
    assert broker.subscriber_count() == 0 and app.active_streams == 0
    assert Call(app, "/?channel=a,b", last_event_id="12345678").status == "200 OK"


def test_channel_pattern_is_configurable(broker: MemoryBroker) -> None:
    app = make(broker, channel_pattern=r"[a-z]+")
    assert Call(app, "/?channel=abc").status == "200 OK"
    assert Call(app, "/?channel=ab1").status == "400 Bad Request"


def test_authorization_callback_answers_403(broker: MemoryBroker) -> None:
    asked: list[str] = []

    def authorize(environ: Any, channel: str) -> bool:
        asked.append(channel)
        return channel != "secret" or environ.get("HTTP_X_TOKEN") == "ok"

    app = EventStreamApp(broker, heartbeat=1, authorize=authorize)
    assert Call(app, "/?channel=public,secret").status == "403 Forbidden"
    assert asked == ["public", "secret"]
    assert broker.subscriber_count() == 0
    call = Call(app, "/?channel=public,secret", x_token="ok")
    assert call.status == "200 OK"
    call.close()


def test_connection_limit_answers_503_and_frees_on_close(broker: MemoryBroker) -> None:
    app = make(broker, max_connections=2, retry_after=7)
    calls = [Call(app, "/"), Call(app, "/")]
    busy = Call(app, "/")
    assert busy.status == "503 Service Unavailable" and busy.headers["Retry-After"] == "7"
    assert app.active_streams == 2 and broker.subscriber_count() == 2
    calls[0].close()
    again = Call(app, "/")
    assert again.status == "200 OK"
    again.close()
    calls[1].close()
    assert app.active_streams == 0 and broker.subscriber_count() == 0


def test_cors_with_credentials_echoes_allowed_origins_only(broker: MemoryBroker) -> None:
    app = make(broker, cors_origins=("https://a.example",), cors_credentials=True)
    call = Call(app, "/", origin="https://a.example")
    assert call.headers["Access-Control-Allow-Origin"] == "https://a.example"
    assert call.headers["Access-Control-Allow-Credentials"] == "true"
    assert call.headers["Vary"] == "Origin"
    call.close()
    other = Call(app, "/", origin="https://evil.example")
    assert "Access-Control-Allow-Origin" not in other.headers
    other.close()
    pre = Call(app, "/", method="OPTIONS", origin="https://a.example")
    assert pre.status == "204 No Content"
    assert "Last-Event-ID" in pre.headers["Access-Control-Allow-Headers"]
    assert pre.headers["Access-Control-Allow-Origin"] == "https://a.example"


def test_cors_wildcard_without_credentials(broker: MemoryBroker) -> None:
    call = Call(make(broker, cors_origins="*"), "/", origin="https://any.example")
    assert call.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in call.headers
    call.close()
    with pytest.raises(ValueError, match="credentials"):
        Options(cors_origins="*", cors_credentials=True)
    with pytest.raises(ValueError, match="credentials"):
        Options(cors_credentials=True)


def test_other_methods_get_405(broker: MemoryBroker) -> None:
    call = Call(make(broker), "/", method="POST")
    assert call.status == "405 Method Not Allowed" and "GET" in call.headers["Allow"]


def test_busy_retry_turns_clients_away_with_a_retry_instead_of_a_503(broker: MemoryBroker) -> None:
    """A 503 fails a browser's EventSource for good; ``busy="retry"`` makes it come back later."""
    app = make(broker, max_connections=1, retry_after=2, busy="retry", cors_origins="*")
    held = Call(app, "/?channel=a")
    retries = set()
    for _ in range(20):
        busy = Call(app, "/?channel=a", last_event_id="7")
        assert busy.status == "200 OK" and busy.headers["Content-Type"].startswith("text/event-stream")
        assert busy.headers["Access-Control-Allow-Origin"] == "*"
        decoder = Decoder()
        assert [decoder.feed(chunk) for chunk in busy.body] == [[]]  # no event, and the stream ends
        assert decoder.retry is not None and 2000 <= decoder.retry < 4000
        retries.add(decoder.retry)
    assert len(retries) > 1  # spread, so the clients turned away do not return together
    assert app.active_streams == 1 and broker.subscriber_count() == 1  # none of them took a slot
    held.close()
    assert Call(app, "/?channel=a").status == "200 OK"


def test_max_duration_ends_streams_between_events_and_authorization_runs_again(broker: MemoryBroker) -> None:
    """A stream ends after 0.75 to 1 times ``max_duration``, never inside an event; the client's
    reconnection is authorized anew, so access revoked meanwhile is refused."""
    allowed = [True]
    app = EventStreamApp(broker, Options(heartbeat=0.05, max_duration=0.4),
                         authorize=lambda environ, channel: allowed[0])
    call = Call(app, "/?channel=a")
    started = time.monotonic()
    decoder = Decoder()
    got: list[Event] = []
    for i, chunk in enumerate(call.iter):  # ends by itself (bounded below)
        assert chunk.endswith(b"\n")  # whole events, heartbeats and the opening only
        got += decoder.feed(chunk)
        broker.publish("a", Event(str(i)))
        assert time.monotonic() - started < 5, "the stream did not end"
    lasted = time.monotonic() - started
    assert 0.3 <= lasted
    assert got and [e.data for e in got] == [str(i) for i in range(len(got))]
    assert app.active_streams == 0 and broker.subscriber_count() == 0
    allowed[0] = False
    assert Call(app, "/?channel=a", last_event_id=got[-1].id or "").status == "403 Forbidden"


def test_a_draining_process_ends_its_streams_and_turns_new_ones_away_with_retry(broker: MemoryBroker) -> None:
    """After the gunicorn hook's SIGTERM handling: channel streams end at once, generator streams
    at their next heartbeat, and a new request gets only ``retry:`` (the client comes back elsewhere)."""
    from sseproto.brokers._base import DRAINING
    from sseproto.gunicorn import _shut_down

    app = make(broker, retry=1000)

    def ticks() -> Iterator[object]:
        while True:
            yield None  # idle: heartbeats only

    channel = Call(app, "/?channel=a")
    generated = Call(app.iterable_reply(ticks()))
    channel.chunk()
    generated.chunk()
    try:
        _shut_down()
        assert list(channel.iter) == []  # ended at once
        assert len(list(itertools.islice(generated.iter, 100))) < 100  # ended within a heartbeat (0.05 s)
        late = Call(app, "/?channel=a")
        assert late.status == "200 OK" and list(late.body) == [b": draining\nretry: 1000\n\n"]
        assert app.active_streams == 0 and broker.subscriber_count() == 0
    finally:
        DRAINING.clear()


def test_drain_alone_ends_streams_and_keeps_serving(broker: MemoryBroker) -> None:
    from sseproto.gunicorn import drain

    app = make(broker)
    call = Call(app, "/?channel=a")
    call.chunk()
    assert drain() >= 1
    assert list(call.iter) == []  # ended: the client reconnects
    again = Call(app, "/?channel=a")
    assert again.chunk() == b"retry: 3000\n\n" and broker.subscriber_count() == 1
    again.close()


def test_busy_takes_the_status_as_a_number_too() -> None:
    assert Options(busy=503).busy == "503"  # type: ignore[arg-type]


def test_bad_options_are_refused() -> None:
    for bad in [{"heartbeat": 0}, {"retry": -1}, {"max_channels": 0}, {"max_bytes": 0},
                {"default_channels": ("a b",)}, {"retry_jitter": -1}, {"write_timeout": 0},
                {"busy": "429"}, {"max_duration": 0}]:
        with pytest.raises(ValueError):
            Options(**bad)


def test_a_lagging_stream_ends_so_its_client_replays() -> None:
    broker = MemoryBroker(queue_size=3)
    call = Call(make(broker), "/?channel=a")
    call.chunk()
    for i in range(5):
        broker.publish("a", Event(str(i)))
    assert list(call.iter) == []  # cut off: the stream ends
    assert broker.subscriber_count() == 0
    call.close()


def test_ending_streams_from_the_broker(broker: MemoryBroker) -> None:
    app = make(broker)
    call = Call(app, "/")
    call.chunk()
    e = broker.publish("sse", Event("x"))
    broker.disconnect_all()
    assert b"".join(call.iter) == e.encode()
    call.close()
    assert app.active_streams == 0


def test_close_before_the_first_chunk_still_cleans_up(broker: MemoryBroker) -> None:
    app = make(broker)
    call = Call(app, "/")
    assert broker.subscriber_count() == 1
    call.close()
    assert broker.subscriber_count() == 0 and app.active_streams == 0


def test_close_from_another_thread_ends_a_waiting_stream(broker: MemoryBroker) -> None:
    app = make(broker, heartbeat=30)
    call = Call(app, "/")
    call.chunk()
    timer = threading.Timer(0.05, call.close)
    timer.start()
    assert list(call.iter) == []
    timer.join()
    assert broker.subscriber_count() == 0


def test_iterable_source_items_and_cleanup(broker: MemoryBroker) -> None:
    app = make(broker)
    finished: list[bool] = []

    def gen() -> Iterator[object]:
        try:
            yield "text"
            yield None  # nothing yet: time for a heartbeat
            yield {"n": 1}
            yield Event("e", event="custom", id="7")
            yield from range(100)
        finally:
            finished.append(True)

    reply = app.iterable_reply(gen())
    call = Call(reply)
    assert call.chunk() == b"retry: 3000\n\n"
    assert call.events(3) == [Event("text", id=""), Event('{"n":1}', id=""), Event("e", "custom", "7")]
    call.close()
    assert finished == [True] and app.active_streams == 0


def test_unstarted_generator_is_closed_too(broker: MemoryBroker) -> None:
    app = make(broker)
    started: list[bool] = []

    def gen() -> Iterator[str]:
        started.append(True)
        yield "x"

    Call(app.iterable_reply(gen())).close()
    assert started == [] and app.active_streams == 0


def test_polling_source(broker: MemoryBroker) -> None:
    app = make(broker, heartbeat=10)
    values = iter([None, "a", None, {"b": 2}])
    call = Call(app.polling_reply(lambda: next(values, None), interval=0.01))
    assert call.events(2) == [Event("a", id=""), Event('{"b":2}', id="")]
    call.close()
    with pytest.raises(ValueError):
        app.polling_reply(lambda: None, interval=0)


def test_connection_limit_counts_every_kind_of_stream(broker: MemoryBroker) -> None:
    app = make(broker, max_connections=1)
    first = Call(app.iterable_reply(iter(["x"])))
    assert Call(app.polling_reply(lambda: None, 1)).status.startswith("503")
    assert Call(app, "/").status.startswith("503")
    first.close()
    assert app.active_streams == 0


def test_vanished_client_is_noticed_at_the_next_heartbeat(broker: MemoryBroker) -> None:
    """With the server's socket in the environ, a closed client ends the stream."""
    server_end, client_end = socket.socketpair()
    app = make(broker, heartbeat=0.02)
    environ_extra = {"gunicorn.socket": server_end}
    call = CallWith(app, environ_extra)
    call.chunk()
    client_end.close()
    chunks = list(zip(range(1000), call.iter, strict=False))  # bounded: ends at a heartbeat
    assert len(chunks) < 1000
    assert broker.subscriber_count() == 0 and app.active_streams == 0
    server_end.close()


def test_waitress_disconnect_check_is_used(broker: MemoryBroker) -> None:
    gone = threading.Event()
    app = make(broker, heartbeat=0.02)
    call = CallWith(app, {"waitress.client_disconnected": gone.is_set})
    call.chunk()
    assert call.chunk() == b":\n"
    gone.set()
    assert len(list(zip(range(1000), call.iter, strict=False))) < 1000
    assert broker.subscriber_count() == 0


def CallWith(app: EventStreamApp, extra: dict[str, Any]) -> Call:
    """A Call whose environ carries server extras (set before the app sees it)."""

    def wrapped(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        environ.update(extra)
        return app(environ, start_response)

    return Call(wrapped, "/")


def test_thousand_connect_disconnect_cycles_leave_nothing_behind() -> None:
    # A replay buffer small enough to be full after the warm-up: any growth is the streams'.
    broker = MemoryBroker(replay_size=20)
    app = make(broker)
    def workers() -> int:
        """Threads other than the broker clock (it runs while waits are timed, see below)."""
        return sum(t.name != "sseproto-clock" for t in threading.enumerate())

    threads = workers()

    def cycle(i: int) -> None:
        call = Call(app, f"/?channel=a,c{i % 7}", last_event_id="x" if i % 3 else "")
        call.chunk()
        if i % 2:
            broker.publish("a", Event(str(i)))
            call.chunk()
        call.close()

    for i in range(100):  # warm up caches and the replay buffers
        cycle(i)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i in range(100, 1100):
            cycle(i)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert broker.subscriber_count() == 0 and app.active_streams == 0
    assert workers() == threads
    # The broker clock's thread exits once no wait is timed.
    assert wait_until(lambda: not any(t.name == "sseproto-clock" for t in threading.enumerate()), 5)
    growth = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert growth < 50_000, growth  # a leak of even 50 bytes per cycle would show


def test_event_stream_alone_in_a_plain_wsgi_app() -> None:
    def app(environ: Any, start_response: Any) -> Iterable[bytes]:
        stream = EventStream.from_iterable(["a", "b"], heartbeat=1)
        start_response(stream.status, stream.headers)
        return stream

    call = Call(app, "/")
    assert call.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert call.events(2) == [Event("a", id=""), Event("b", id="")]
    assert list(call.iter) == []


def test_dependency_arrows_point_inward() -> None:
    """The brokers and the WSGI layer load without Flask, Werkzeug, requests or Redis."""
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('flask', 'werkzeug', 'requests', 'urllib3', 'redis', 'gevent'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import sseproto.brokers, sseproto.wsgi\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "ok", proc.stderr


def test_disconnect_probe_works_for_descriptors_past_1023() -> None:
    """A busy server's sockets have high numbers; select() would refuse them and end every stream."""
    import os
    import socket

    from sseproto.wsgi import _disconnect_probe

    a, b = socket.socketpair()
    high = os.dup2(a.fileno(), 1500)
    sock = socket.socket(fileno=high)
    try:
        gone = _disconnect_probe({"gunicorn.socket": sock})
        assert gone is not None
        assert gone() is False
        b.sendall(b"x")  # a pipelined byte is not a disconnect
        assert gone() is False
        b.close()
        sock.recv(1)
        assert gone() is True
    finally:
        sock.close()
        a.close()


# Hardening II: replay is lazy and capped; CORS origins are exact.


def test_a_gap_replay_of_a_long_history_is_read_lazily_in_bounded_memory() -> None:
    """Regression: one request with a bogus Last-Event-ID on 16 channels of 1,000 x 1 KiB
    events encoded the whole ~16 MB replay per connection before sending anything."""
    broker = MemoryBroker()
    channels = [f"c{i}" for i in range(16)]
    for n in range(1000):
        for channel in channels:
            broker.publish(channel, Event(f"{n:04d}" + "x" * 1020))
    app = make(broker, max_replay=None)  # no cap: laziness alone must bound the memory
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        call = Call(app, "/?channel=" + ",".join(channels), last_event_id="bogus")
        first = call.chunk()
        opened = tracemalloc.get_traced_memory()[0] - before
        second = call.chunk()
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert first.startswith(b"retry:") and len(first) <= 64 * 1024 + 2048
    assert opened < 2 * 1024 * 1024, opened
    assert peak < 2 * 1024 * 1024, peak
    decoder = Decoder()
    got = decoder.feed(first) + decoder.feed(second)
    assert got[0].event == GAP_EVENT and got[1].data.startswith("0000")
    # Read to the end: every retained event once, in publish order.
    total = len(got) - 1
    while total < 16_000:
        total += len(decoder.feed(call.chunk()))
    assert total == 16_000
    call.close()


def test_replay_past_max_replay_is_the_gap_event_then_the_newest(broker: MemoryBroker) -> None:
    start = broker.publish("a", Event("start"))
    events = [broker.publish("ab"[i % 2], Event(str(i))) for i in range(10)]
    call = Call(make(broker, max_replay=4), "/?channel=a,b", last_event_id=start.id or "")
    got = call.events(5)
    assert got[0].event == GAP_EVENT
    assert json.loads(got[0].data) == {"lastEventId": start.id, "channels": ["a", "b"]}
    assert [e.data for e in got[1:]] == [e.data for e in events[-4:]]
    call.close()
    exact = Call(make(broker, max_replay=10), "/?channel=a,b", last_event_id=start.id or "")
    assert [e.data for e in exact.events(10)] == [e.data for e in events]  # within the cap: no gap
    exact.close()
    with pytest.raises(ValueError, match="max_replay"):
        Options(max_replay=-1)


def test_replay_chunks_hold_whole_events_up_to_the_chunk_size(broker: MemoryBroker) -> None:
    start = broker.publish("a", Event("start"))
    for i in range(300):
        broker.publish("a", Event(f"{i:03d}" + "y" * 997))
    call = Call(make(broker), "/?channel=a", last_event_id=start.id or "")
    decoder, got = Decoder(), []
    while len(got) < 300:
        chunk = call.chunk()
        assert len(chunk) <= 64 * 1024 and chunk.endswith(b"\n\n")
        got += decoder.feed(chunk)
    assert [e.data[:3] for e in got] == [f"{i:03d}" for i in range(300)]
    call.close()


@pytest.mark.parametrize("origins", ["https://app.example.com", "https://app.example.com, https://b.example"])
def test_a_cors_origin_string_is_matched_exactly_never_as_a_substring(
    broker: MemoryBroker, origins: str
) -> None:
    """Regression: cors_origins="https://app.example.com" with credentials echoed
    https://app.example.co, https://app.exa, h and "" with Allow-Credentials: true."""
    app = make(broker, cors_origins=origins, cors_credentials=True)
    for probe in ["https://app.example.co", "https://app.exa", "h", "", "https://app.example.com.evil"]:
        call = Call(app, "/", origin=probe)
        assert "Access-Control-Allow-Origin" not in call.headers, probe
        assert "Access-Control-Allow-Credentials" not in call.headers, probe
        call.close()
    call = Call(app, "/", origin="https://app.example.com")
    assert call.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert call.headers["Access-Control-Allow-Credentials"] == "true"
    call.close()


def test_bad_cors_origins_are_refused() -> None:
    for bad in ["https://a.example/", "https://a.example/path", "a.example", "*, https://a.example", 42]:
        with pytest.raises(ValueError, match="cors_origins"):
            Options(cors_origins=bad)  # type: ignore[arg-type]
    assert Options(cors_origins=" * ").cors_origins == "*"
    assert Options(cors_origins=["https://a.example", "null"]).cors_origins == ("https://a.example", "null")


def test_subscription_reply_refuses_an_oversized_last_event_id(broker: MemoryBroker) -> None:
    """Regression: views calling subscription_reply (and Flask's sse.stream()) skipped the
    max_last_event_id_length check that the endpoint made."""
    app = make(broker, max_last_event_id_length=8)
    reply = app.subscription_reply(["a"], "x" * 9, {})
    assert reply.status == "400 Bad Request" and b"max_last_event_id_length" in b"".join(reply.body)
    assert app.active_streams == 0 and broker.subscriber_count() == 0
