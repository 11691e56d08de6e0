"""Both clients (EventSource on requests, AsyncEventSource on httpx) against real servers.

Every test runs once per transport (``sync``; ``asyncio`` and ``trio`` for the async
client) against server processes started and stopped by fixtures: our Flask app under
gunicorn, killed mid-stream and started again on the same port and Redis (the client
resumes without loss); sse-starlette on uvicorn (a peer's server: ids, types, multi-line
data in three line-end styles, comments and pings, ends and reconnections, restart(),
close and cancellation seen by the server); and an OpenAI-style POST API on gunicorn
(tokens then ``[DONE]`` without ids: one request; cut without ids: an error; with ids and
cut mid-way: sent again with the same body and ``Last-Event-ID``). What the servers saw
is checked on their side (they record every request).
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from conftest import PYTHON, free_port, missing, wait_for_port, wait_until
from servers import TESTS, Server, spawn, stop

from sseproto import Event
from sseproto.client import CLOSED, OPEN

pytestmark = pytest.mark.timeout(60)
TRANSPORTS = ("sync", "asyncio", "trio")
FAST = {"timeout": (5, 10), "reconnect_delay": 0.1, "max_backoff": 0.5}


def need(*modules: str) -> None:
    """Fail in CI (skip on a developer's machine) when a package a server or transport needs is missing."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            missing(f"the {module} package")


class Reader:
    """An event source of ``transport`` read to its end by a thread of its own (``sync``:
    EventSource; ``asyncio``, ``trio``: AsyncEventSource in that loop, run by the thread),
    so that a test can stop and start servers meanwhile.

    ``stream`` holds the events and comments in the order they were handed over,
    ``sent_ids`` the ``Last-Event-ID`` each opened connection carried (seen in ``on_open``),
    ``errors`` what ``on_error`` got, ``failure`` what ended the iteration with an error.
    """

    def __init__(self, transport: str, url: str, **options: Any) -> None:
        self.transport = transport
        self.stream: list[Event | str] = []
        self.sent_ids: list[str | None] = []
        self.errors: list[Exception] = []
        self.failure: BaseException | None = None
        self.ended = threading.Event()
        self.source: Any = None
        self._token: Any = None
        self._scope: Any = None  # the cancel scope around the async reading
        self._started = threading.Event()
        options = {"on_open": self._on_open, "on_error": self.errors.append, **options}
        if options.pop("comments", False):
            options["on_comment"] = self.stream.append
        target = self._run_sync if transport == "sync" else self._run_async
        self._thread = threading.Thread(target=target, args=(url, options), daemon=True)
        self._thread.start()
        assert self._started.wait(10), "the event source was not made"

    @property
    def events(self) -> list[Event]:
        return [e for e in self.stream if isinstance(e, Event)]

    def _on_open(self, response: Any) -> None:
        value = response.request.headers.get("Last-Event-ID")
        self.sent_ids.append(value.decode() if isinstance(value, bytes) else value)

    def _run_sync(self, url: str, options: dict[str, Any]) -> None:
        from sseproto.client import EventSource

        try:
            with EventSource(url, **options) as source:
                self.source = source
                self._started.set()
                for event in source:
                    self.stream.append(event)
        except BaseException as exc:
            self.failure = exc
        finally:
            self._started.set()
            self.ended.set()

    def _run_async(self, url: str, options: dict[str, Any]) -> None:
        import anyio
        import anyio.lowlevel

        async def main() -> None:
            from sseproto.client import AsyncEventSource

            self._token = anyio.lowlevel.current_token()
            with anyio.CancelScope() as self._scope:
                async with AsyncEventSource(url, **options) as source:
                    self.source = source
                    self._started.set()
                    async for event in source:
                        self.stream.append(event)

        try:
            anyio.run(main, backend=self.transport)
        except BaseException as exc:
            self.failure = exc
        finally:
            self._started.set()
            self.ended.set()

    def wait(self, count: int, seconds: float = 10.0) -> list[Event]:
        """The events, once there are ``count`` (bounded; fewer if the iteration ended)."""
        wait_until(lambda: len(self.events) >= count or self.ended.is_set(), seconds)
        return self.events

    def is_open(self) -> bool:
        return self.source is not None and self.source.ready_state == OPEN

    def restart(self) -> None:
        """The source's restart(), called from this (another) thread (sync) or in a task of its loop."""
        if self.transport == "sync":
            self.source.restart()
            return
        import anyio.from_thread

        async def restart() -> None:
            result = self.source.restart()
            if inspect.isawaitable(result):
                await result

        anyio.from_thread.run(restart, token=self._token)

    def cancel(self) -> None:
        """Cancel the task that iterates (async only), from this thread."""
        import anyio.from_thread

        anyio.from_thread.run_sync(self._scope.cancel, token=self._token)

    def join(self, seconds: float = 10.0) -> None:
        """Wait for the iteration to end by itself (bounded)."""
        assert self.ended.wait(seconds), "the iteration did not end"
        self._thread.join(5)

    def close(self) -> None:
        """Close the source from this thread and wait until its reader is done."""
        if not self.ended.is_set() and self.source is not None:
            if self.transport == "sync":
                self.source.close()
            else:
                import anyio.from_thread

                try:
                    anyio.from_thread.run(self.source.aclose, token=self._token)
                except RuntimeError:
                    pass  # the loop has ended meanwhile
        self._thread.join(10)
        assert not self._thread.is_alive(), "the reader did not stop"


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """``sync`` (EventSource), ``asyncio`` or ``trio`` (AsyncEventSource on that loop)."""
    if request.param != "sync":
        need("httpx", "anyio", request.param)
    return str(request.param)


@pytest.fixture
def read(transport: str) -> Iterator[Any]:
    """``read(url, **options)``: a started :class:`Reader` of the test's transport, closed afterwards."""
    readers: list[Reader] = []

    def start(url: str, **options: Any) -> Reader:
        reader = Reader(transport, url, **{**FAST, **options})
        readers.append(reader)
        return reader

    yield start
    for reader in readers:
        reader.close()


def key() -> str:
    return uuid.uuid4().hex[:10]


# -- our Flask server under gunicorn, killed and started again -----------------------------

def kill(server: Server) -> None:
    """SIGKILL to the server's whole process group: no graceful end, streams cut mid-way."""
    try:
        os.killpg(server.proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    server.proc.wait(5)


@pytest.mark.redis
@pytest.mark.parametrize("kind", ["gunicorn-gthread", "gunicorn-gevent"])
def test_resumes_across_a_server_restart_without_loss(read: Any, redis_url: str, kind: str) -> None:
    from sseproto.brokers.redis import RedisBroker

    channel = f"restart-{key()}"
    settings = {"SSE_HEARTBEAT": "0.3"}
    servers = [spawn(kind, redis_url, threads=16, connections=100, **settings)]
    broker = RedisBroker(redis_url)
    reader = read(f"{servers[0].url}/sse/stream?channel={channel}")
    try:
        port = servers[0].port
        assert servers[0].wait_for("subscribers", 1, channel) == 1
        for i in range(5):
            servers[0].publish(f"before {i}", channel).raise_for_status()
        assert [e.data for e in reader.wait(5)] == [f"before {i}" for i in range(5)]
        last_before = reader.events[-1].id

        kill(servers[0])
        # While no server runs, the client keeps trying (each refused attempt reaches
        # on_error) and events are stored in Redis by another publisher.
        assert wait_until(lambda: len(reader.errors) >= 2, 10), reader.errors
        for i in range(5):
            broker.publish(channel, Event(f"down {i}"))

        servers.append(spawn(kind, redis_url, port=port, threads=16, connections=100, **settings))
        for i in range(5):
            servers[1].publish(f"after {i}", channel).raise_for_status()
        expected = [f"{when} {i}" for when in ("before", "down", "after") for i in range(5)]
        events = reader.wait(15)
        assert [e.data for e in events] == expected  # every event once, in order
        assert len({e.id for e in events}) == 15
        # One connection to each process; the second resumed from the last event of the first.
        assert reader.sent_ids == [None, last_before]
        assert reader.failure is None
    finally:
        reader.close()  # first: a server with no stream open stops without its graceful wait
        broker.close()
        stop(*servers)


# -- sse-starlette on uvicorn ----------------------------------------------------------------

def spawn_uvicorn(app: str) -> Server:
    """``uvicorn app:app`` on a free port in its own process group (tests/servers.py's way)."""
    need("uvicorn", "sse_starlette")
    port = free_port()
    cmd = [PYTHON, "-m", "uvicorn", f"{app}:app", "--host", "127.0.0.1", "--port", str(port),
           "--log-level", "warning", "--no-access-log", "--timeout-graceful-shutdown", "1"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}
    proc = subprocess.Popen(cmd, cwd=TESTS, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    server = Server("uvicorn", port, proc)
    try:
        wait_for_port(port, proc)
    except BaseException:
        stop(server)
        raise
    return server


@pytest.fixture(scope="module")
def starlette() -> Iterator[Server]:
    server = spawn_uvicorn("apps.starlette_app")
    try:
        yield server
    finally:
        stop(server)


def seen(server: Server, k: str) -> list[dict[str, Any]]:
    """The requests the server recorded for ``k``."""
    r = requests.get(f"{server.url}/log", params={"k": k}, timeout=10)
    r.raise_for_status()
    return list(r.json())


@pytest.mark.parametrize("sep", ["crlf", "lf", "cr"])
def test_reads_sse_starlette_exactly_and_resumes_with_last_event_id(
    read: Any, starlette: Server, sep: str
) -> None:
    k = key()
    reader = read(f"{starlette.url}/stream?k={k}&per=3&sep={sep}", comments=True)
    reader.join(15)  # 3 events, the end, 3 more, the end, 204: done
    assert reader.failure is None
    assert [(e.id, e.event, e.data) for e in reader.events] == [
        ("1", "message", "first"),
        ("2", "update", "line one\nline two\nline three"),
        ("3", "update", "ünïcødé ✓ 🚀"),
        ("4", "message", '{"n": 4}'),
        ("5", "message", ""),
        ("6", "done", "last"),
    ]
    # Comments in stream order: the app's own, then sse-starlette's pings, then event 3.
    shape = ["ping" if isinstance(s, str) and s.startswith("ping - ") else s if isinstance(s, str) else s.id
             for s in reader.stream]
    first_ping, third = shape.index("ping"), shape.index("3")
    assert shape[:first_ping] == ["1", "2", "between two events"]
    assert set(shape[first_ping:third]) == {"ping"}
    assert [s for s in shape[third:] if s != "ping"] == ["3", "4", "5", "6"]
    # Server side: the reconnections carried the id of the last event read, then 204 ended it.
    requests_seen = seen(starlette, k)
    assert [r["last_event_id"] for r in requests_seen] == [None, "3", "6"]
    assert {r["accept"] for r in requests_seen} == {"text/event-stream"}
    assert reader.sent_ids == [None, "3"]


def test_restart_reconnects_to_sse_starlette_at_once_from_the_last_id(read: Any, starlette: Server) -> None:
    k = key()
    reader = read(f"{starlette.url}/ticks?k={k}", reconnect_delay=30.0)
    reader.wait(5)
    reader.restart()  # from this thread (sync) or another task than the reading one (async)
    assert wait_until(lambda: len(reader.sent_ids) == 2, 5), reader.sent_ids
    events = reader.wait(len(reader.events) + 5)
    numbers = [int(e.data.split()[1]) for e in events]
    assert numbers == list(range(len(numbers)))  # nothing lost, nothing twice
    requests_seen = seen(starlette, k)
    assert len(requests_seen) == 2
    resumed_from = requests_seen[1]["last_event_id"]
    assert resumed_from is not None and reader.sent_ids == [None, resumed_from]
    assert reader.errors == []  # a restart asked for is no error


def test_close_ends_the_connection_at_once(read: Any, starlette: Server) -> None:
    k = key()
    reader = read(f"{starlette.url}/ticks?k={k}")
    reader.wait(3)
    started = time.monotonic()
    reader.close()  # close() from another thread; aclose() in another task than the reading one
    assert time.monotonic() - started < 1.0
    assert reader.failure is None and reader.source.ready_state == CLOSED
    # The server sees the client go: sse-starlette ends the stream's generator.
    assert wait_until(lambda: seen(starlette, k)[0]["closed"], 3)
    assert len(seen(starlette, k)) == 1


@pytest.mark.parametrize("transport", ["asyncio", "trio"], indirect=True)
def test_cancelling_the_reading_task_ends_it_and_the_connection(read: Any, starlette: Server) -> None:
    k = key()
    reader = read(f"{starlette.url}/ticks?k={k}")
    reader.wait(3)
    reader.cancel()
    reader.join(1.0)
    assert reader.failure is None and reader.source.ready_state == CLOSED
    assert wait_until(lambda: seen(starlette, k)[0]["closed"], 3)
    assert len(seen(starlette, k)) == 1


# -- an OpenAI-style POST API on gunicorn ----------------------------------------------------

@pytest.fixture(scope="module")
def llm() -> Iterator[Server]:
    server = spawn("gunicorn-gthread", app="apps.llm_app", threads=16)
    try:
        yield server
    finally:
        stop(server)


PROMPT = "the quick brown fox jumps over the lazy dog"
TOKENS = PROMPT.split()


def tokens(events: list[Event]) -> list[str]:
    import json

    return [e.data if e.data == "[DONE]" else json.loads(e.data)["token"] for e in events]


def test_an_llm_stream_is_one_request_and_ends_after_done(read: Any, llm: Server) -> None:
    k = key()
    body = {"prompt": PROMPT, "k": k}
    reader = read(f"{llm.url}/v1/chat/completions", method="POST", json=body)
    reader.join(10)  # [DONE], then the response ends: so does the iteration
    assert reader.failure is None and reader.errors == []
    assert tokens(reader.events) == [*TOKENS, "[DONE]"]
    assert not any(e.id for e in reader.events)  # no ids: "" is the last event id throughout
    requests_seen = seen(llm, k)
    assert len(requests_seen) == 1  # exactly one request: an answer without ids is not asked for twice
    assert requests_seen[0]["method"] == "POST"
    assert requests_seen[0]["content_type"] == "application/json"
    assert requests_seen[0]["body"] == body


def test_a_cut_llm_stream_without_ids_is_an_error_and_not_sent_again(read: Any, llm: Server) -> None:
    k = key()
    reader = read(f"{llm.url}/v1/chat/completions", method="POST", json={"prompt": PROMPT, "k": k, "cut": 3})
    reader.join(10)
    assert tokens(reader.events) == TOKENS[:3]  # the half event is never delivered
    # What was cut is not silently lost: the drop reaches on_error and ends the iteration.
    assert reader.failure is not None
    assert reader.errors == [reader.failure]
    assert len(seen(llm, k)) == 1


def test_a_cut_post_with_ids_is_sent_again_with_its_body_and_resumes(
    read: Any, llm: Server, transport: str
) -> None:
    k = key()
    body = {"prompt": PROMPT, "k": k, "cut": 4}
    attempts = iter(range(100))

    def fresh() -> dict[str, str]:
        return {"Authorization": f"Bearer token-{next(attempts)}"}

    async def afresh() -> dict[str, str]:  # AsyncEventSource also takes an async function
        return fresh()

    reader = read(f"{llm.url}/v1/resumable", method="POST", json=body,
                  headers=fresh if transport == "sync" else afresh)
    reader.join(10)  # cut after 4 tokens; the rest and [DONE]; then 204 for the last id
    assert reader.failure is None
    assert tokens(reader.events) == [*TOKENS, "[DONE]"]  # every token once, in order
    assert [e.id for e in reader.events[:-1]] == [str(i) for i in range(len(TOKENS))]
    assert len(reader.errors) == 1  # the drop, reported; the reconnection went on
    requests_seen = seen(llm, k)
    assert [r["last_event_id"] for r in requests_seen] == [None, "3", str(len(TOKENS) - 1)]
    assert all(r["method"] == "POST" and r["body"] == body for r in requests_seen)
    # headers= a function: called for every attempt (fresh credentials each time).
    assert [r["authorization"] for r in requests_seen] == [f"Bearer token-{i}" for i in range(3)]


def test_close_while_waiting_for_the_first_token_ends_at_once(read: Any, llm: Server) -> None:
    k = key()
    reader = read(f"{llm.url}/v1/chat/completions", method="POST", json={"prompt": PROMPT, "k": k, "wait": 5})
    assert wait_until(lambda: len(seen(llm, k)) == 1, 5)  # sent; no response head for 5 s
    started = time.monotonic()
    reader.close()  # from another thread than the reader's
    assert time.monotonic() - started < 1.0
    assert reader.failure is None and reader.events == []  # closing is no error
    assert len(seen(llm, k)) == 1


def test_restart_while_awaiting_the_response_delivers_the_answer_once(read: Any, llm: Server) -> None:
    k = key()
    body = {"prompt": PROMPT, "k": k, "wait": 0.5}
    reader = read(f"{llm.url}/v1/chat/completions", method="POST", json=body)
    assert wait_until(lambda: len(seen(llm, k)) == 1, 5)  # sent; the response head is not there yet
    reader.restart()
    reader.join(10)
    assert reader.failure is None
    # Whether the attempt in progress is dropped and made again or kept, the answer comes once.
    assert tokens(reader.events) == [*TOKENS, "[DONE]"]
