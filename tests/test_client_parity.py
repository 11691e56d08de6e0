"""Both clients, one suite: every behaviour runs on EventSource (requests) and AsyncEventSource (httpx).

The ``client`` fixture runs a scenario the same way on either transport and returns what
the caller saw (events, comments and hook calls in order, the error, the final state); the
scripted server (tests/scripted_server.py, here answering any method and logging bodies)
records what was sent. The behaviour tests check each rule on both; the parity test runs
one list of scenarios on both and asserts the same events and the same request log.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, NamedTuple

import anyio
import httpx
import pytest
import requests
from scripted_server import DROP, Pause, Reply, ScriptedServer, Step, sse

from sseproto import Event, LimitExceeded
from sseproto.client import (
    CLOSED,
    CONNECTING,
    AsyncEventSource,
    ContentTypeError,
    EventSource,
    EventSourceError,
    HTTPStatusError,
)

pytestmark = pytest.mark.timeout(30)

# Short everything: a client that misbehaves costs at most a few seconds, never a hang.
FAST: dict[str, Any] = {"timeout": (2.0, 5.0), "reconnect_delay": 0.02, "max_backoff": 0.2}
END = Reply(204, {}, ())


# -- the server: any method, with its body -------------------------------------------------


@dataclass(frozen=True)
class Logged:
    """A request as the server read it: method, path, headers (names in lower case), body."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes


class LoggingServer(ScriptedServer):
    """The scripted server answering every method (a scripted reply, whatever the method) and
    logging each request's method and body too, and when each reply ended (its script done,
    or the client gone: the next write failed)."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[Logged] = []
        self.ended: list[str] = []  # the path of each reply that ended, in order
        server = self
        base: type[BaseHTTPRequestHandler] = self._httpd.RequestHandlerClass  # type: ignore[assignment]

        class Handler(base):  # type: ignore[valid-type,misc]
            def do_GET(self) -> None:
                length = self.headers.get("Content-Length", "")
                body = self.rfile.read(int(length)) if length.isdigit() else b""
                path = self.path.split("?", 1)[0]
                headers = {k.lower(): v for k, v in self.headers.items()}
                with server._lock:
                    server.log.append(Logged(self.command, path, headers, body))
                try:
                    super().do_GET()
                finally:
                    with server._lock:
                        server.ended.append(path)

            do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

        self._httpd.RequestHandlerClass = Handler

    def reset(self) -> None:
        """Forget every script and request: the next test starts afresh on a running server."""
        with self._lock:
            self._scripts.clear()
            self._served.clear()
            self.requests.clear()
            self.log.clear()
            self.ended.clear()

    def logged(self, path: str) -> list[Logged]:
        with self._lock:
            return [r for r in self.log if r.path == path]


class Servers(NamedTuple):
    """Two servers: two origins (another port of 127.0.0.1)."""

    main: LoggingServer
    other: LoggingServer


    def reset(self) -> Servers:
        self.main.reset()
        self.other.reset()
        return self


@pytest.fixture(scope="module")
def running() -> Iterator[Servers]:
    """The servers of this module, started once (stopping one takes its poll interval)."""
    with LoggingServer() as main, LoggingServer() as other:
        yield Servers(main, other)


@pytest.fixture
def servers(running: Servers) -> Servers:
    """The running servers, with no script and no request yet."""
    return running.reset()


# -- the clients, run the same way --------------------------------------------------------

#: After an event: what to do with the source, from inside the loop ("close", "restart" or None).
Act = Callable[[Event], "str | None"]
#: From another thread (sync) or task (async): (when, what, seconds to wait before doing it).
When = tuple[Callable[[Any, "Outcome"], bool], str, float]


@dataclass
class Outcome:
    """What the caller saw: ``stream`` holds events, comments (``"comment TEXT"``) and hook calls
    (``"open STATUS"``, ``"error KIND"``) in the order they came."""

    stream: list[Event | str] = field(default_factory=list)
    error: BaseException | None = None
    state: int = -1
    last_event_id: str = ""
    reconnection_time: float = 0.0
    errors: list[Exception] = field(default_factory=list)  # what on_error got

    @property
    def events(self) -> list[Event]:
        return [e for e in self.stream if isinstance(e, Event)]

    @property
    def hooks(self) -> list[str]:
        return [s for s in self.stream if isinstance(s, str) and not s.startswith("comment ")]


class Client:
    """One transport: ``run(url, **options)`` iterates a source to its end and returns its Outcome."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.network_error: type[Exception] = (
            requests.RequestException if name == "sync" else httpx.TransportError)

    def __repr__(self) -> str:
        return self.name

    def describe(self, exc: BaseException | None) -> str | None:
        """An error as both transports can agree on it: the class of ours, "network" for theirs."""
        if exc is None:
            return None
        if isinstance(exc, EventSourceError):
            return f"{type(exc).__name__} {exc.response.status_code}"
        if isinstance(exc, self.network_error):
            return "network"
        return type(exc).__name__

    def _options(self, out: Outcome, options: dict[str, Any], comments: bool) -> dict[str, Any]:
        def on_error(exc: Exception) -> None:
            out.errors.append(exc)
            out.stream.append(f"error {self.describe(exc)}")

        hooks: dict[str, Any] = {
            "on_open": lambda response: out.stream.append(f"open {response.status_code}"),
            "on_error": on_error,
        }
        if comments:
            hooks["on_comment"] = lambda text: out.stream.append(f"comment {text}")
        return {**hooks, **options}

    def run(self, url: str, *, act: Act | None = None, when: tuple[When, ...] = (), limit: int = 100,
            comments: bool = False, **options: Any) -> Outcome:
        out = Outcome()
        options = self._options(out, options, comments)
        if self.name == "sync":
            self._run_sync(url, options, out, act, when, limit)
        else:
            anyio.run(self._run_async, url, options, out, act, when, limit, backend=self.name)
        return out

    @staticmethod
    def _finish(source: Any, out: Outcome) -> None:
        out.state = source.ready_state
        out.last_event_id = source.last_event_id
        out.reconnection_time = source.reconnection_time

    def _run_sync(self, url: str, options: dict[str, Any], out: Outcome, act: Act | None,
                  when: tuple[When, ...], limit: int) -> None:
        source = EventSource(url, **options)
        stop = threading.Event()

        def watch() -> None:
            for check, what, after in when:
                while not check(source, out):
                    if stop.wait(0.005):
                        return
                if stop.wait(after):
                    return
                source.close() if what == "close" else source.restart()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            with source:
                for event in source:
                    out.stream.append(event)
                    what = act(event) if act is not None else None
                    if what == "close":
                        source.close()
                    elif what == "restart":
                        source.restart()
                    if len(out.events) >= limit:
                        break
        except Exception as exc:
            out.error = exc
        finally:
            stop.set()
            watcher.join(5)
        self._finish(source, out)

    async def _run_async(self, url: str, options: dict[str, Any], out: Outcome, act: Act | None,
                         when: tuple[When, ...], limit: int) -> None:
        source = AsyncEventSource(url, **options)

        async def watch() -> None:
            for check, what, after in when:
                while not check(source, out):
                    await anyio.sleep(0.005)
                await anyio.sleep(after)
                if what == "close":
                    await source.aclose()
                else:
                    source.restart()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(watch)
            try:
                async with source:
                    async for event in source:
                        out.stream.append(event)
                        what = act(event) if act is not None else None
                        if what == "close":
                            await source.aclose()
                        elif what == "restart":
                            source.restart()
                        if len(out.events) >= limit:
                            break
            except Exception as exc:
                out.error = exc
            tasks.cancel_scope.cancel()
        self._finish(source, out)


CLIENTS = ("sync", "asyncio")


@pytest.fixture(params=CLIENTS)
def client(request: pytest.FixtureRequest) -> Client:
    """``sync`` (EventSource on requests) or ``asyncio`` (AsyncEventSource on httpx)."""
    return Client(request.param)


def data(out: Outcome) -> list[str]:
    return [e.data for e in out.events]


def sent_ids(server: LoggingServer, path: str) -> list[str | None]:
    return [r.headers.get("last-event-id") for r in server.logged(path)]


# -- the scenarios: each scripts the servers and says how to run --------------------------


def resume(s: Servers) -> str:
    return s.main.script(
        "/s",
        Reply(body=sse("retry: 20\nid: 1\ndata: one\n\n", "id: 2\ndata: two\n\n", "data: half"),
              framing="close"),
        Reply(body=[b"id: 3\ndata: three\n\n", b"id: 4\ndata: hal", DROP]),
        Reply(body=sse("data: four\n\n")),
        END,
    )


def retry_field(s: Servers) -> str:
    return s.main.script("/s", Reply(body=sse("retry: 300\ndata: a\n\n"), framing="close"), END)


def stop_204(s: Servers) -> str:
    return s.main.script("/s", END, Reply(body=sse("data: never\n\n")))


def error_status(s: Servers) -> str:
    return s.main.script("/s", Reply(500, {"Content-Type": "text/plain"}, [b"something broke"], "length"))


def wrong_content_type(s: Servers) -> str:
    return s.main.script("/s", Reply(200, {"Content-Type": "application/json"}, sse('data: {"x": 1}\n\n')))


def retry_after(s: Servers) -> str:
    busy = Reply(503, {"Content-Type": "text/plain", "Retry-After": "1"}, [b"deploying"], "length")
    return s.main.script("/s", Reply(body=sse("id: 1\ndata: a\n\n")), busy,
                         Reply(body=sse("id: 2\ndata: b\n\n")), END)


def redirected(s: Servers) -> str:
    """/start (sets a cookie) -> /old on the same origin -> /new on the other origin."""
    cookie = {"Location": "/old", "Set-Cookie": "c=1; Path=/"}
    start = s.main.script("/start", Reply(302, cookie, (), "length"))
    s.main.script("/old", Reply(307, {"Location": s.other.url("/new")}, (), "length"))
    s.other.script("/new", Reply(body=sse("id: 1\ndata: a\n\n")), Reply(body=sse("id: 2\ndata: b\n\n")), END)
    return start


def post_redirected(s: Servers) -> str:
    """A POST answered 307 to another origin: the body goes along."""
    start = s.main.script("/start", Reply(307, {"Location": s.other.url("/new")}, (), "length"))
    s.other.script("/new", Reply(body=sse("data: a\n\n")))
    return start


def tls_to_plain_http(s: Servers) -> str:
    """https:// to a plain HTTP server: the TLS handshake fails."""
    return s.main.url("/s").replace("http://", "https://")


def oversized_line(s: Servers) -> str:
    return s.main.script("/s", Reply(body=[b"data: ok\n\n", b"data: " + b"x" * 200 + b"\n\n"]))


# Comments between, after and before events, in one write, then across writes.
ORDER_WIRE: list[Step] = [b"data: 1\n\n: a\n: b\ndata: 2\n\n:c\rdata: 3\r\n\r\n", b"data: 4\n", Pause(0.05),
                          b"\n: after 4\n"]


def comments(s: Servers) -> str:
    return s.main.script("/s", Reply(body=ORDER_WIRE), END)


LLM_TOKENS = ["The", " quick", " fox", "."]


def llm(s: Servers) -> str:
    """An OpenAI-style answer: JSON tokens, then [DONE], no ids; the response ends."""
    body = [f"data: {json.dumps({'token': t})}\n\n" for t in LLM_TOKENS] + ["data: [DONE]\n\n"]
    return s.main.script("/v1/chat", Reply(body=sse(*body)), Reply(body=sse("data: asked twice\n\n")))


def post_with_ids(s: Servers) -> str:
    return s.main.script(
        "/jobs",
        Reply(body=[b"id: 1\ndata: a\n\n", b"id: 2\ndata: b\n\n", b"id: 3\ndata: hal", DROP]),
        Reply(body=sse("id: 3\ndata: c\n\n")),
        END,
    )


def one_stream(s: Servers) -> str:
    """One stream without ids that ends; asked again, 204."""
    return s.main.script("/s", Reply(body=sse("data: a\n\n")), END)


def dropped_without_ids(s: Servers) -> str:
    return s.main.script("/v1/chat", Reply(body=[b"data: a\n\n", b"data: b", DROP]), END)


def hooks(s: Servers) -> str:
    """A drop, a retry status, a stream, the end: one hook call each."""
    busy = Reply(503, {"Content-Type": "text/plain"}, [b"busy"], "length")
    return s.main.script("/s", Reply(body=[b"id: 1\ndata: a\n\n", DROP]), busy,
                         Reply(body=sse("data: b\n\n")), END)


def three_attempts(s: Servers) -> str:
    return s.main.script("/s", Reply(body=sse("data: a\n\n")), Reply(body=sse("data: b\n\n")), END)


def held(s: Servers) -> str:
    """A stream that holds its connection open after its first event; then one that ends, then 204."""
    return s.main.script("/s", Reply(body=[b"id: 1\ndata: a\n\n", Pause(10)]),
                         Reply(body=sse("retry: 10\nid: 2\ndata: b\n\n")), END)


def long_retry(s: Servers) -> str:
    """Streams that ask for a 5 s wait after them."""
    return s.main.script("/s", Reply(body=sse("retry: 5000\nid: 1\ndata: a\n\n")),
                         Reply(body=sse("retry: 5000\nid: 2\ndata: b\n\n")), END)


def one_chunk(s: Servers) -> str:
    return s.main.script("/s", Reply(body=sse("id: 1\ndata: a\n\nid: 2\ndata: b\n\nid: 3\ndata: c\n\n")))


def counter() -> Callable[[], dict[str, str]]:
    """A headers function that hands out a fresh token on every call."""
    calls = iter(range(100))
    return lambda: {"Authorization": f"Bearer token-{next(calls)}"}


def waiting_after(events: int) -> Callable[[Any, Outcome], bool]:
    """True once ``events`` events arrived and the source waits to reconnect (its stream ended)."""
    return lambda source, out: len(out.events) == events and source.ready_state == CONNECTING


def after_event(events: int) -> Callable[[Any, Outcome], bool]:
    return lambda source, out: len(out.events) >= events


def restart_at(text: str) -> Act:
    return lambda event: "restart" if event.data == text else None


def close_at(text: str) -> Act:
    return lambda event: "close" if event.data == text else None


POST_JSON = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}

#: name: (script, run options). Each runs on both clients in test_both_clients_see_and_send_the_same.
SCENARIOS: dict[str, tuple[Callable[[Servers], str], dict[str, Any]]] = {
    "resume": (resume, {}),
    "retry-field": (retry_field, {}),
    "204": (stop_204, {}),
    "error-status": (error_status, {}),
    "content-type": (wrong_content_type, {}),
    "retry-after": (retry_after, {"retry_statuses": (502, 503)}),
    "redirects": (redirected, {"headers": {"X-Api-Key": "k"}, "auth": ("user", "pw")}),
    "redirects-forward": (redirected, {"headers": {"X-Api-Key": "k"}, "auth": ("user", "pw"),
                                       "forward_headers": True}),
    "post-redirected": (post_redirected, {"method": "POST", "json": POST_JSON}),
    "tls-failure": (tls_to_plain_http, {}),
    "limits": (oversized_line, {"max_line_size": 100, "max_event_size": 100}),
    "comments": (comments, {"comments": True}),
    "llm": (llm, {"method": "POST", "json": POST_JSON}),
    "post-with-ids": (post_with_ids, {"method": "POST", "json": POST_JSON}),
    "form": (one_stream, {"method": "POST", "data": {"q": "a b", "n": "1"}}),
    "form-pairs": (one_stream, {"method": "POST", "data": [("q", "a"), ("q", "b"), ("n", "1")]}),
    "content": (one_stream, {"method": "PATCH", "content": b"\x00raw", "headers": {"Content-Type": "x/y"}}),
    "post-reconnect": (one_stream, {"method": "POST", "json": [1, 2], "reconnect": True}),
    "get-one-shot": (one_stream, {"reconnect": False}),
    "one-shot-drop": (dropped_without_ids, {"method": "POST", "content": "q"}),
    "hooks": (hooks, {"retry_statuses": (503,)}),
    "headers-function": (three_attempts, {"headers": counter}),  # a factory: one counter per run
    "restart-in-loop": (held, {"reconnect_delay": 5.0, "act": restart_at("a")}),
    "restart-from-elsewhere": (held, {"reconnect_delay": 5.0, "when": ((after_event(1), "restart", 0.0),)}),
    "restart-during-wait": (long_retry, {"when": ((waiting_after(1), "restart", 0.0),
                                                  (waiting_after(2), "close", 0.3))}),
    "close-in-loop": (one_chunk, {"act": close_at("a")}),
    "close-from-elsewhere": (held, {"when": ((after_event(1), "close", 0.05),)}),
}


def run(client: Client, s: Servers, name: str, **overrides: Any) -> Outcome:
    """Run scenario ``name`` on ``client`` against ``s``."""
    script, options = SCENARIOS[name]
    options = {**FAST, **options, **overrides}
    if options.get("headers") is counter:
        options["headers"] = counter()
    return client.run(script(s), **options)


# -- the rules, on both clients -----------------------------------------------------------


def test_get_resumes_with_last_event_id_and_drops_the_half_event(client: Client, servers: Servers) -> None:
    out = run(client, servers, "resume")
    assert [(e.data, e.id) for e in out.events] == [("one", "1"), ("two", "2"), ("three", "3"), ("four", "3")]
    assert sent_ids(servers.main, "/s") == [None, "2", "3", "3"]
    assert all(r.headers["accept"] == "text/event-stream" and r.headers["cache-control"] == "no-cache"
               for r in servers.main.logged("/s"))
    assert out.error is None and out.state == CLOSED


def test_the_retry_field_sets_the_reconnection_time(client: Client, servers: Servers) -> None:
    out = run(client, servers, "retry-field", reconnect_delay=5.0)
    assert data(out) == ["a"] and out.reconnection_time == 0.3
    first, second = servers.main.seen("/s")
    assert 0.3 <= second.at - first.at < 2.0  # the stream's 300 ms, not reconnect_delay's 5 s


def test_204_stops_quietly(client: Client, servers: Servers) -> None:
    out = run(client, servers, "204")
    assert out.events == [] and out.error is None and out.state == CLOSED
    assert len(servers.main.seen("/s")) == 1


def test_an_error_status_raises_with_the_response(client: Client, servers: Servers) -> None:
    out = run(client, servers, "error-status")
    assert isinstance(out.error, HTTPStatusError)
    assert out.error.response.status_code == 500
    assert out.error.response.text == "something broke"  # a small error body is kept
    assert "500" in str(out.error)
    assert out.state == CLOSED and len(servers.main.seen("/s")) == 1


def test_a_wrong_content_type_raises(client: Client, servers: Servers) -> None:
    out = run(client, servers, "content-type")
    assert isinstance(out.error, ContentTypeError) and isinstance(out.error, EventSourceError)
    assert "application/json" in str(out.error)
    assert out.error.response.status_code == 200
    assert out.events == [] and len(servers.main.seen("/s")) == 1


def test_retry_statuses_wait_for_retry_after_and_resume(client: Client, servers: Servers) -> None:
    out = run(client, servers, "retry-after")
    assert data(out) == ["a", "b"]
    assert out.hooks == ["open 200", "error HTTPStatusError 503", "open 200"]
    seen = servers.main.seen("/s")
    assert [r.headers.get("last-event-id") for r in seen] == [None, "1", "1", "2"]
    assert seen[2].at - seen[1].at >= 1.0  # Retry-After: 1 s, though the backoff here is 0.2 s at most


@pytest.mark.parametrize("forward", [False, True], ids=["default", "forward_headers"])
def test_headers_stay_with_their_origin_across_redirects(
    client: Client, servers: Servers, forward: bool
) -> None:
    out = run(client, servers, "redirects-forward" if forward else "redirects")
    assert data(out) == ["a", "b"]
    mine = [*servers.main.logged("/start"), *servers.main.logged("/old")]
    assert len(mine) == 6  # three connections, each through both hops of the first origin
    assert all(r.headers["x-api-key"] == "k" for r in mine)
    assert all(r.headers["authorization"] == "Basic dXNlcjpwdw==" for r in mine)
    theirs = servers.other.logged("/new")
    assert [r.headers.get("last-event-id") for r in theirs] == [None, "1", "2"]  # each started over at /start
    assert all(r.headers["accept"] == "text/event-stream" for r in theirs)
    assert [r.headers.get("x-api-key") for r in theirs] == ["k" if forward else None] * 3
    assert [r.headers.get("authorization") for r in theirs] == [None] * 3  # stripped by both libraries anyway
    assert [r.headers.get("cookie") for r in theirs] == ["c=1"] * 3  # the jar's cookies for that host


def test_a_post_redirected_to_another_origin_keeps_its_body(client: Client, servers: Servers) -> None:
    """307 keeps the method and the body: the headers that describe the body go along with it."""
    out = run(client, servers, "post-redirected")
    assert data(out) == ["a"] and out.error is None
    [request] = servers.other.logged("/new")
    assert request.method == "POST"
    assert json.loads(request.body) == POST_JSON
    assert request.headers["content-type"] == "application/json"


def test_a_tls_failure_raises_and_is_not_retried(client: Client, servers: Servers) -> None:
    """No network drop to come back from: a certificate or protocol error is raised at once."""
    out = run(client, servers, "tls-failure")
    assert isinstance(out.error, client.network_error)
    assert "SSL" in str(out.error)
    assert out.stream == [] and out.state == CLOSED  # no on_error: no reconnection to report


def test_limits_raise_limit_exceeded_naming_the_arguments(client: Client, servers: Servers) -> None:
    out = run(client, servers, "limits")
    assert data(out) == ["ok"]
    assert isinstance(out.error, LimitExceeded)
    assert (out.error.limit, out.error.value) == ("max_line_size", 100)
    assert "EventSource(max_line_size=...)" in str(out.error) and "Decoder" not in str(out.error)
    assert out.state == CLOSED and len(servers.main.seen("/s")) == 1


def test_comments_reach_on_comment_in_stream_order(client: Client, servers: Servers) -> None:
    out = run(client, servers, "comments")
    shape = [s if isinstance(s, str) else s.data for s in out.stream if not str(s).startswith("open")]
    assert shape == ["1", "comment a", "comment b", "2", "comment c", "3", "4", "comment after 4"]


def test_an_llm_post_without_ids_is_one_request_and_ends_with_its_response(
    client: Client, servers: Servers
) -> None:
    out = run(client, servers, "llm")
    assert data(out)[-1] == "[DONE]"
    assert [json.loads(d)["token"] for d in data(out)[:-1]] == LLM_TOKENS
    assert out.error is None and out.hooks == ["open 200"] and out.state == CLOSED
    [request] = servers.main.logged("/v1/chat")  # exactly one request: never asked twice
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.body) == POST_JSON
    assert "last-event-id" not in request.headers


def test_a_post_whose_stream_has_ids_is_sent_again_with_its_body_and_last_event_id(
    client: Client, servers: Servers
) -> None:
    out = run(client, servers, "post-with-ids")
    assert data(out) == ["a", "b", "c"] and out.error is None
    logged = servers.main.logged("/jobs")
    assert [r.headers.get("last-event-id") for r in logged] == [None, "2", "3"]
    assert all(r.method == "POST" and json.loads(r.body) == POST_JSON for r in logged)
    assert out.hooks == ["open 200", "error network", "open 200"]  # the drop reported, and resumed


@pytest.mark.parametrize(("name", "requests_made"), [("post-reconnect", 2), ("get-one-shot", 1)],
                         ids=["post-reconnect-true", "get-reconnect-false"])
def test_reconnect_true_and_false_override_the_method(
    client: Client, servers: Servers, name: str, requests_made: int
) -> None:
    out = run(client, servers, name)
    assert data(out) == ["a"] and out.error is None and out.state == CLOSED
    logged = servers.main.logged("/s")
    assert len(logged) == requests_made
    assert len({(r.method, r.body) for r in logged}) == 1  # sent again as it was


def test_a_dropped_one_shot_stream_raises_not_truncates(client: Client, servers: Servers) -> None:
    out = run(client, servers, "one-shot-drop")
    assert data(out) == ["a"]  # the half event is never delivered...
    assert isinstance(out.error, client.network_error)  # ...and its loss is not silent
    assert out.errors == [out.error]  # on_error saw it first
    assert len(servers.main.logged("/v1/chat")) == 1


def test_on_open_and_on_error_are_called_for_each_connection_and_failure(
    client: Client, servers: Servers
) -> None:
    out = run(client, servers, "hooks")
    assert [s if isinstance(s, str) else s.data for s in out.stream] == [
        "open 200", "a", "error network", "error HTTPStatusError 503", "open 200", "b"]
    assert out.error is None
    assert sent_ids(servers.main, "/s") == [None, "1", "1", "1"]


def test_a_headers_function_is_called_for_every_attempt(client: Client, servers: Servers) -> None:
    out = run(client, servers, "headers-function")
    assert data(out) == ["a", "b"]
    assert [r.headers["authorization"] for r in servers.main.logged("/s")] == [
        f"Bearer token-{i}" for i in range(3)]


@pytest.mark.parametrize("name", ["restart-in-loop", "restart-from-elsewhere"])
def test_restart_reconnects_at_once_with_last_event_id(client: Client, servers: Servers, name: str) -> None:
    """The first stream is held open for 10 s and reconnect_delay is 5 s: only restart() explains
    a second request at once."""
    out = run(client, servers, name)
    assert data(out) == ["a", "b"]
    seen = servers.main.seen("/s")
    assert [r.headers.get("last-event-id") for r in seen] == [None, "1", "2"]
    assert seen[1].at - seen[0].at < 1.0
    assert out.errors == [] and out.error is None  # a restart asked for is no error


def test_restart_during_the_wait_reconnects_once(client: Client, servers: Servers) -> None:
    """A restart() during the wait between attempts used to stay pending: the stream it opened
    was also followed by a reconnection at once, instead of the stream's retry."""
    out = run(client, servers, "restart-during-wait")
    assert data(out) == ["a", "b"]
    assert sent_ids(servers.main, "/s") == [None, "1"]  # no third request at once after "b"
    assert out.state == CLOSED and out.error is None


def test_close_inside_the_loop_stops_at_once_and_keeps_the_delivered_id(
    client: Client, servers: Servers
) -> None:
    out = run(client, servers, "close-in-loop")
    assert data(out) == ["a"]
    assert out.last_event_id == "1"  # the decoder read all three; a resume must start after "a"
    assert out.state == CLOSED and len(servers.main.seen("/s")) == 1


def test_close_from_elsewhere_ends_a_blocked_read(client: Client, servers: Servers) -> None:
    out = run(client, servers, "close-from-elsewhere")
    assert data(out) == ["a"] and out.error is None and out.state == CLOSED
    assert len(servers.main.seen("/s")) == 1


# -- parity: the same scenarios, the same events and the same requests ----------------------


def request_log(s: Servers) -> list[tuple[str, str, str, dict[str, str], Any]]:
    """What the servers got, as both clients must send it: method, origin, path, the headers
    that matter, the body (JSON parsed: the libraries' serialisations space it differently)."""
    matter = ("accept", "cache-control", "last-event-id", "content-type", "authorization", "x-api-key",
              "cookie")
    log = []
    for where, server in (("main", s.main), ("other", s.other)):
        for r in server.log:
            body: Any = r.body
            if r.headers.get("content-type") == "application/json":
                body = json.loads(r.body)
            log.append((r.method, where, r.path, {h: r.headers[h] for h in matter if h in r.headers}, body))
    return log


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_both_clients_see_and_send_the_same(name: str, running: Servers) -> None:
    """One scenario on each transport, the servers reset in between: the same events, comments
    and hook calls in the same order, the same error and end state, and the same requests."""
    seen: dict[str, tuple[Any, ...]] = {}
    for transport in CLIENTS:
        client = Client(transport)
        s = running.reset()
        out = run(client, s, name, rng=random.Random(1))
        seen[transport] = (out.stream, client.describe(out.error), out.state, out.last_event_id,
                           request_log(s))
    assert seen["sync"] == seen["asyncio"]

