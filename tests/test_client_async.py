"""What only the httpx client has: cancellation, aclose() from another task, trio, a caller's
AsyncClient, async hooks, transports without a socket, aiter_events. Every test runs on
asyncio and on trio (anyio's pytest plugin), against the scripted server of the parity suite.
"""

from __future__ import annotations

import gzip
import http.client
import json
import random
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import pytest
from scripted_server import Pause, Reply, Step, sse
from test_client_parity import FAST, LoggingServer

from sseproto import Decoder, Event
from sseproto.client import (
    CLOSED,
    OPEN,
    AsyncEventSource,
    ContentTypeError,
    HTTPStatusError,
    _async,
    aiter_events,
)
from sseproto.client._chunked import Dechunker

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]
END = Reply(204, {}, ())
# A stream that stays open for 10 s, writing a heartbeat every 50 ms: the server's next write
# fails soon after the client closes the connection, so the server sees the close.
HEARTBEATS: list[Step] = [b"id: 1\ndata: a\n\n"] + [s for _ in range(200) for s in (Pause(0.05), b":\n")]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def running() -> Iterator[LoggingServer]:
    with LoggingServer() as server:
        yield server


@pytest.fixture
def server(running: LoggingServer) -> LoggingServer:
    running.reset()
    return running


async def ended(server: LoggingServer, path: str, seconds: float = 3.0) -> bool:
    """Whether the server's reply on ``path`` ended (the client went away) within ``seconds``."""
    with anyio.move_on_after(seconds):
        while path not in server.ended:
            await anyio.sleep(0.01)
        return True
    return False


async def first_event(source: AsyncEventSource, into: list[Event]) -> None:
    async for event in source:
        into.append(event)


async def wait_for(check: Any, seconds: float = 5.0) -> None:
    with anyio.fail_after(seconds):
        while not check():
            await anyio.sleep(0.005)


# -- ending it: cancellation and aclose() ------------------------------------------------


async def test_cancelling_the_task_ends_a_blocked_read_and_closes_the_connection(
    server: LoggingServer,
) -> None:
    url = server.script("/s", Reply(body=HEARTBEATS))
    source = AsyncEventSource(url, **FAST)
    got: list[Event] = []
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(first_event, source, got)
        await wait_for(lambda: got)
        await anyio.sleep(0.02)  # the reader is back in a read
        cancelled_at = time.monotonic()
        tasks.cancel_scope.cancel()
    assert time.monotonic() - cancelled_at < 0.5  # at once, not at the next heartbeat's end
    assert [e.data for e in got] == ["a"]
    assert source.ready_state == CLOSED
    assert await ended(server, "/s")  # the connection was closed: the heartbeats stopped
    assert len(server.seen("/s")) == 1


@pytest.mark.parametrize("where", ["read", "wait", "connect"])
async def test_aclose_from_another_task_ends_the_source_at_once(server: LoggingServer, where: str) -> None:
    """During a read that waits for bytes, during the wait between attempts (retry: 10 s) and
    while waiting for response headers that never come."""
    with socket.socket() as mute:  # accepts connections (the backlog) and never answers
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        url = {
            "read": server.script("/read", Reply(body=[b"data: a\n\n", Pause(10)])),
            "wait": server.script("/wait", Reply(body=sse("retry: 10000\ndata: a\n\n"))),
            "connect": f"http://127.0.0.1:{mute.getsockname()[1]}/",
        }[where]
        source = AsyncEventSource(url, **FAST)
        got: list[Event] = []
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(first_event, source, got)
            if where == "connect":
                await anyio.sleep(0.2)
            else:
                await wait_for(lambda: got and source.ready_state == (OPEN if where == "read" else 0))
            closed_at = time.monotonic()
            await source.aclose()
        assert time.monotonic() - closed_at < 0.5
    assert source.ready_state == CLOSED
    assert [e.data for e in got] == ([] if where == "connect" else ["a"])


async def test_aclose_while_the_reader_holds_an_event_closes_the_connection_at_once(
    server: LoggingServer,
) -> None:
    """The reader is busy with an event (not in a read): the server still sees the close at
    once, and the reader's next step ends the iteration quietly."""
    url = server.script("/s", Reply(body=HEARTBEATS))
    source = AsyncEventSource(url, **FAST)
    holding, release = anyio.Event(), anyio.Event()
    got: list[Event] = []

    async def reader() -> None:
        async for event in source:
            got.append(event)
            holding.set()
            await release.wait()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(reader)
        await holding.wait()
        await source.aclose()
        assert await ended(server, "/s", 2.0)  # before the reader moved on
        release.set()
    assert [e.data for e in got] == ["a"] and source.ready_state == CLOSED


async def test_aclose_inside_the_loop_ends_it(server: LoggingServer) -> None:
    url = server.script("/s", Reply(body=HEARTBEATS))
    got = []
    async with AsyncEventSource(url, **FAST) as source:
        async for event in source:
            got.append(event.data)
            await source.aclose()
        assert source.ready_state == CLOSED and source.last_event_id == "1"
    assert got == ["a"]
    assert await ended(server, "/s")


async def test_a_source_closed_before_iterating_yields_nothing(server: LoggingServer) -> None:
    url = server.script("/s", Reply(body=sse("data: a\n\n")))
    source = AsyncEventSource(url, **FAST)
    await source.aclose()
    assert [e async for e in source] == []
    assert source.ready_state == CLOSED and server.seen("/s") == []


# -- a caller's client, async hooks, timeouts ----------------------------------------------


async def test_a_given_client_is_used_and_left_open(server: LoggingServer) -> None:
    url = server.script("/s", Reply(body=sse("data: a\n\n")), Reply(body=sse("data: b\n\n")), END)
    async with httpx.AsyncClient(headers={"X-From-Client": "yes"}) as client:
        async with AsyncEventSource(url, client=client, **FAST) as source:
            assert [e.data async for e in source] == ["a", "b"]
        assert not client.is_closed
        assert (await client.get(url)).status_code == 204  # still usable
    assert [r.headers.get("x-from-client") for r in server.seen("/s")] == ["yes"] * 4


async def test_async_headers_and_hooks_are_awaited(server: LoggingServer) -> None:
    url = server.script("/s", Reply(body=[b"id: 1\ndata: a\n\n", b"data: cu"], framing="close"),
                        Reply(body=sse("data: b\n\n")), END)
    calls = iter(range(10))
    seen: list[str] = []

    async def headers() -> dict[str, str]:
        await anyio.sleep(0)
        return {"Authorization": f"Bearer {next(calls)}"}

    async def on_open(response: httpx.Response) -> None:
        await anyio.sleep(0)
        seen.append(f"open {response.request.headers.get('last-event-id')}")

    async with AsyncEventSource(url, headers=headers, on_open=on_open, **FAST) as source:
        assert [e.data async for e in source] == ["a", "b"]
    assert seen == ["open None", "open 1"]
    assert [r.headers["authorization"] for r in server.seen("/s")] == ["Bearer 0", "Bearer 1", "Bearer 2"]


async def test_an_async_on_error_is_awaited_for_each_failure(server: LoggingServer) -> None:
    busy = Reply(503, {"Content-Type": "text/plain"}, [b"busy"], "length")
    url = server.script("/s", busy, busy, Reply(body=sse("data: a\n\n")), END)
    errors: list[int] = []

    async def on_error(exc: Exception) -> None:
        await anyio.sleep(0)
        assert isinstance(exc, HTTPStatusError)
        errors.append(exc.response.status_code)

    async with AsyncEventSource(url, retry_statuses=(503,), on_error=on_error, **FAST) as source:
        assert [e.data async for e in source] == ["a"]
    assert errors == [503, 503]


@pytest.mark.parametrize("timeout", [0.3, (2.0, 0.3), httpx.Timeout(2.0, read=0.3)],
                         ids=["number", "pair", "httpx"])
async def test_every_form_of_timeout_detects_a_silent_server(server: LoggingServer, timeout: Any) -> None:
    url = server.script("/s", Reply(body=[b"id: 1\ndata: a\n\n", Pause(30)]), Reply(body=sse("data: b\n\n")),
                        END)
    errors: list[Exception] = []
    async with AsyncEventSource(url, timeout=timeout, reconnect_delay=0.01, on_error=errors.append) as source:
        assert [e.data async for e in source] == ["a", "b"]
    assert [type(e) for e in errors] == [httpx.ReadTimeout]
    assert [r.headers.get("last-event-id") for r in server.seen("/s")] == [None, "1", "1"]


async def test_a_huge_timeout_is_clamped(server: LoggingServer) -> None:
    url = server.script("/s", Reply(body=sse("data: a\n\n")), END)
    async with AsyncEventSource(url, timeout=(2.0, 1e12), reconnect_delay=0.01) as source:
        assert [e.data async for e in source] == ["a"]


async def test_a_tls_failure_is_not_retried(server: LoggingServer) -> None:
    """https:// to a plain HTTP server: the handshake fails; that is no network drop to retry
    (as requests' SSLError for the sync client)."""
    url = server.url("/s").replace("http://", "https://")
    errors: list[Exception] = []
    source = AsyncEventSource(url, on_error=errors.append, **FAST)
    with pytest.raises(httpx.ConnectError) as info:
        async for _ in source:
            pass
    cause: BaseException | None = info.value
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    assert isinstance(cause, ssl.SSLError)
    assert errors == [] and source.ready_state == CLOSED


# -- a transport without a socket: cancel scopes cut its reads -------------------------------


class _Held(httpx.AsyncByteStream):
    """A body that sends its bytes, then nothing, until closed (a held stream without a socket)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data
        await anyio.sleep_forever()

    async def aclose(self) -> None:
        self.closed = True


async def test_restart_and_aclose_cut_reads_on_a_transport_without_a_socket() -> None:
    bodies: list[_Held] = []
    sent: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers.get("last-event-id"))
        bodies.append(_Held(f"id: {len(bodies) + 1}\ndata: {len(bodies)}\n\n".encode()))
        return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, stream=bodies[-1])

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        source = AsyncEventSource("http://test/s", client=client, **{**FAST, "reconnect_delay": 5.0})
        got: list[Event] = []
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(first_event, source, got)
            await wait_for(lambda: len(got) == 1)
            await anyio.sleep(0.02)  # blocked in the read
            source.restart()  # from another task
            await wait_for(lambda: len(got) == 2, 1.0)  # at once, not after reconnect_delay
            await anyio.sleep(0.02)
            await source.aclose()
    assert [e.data for e in got] == ["0", "1"]
    assert sent == [None, "1"]
    assert all(b.closed for b in bodies)
    assert source.ready_state == CLOSED


# -- aiter_events: a response the caller already has ---------------------------------------


async def test_aiter_events_decodes_a_response_the_caller_has(server: LoggingServer) -> None:
    url = server.script("/s", Reply(body=sse("id: 1\ndata: a\n\n", "event: x\ndata: b\n\n", "data: cut")))
    async with httpx.AsyncClient() as client:
        async with client.stream("GET", url) as response:
            assert [(e.event, e.data, e.id) async for e in aiter_events(response)] == [
                ("message", "a", "1"), ("x", "b", "1")]
            assert response.is_closed
        decoder = Decoder()
        response = await client.get(url)  # not streamed: the body is already read
        assert [e.data async for e in aiter_events(response, decoder=decoder)] == ["a", "b"]
        assert decoder.last_event_id == "1"


async def test_aiter_events_checks_the_response(server: LoggingServer) -> None:
    server.script("/500", Reply(500, {"Content-Type": "text/plain"}, [b"no"], "length"))
    server.script("/json", Reply(200, {"Content-Type": "application/json"}, [b"{}"], "length"))
    server.script("/204", END)
    async with httpx.AsyncClient() as client:
        async with client.stream("GET", server.url("/500")) as response:
            with pytest.raises(HTTPStatusError) as info:
                [e async for e in aiter_events(response)]
            assert info.value.response.text == "no"
        async with client.stream("GET", server.url("/json")) as response:
            with pytest.raises(ContentTypeError):
                [e async for e in aiter_events(response)]
        async with client.stream("GET", server.url("/204")) as response:
            assert [e async for e in aiter_events(response)] == []


async def test_aiter_events_keeps_comments_in_stream_order(server: LoggingServer) -> None:
    url = server.script("/s", Reply(body=[b"data: 1\n\n: a\ndata: 2\n\n", b": b\n", b"data: 3\n\n"]))
    seen: list[str] = []
    decoder = Decoder(on_comment=lambda text: seen.append(f"comment {text}"))
    async with httpx.AsyncClient() as client, client.stream("GET", url) as response:
        async for event in aiter_events(response, decoder=decoder):
            seen.append(event.data)
    assert seen == ["1", "comment a", "2", "comment b", "3"]


async def test_an_llm_post_stream_reads_to_done(server: LoggingServer) -> None:
    """The README's LLM example: a POST with a JSON body, tokens then [DONE], one request."""
    tokens = ["Hel", "lo"]
    url = server.script("/v1/chat", Reply(body=sse(*[f"data: {json.dumps({'t': t})}\n\n" for t in tokens],
                                                   "data: [DONE]\n\n")))
    out = []
    async with AsyncEventSource(url, method="POST", json={"prompt": "hi"}) as source:
        async for event in source:
            if event.data == "[DONE]":
                break
            out.append(json.loads(event.data)["t"])
    assert out == tokens
    [request] = server.log
    assert (request.method, json.loads(request.body)) == ("POST", {"prompt": "hi"})


def test_without_httpx_the_async_client_names_the_extra_to_install() -> None:
    """sseproto.client imports without httpx; AsyncEventSource then says what to install."""
    script = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("httpx", "anyio"):
            raise ModuleNotFoundError("blocked: " + name, name=name.split(".")[0])
sys.meta_path.insert(0, Block())
import sseproto.client
try:
    from sseproto.client import AsyncEventSource
except ImportError as exc:
    print("refused:", exc)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "refused:" in proc.stdout and "pip install 'sseproto[async]'" in proc.stdout


# -- the body read below h11: httpx's own HTTP/1.1 connection, its network stream ------------


class RawServer:
    """A keep-alive HTTP/1.1 server answering each request with the next scripted reply (the last
    one repeats), written byte for byte (head and body as given, ``float`` steps pausing,
    ``"close"`` closing the connection): framing errors, chunks cut across writes and compressed
    bodies are sent as they are. Records each connection's requests and whether the client
    closed it."""

    def __init__(self, *replies: list[bytes | float | str]) -> None:
        self.replies = list(replies)
        self.served = 0
        self._lock = threading.Lock()
        self.connections: list[dict[str, Any]] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/s"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        record: dict[str, Any] = {"requests": 0, "closed": False}
        self.connections.append(record)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn:
            try:
                while True:
                    request = b""
                    while b"\r\n\r\n" not in request:
                        data = conn.recv(4096)
                        if not data:
                            record["closed"] = True
                            return
                        request += data
                    with self._lock:
                        reply = self.replies[min(self.served, len(self.replies) - 1)]
                        self.served += 1
                    record["requests"] += 1
                    for step in reply:
                        if isinstance(step, float):
                            time.sleep(step)
                        elif isinstance(step, bytes):
                            conn.sendall(step)
                        else:
                            return
            except OSError:
                record["closed"] = True

    def close(self) -> None:
        self._listener.close()


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@pytest.fixture
def raw_bodies(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """For each body read: whether it was read below h11 (True) or through httpx (False)."""
    seen: list[bool] = []
    real = _async._raw_body

    def spy(response: httpx.Response) -> Any:
        found = real(response)
        seen.append(found is not None)
        return found

    monkeypatch.setattr(_async, "_raw_body", spy)
    return seen


async def test_a_chunked_body_read_below_h11_gives_exactly_its_events(raw_bodies: list[bool]) -> None:
    """Many one-event chunks in one write (with the head), a chunk cut inside its size line, its
    data and its CR LF across writes, an extension, CR LF line ends in the data, the last chunk
    with a trailer: the events are exactly those of the stream."""
    events = [b"id: %d\ndata: event %d\n\n" % (i, i) for i in range(50)]
    wire = b"".join(map(chunk, events[:40]))
    cut = chunk(b"data: cut\r\ndata: across\r\n\r\n")
    server = RawServer([
        CHUNKED_HEAD + wire, 0.05,
        cut[:1], 0.05, cut[1:8], 0.05, cut[8:-1], 0.05, cut[-1:], 0.05,
        b"%x;ext=1\r\n%s\r\n" % (len(events[40]), events[40]), 0.05,
        b"".join(map(chunk, events[41:])), b"0\r\nTrailer: t\r\n\r\n", 5.0,
    ])
    try:
        async with AsyncEventSource(server.url, reconnect=False, **FAST) as source:
            got = [(e.id, e.data) async for e in source]
    finally:
        server.close()
    expected = [(str(i), f"event {i}") for i in range(40)] + [("39", "cut\nacross")]
    expected += [(str(i), f"event {i}") for i in range(40, 50)]
    assert got == expected
    assert raw_bodies == [True]  # and it ended at the last chunk: the server holds the connection


async def test_aiter_events_reads_a_close_delimited_body_below_h11(raw_bodies: list[bool]) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
    server = RawServer([head + b"data: a\n\nda", 0.05, b"ta: b\n\ndata: cut", "close"])
    try:
        async with httpx.AsyncClient() as client, client.stream("GET", server.url) as response:
            assert [e.data async for e in aiter_events(response)] == ["a", "b"]
    finally:
        server.close()
    assert raw_bodies == [True]


async def test_a_gzip_body_is_read_through_httpx(raw_bodies: list[bool]) -> None:
    """Content-Encoding: httpx undoes it (and the chunks): never read below h11."""
    body = gzip.compress(b"id: 1\ndata: a\n\ndata: b\n\n")
    head = CHUNKED_HEAD.replace(b"\r\n\r\n", b"\r\nContent-Encoding: gzip\r\n\r\n")
    server = RawServer([head + chunk(body[:10]), 0.05, chunk(body[10:]) + b"0\r\n\r\n"])
    try:
        async with AsyncEventSource(server.url, reconnect=False, **FAST) as source:
            assert [e.data async for e in source] == ["a", "b"]
    finally:
        server.close()
    assert raw_bodies == [False]


async def test_a_body_read_below_h11_closes_its_connection_instead_of_pooling_it(
    raw_bodies: list[bool],
) -> None:
    """h11 never saw that body end: the connection is closed, never back in the pool, and the
    next request opens another one; a body read through httpx leaves its connection for the
    next request (what the pool would otherwise do)."""
    stream = CHUNKED_HEAD + chunk(b"id: 1\ndata: a\n\n") + b"0\r\n\r\n"
    server = RawServer([stream])
    try:
        async with httpx.AsyncClient() as client:
            await (await client.get(server.url)).aclose()  # read by httpx: the connection is pooled
            async with client.stream("GET", server.url) as response:
                assert [e.data async for e in aiter_events(response)] == ["a"]
            assert client._transport._pool.connections == []  # type: ignore[attr-defined]
            async with AsyncEventSource(server.url, client=client, reconnect=False, **FAST) as source:
                assert [e.data async for e in source] == ["a"]
            assert client._transport._pool.connections == []  # type: ignore[attr-defined]
            await wait_for(lambda: len(server.connections) == 2 and server.connections[1]["closed"])
    finally:
        server.close()
    assert [(c["requests"], c["closed"]) for c in server.connections] == [(2, True), (1, True)]
    assert raw_bodies == [True, True]


async def test_a_malformed_chunk_read_below_h11_is_a_drop_and_the_stream_resumes(
    raw_bodies: list[bool],
) -> None:
    bad = CHUNKED_HEAD + chunk(b"id: 1\ndata: a\n\n") + b"zz\r\nnonsense\r\n"
    good = CHUNKED_HEAD + chunk(b"data: b\n\n") + b"0\r\n\r\n"
    server = RawServer([bad, 5.0], [good, 5.0], [b"HTTP/1.1 204 No Content\r\n\r\n"])
    errors: list[Exception] = []
    try:
        async with AsyncEventSource(server.url, on_error=errors.append, **FAST) as source:
            assert [e.data async for e in source] == ["a", "b"]
    finally:
        server.close()
    assert [type(e) for e in errors] == [httpx.RemoteProtocolError]
    assert raw_bodies[:2] == [True, True]


async def test_a_body_begun_through_httpx_is_not_read_below_h11(server: LoggingServer) -> None:
    """Once h11 has parsed part of the body, its state is no longer the raw stream's start."""
    url = server.script("/s", Reply(body=[b"data: a\n\n", Pause(0.05), b"data: b\n\n"]))
    async with httpx.AsyncClient() as client, client.stream("GET", url) as response:
        assert _async._raw_body(response) is not None
        chunks = response.aiter_bytes()
        assert await anext(chunks) == b"data: a\n\n"
        assert _async._raw_body(response) is None
        await chunks.aclose()  # type: ignore[attr-defined]


def test_the_dechunker_takes_runs_of_whole_chunks_as_the_general_loop_does() -> None:
    """The run of whole chunks taken in one step (split on CR LF, lengths checked) against a
    byte-by-byte feed, which takes the general loop: CR LF in the data, extensions, a wrong
    size, a missing CR LF, the last chunk mid-run, random cuts."""
    rng = random.Random(11)

    def outcome(wire: bytes, cuts: list[int]) -> tuple[Any, ...]:
        dechunker, out = Dechunker(), []
        try:
            for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True):
                out.append(dechunker.feed(wire[a:b]))
        except http.client.HTTPException as exc:
            return ("error", type(exc))
        return (b"".join(out), dechunker.done)

    for _ in range(3000):
        pieces = []
        for _ in range(rng.randrange(0, 25)):
            data = bytes(rng.choice(b"ab\r\n:0") for _ in range(rng.randrange(1, 16)))
            size = b"%x" % len(data)
            roll = rng.random()
            if roll < 0.02:
                size = b"%x" % (len(data) + 1)
            elif roll < 0.05:
                size += b";x=y"
            pieces.append(size + b"\r\n" + data + (b"XY" if rng.random() < 0.02 else b"\r\n"))
        wire = b"".join(pieces) + rng.choice([b"0\r\n\r\n", b"0\r\nT: x\r\n\r\n", b"", b"5\r\nab"])
        if len(wire) < 2:
            continue
        cuts = sorted(rng.sample(range(1, len(wire)), min(len(wire) - 1, rng.randrange(0, 5))))
        assert outcome(wire, cuts) == outcome(wire, list(range(1, len(wire)))), (wire, cuts)
