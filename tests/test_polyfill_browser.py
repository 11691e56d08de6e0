"""The polyfill in headless Chromium, scenario by scenario beside the native EventSource.

Every scenario runs on a page with the native EventSource (the reference) and on pages
where the polyfill stands in for it: ``polyfill`` (native EventSource deleted: fetch
streaming) and ``legacy`` (fetch, ReadableStream, Response, TextDecoder and
AbortController deleted too: XMLHttpRequest streaming).

Two servers. The sseproto app of tests/apps/polyfill_app.py (the Flask extension, its
``/sse/eventsource.js``, and ``sseproto.wsgi`` endpoints) runs in a subprocess on two
ports; the scenarios of js/test/harness.js run there, one page per mode, all pages at
once. A scripted server in this process sends exact bytes the sseproto server never
would (split UTF-8, a BOM, CR line ends, odd fields, each spec vector), and serves
three more modes: ``nodecoder`` (TextDecoder deleted: the polyfill's own UTF-8
decoder), ``poll`` (no XMLHttpRequest progress events: long-polling) and ``xdr`` (IE
8/9: XDomainRequest for cross-origin streams, imitated on XMLHttpRequest).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import PYTHON, ROOT, free_port, missing, wait_for_port

from sseproto import Decoder

pytestmark = pytest.mark.browser

TESTS = ROOT / "tests"
STATIC = ROOT / "sseproto" / "static"
VECTORS = ROOT / "spec" / "vectors"
REMOVED = {
    "native": [],
    "polyfill": ["EventSource"],
    "nodecoder": ["EventSource", "TextDecoder"],
    "legacy": ["EventSource", "fetch", "ReadableStream", "Response", "TextDecoder", "AbortController"],
}
APP_MODES = ["native", "polyfill", "legacy"]
MODES = ["native", "polyfill", "nodecoder", "legacy"]
POLYFILLS = MODES[1:]
LEGACY = "".join(f"delete window.{name};" for name in REMOVED["legacy"])
# Two older browsers, imitated in Chromium for the transports it lacks: one whose
# XMLHttpRequest has no progress events (long-polling), and IE 8/9, whose
# XMLHttpRequest cannot go cross-origin and whose XDomainRequest is built here on it.
EXTRA_MODES = {
    "poll": LEGACY + "delete XMLHttpRequestEventTarget.prototype.onprogress;",
    "xdr": LEGACY
    + """(function () {
  var X = XMLHttpRequest;
  delete X.prototype.withCredentials;
  window.XDomainRequest = function () {
    var self = this, x = new X();
    self.onprogress = self.onload = self.onerror = self.ontimeout = null;
    self.open = function (method, url) { x.open(method, url); };
    self.send = function () { x.send(); };
    self.abort = function () { x.abort(); };
    function copy() {
      self.responseText = x.responseText;
      self.contentType = x.getResponseHeader('Content-Type');
    }
    x.onprogress = function () { copy(); if (self.onprogress) self.onprogress(); };
    x.onload = function () { copy(); if (self.onload) self.onload(); };
    x.onerror = function () { if (self.onerror) self.onerror(); };
  };
})();""",
}


def removing(mode: str) -> str:
    """The init script that takes from a page what its mode says the browser lacks."""
    return EXTRA_MODES.get(mode) or "".join(f"delete window.{name};" for name in REMOVED[mode])


# =======================================================================================
# Over the sseproto server: the scenarios of js/test/harness.js

SCENARIOS = ["events", "drop", "retry", "bad", "cors", "capped", "heartbeat", "close", "listeners", "buffer"]


@pytest.fixture(scope="module")
def app_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """tests/apps/polyfill_app.py in a subprocess: the page's origin, and a second one."""
    try:
        import flask  # noqa: F401
    except ImportError:
        missing("flask")
    port, other = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)])}
    log = (tmp_path_factory.mktemp("polyfill-app") / "server.log").open("wb")
    proc = subprocess.Popen([PYTHON, "-m", "apps.polyfill_app", str(port), str(other)], cwd=TESTS, env=env,
                            stdout=log, stderr=log)
    try:
        wait_for_port(port, proc)
        wait_for_port(other, proc)
        yield f"http://127.0.0.1:{port}", f"http://127.0.0.1:{other}"
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.fixture(scope="module")
def app(browser: Any, app_server: tuple[str, str]) -> dict[str, Any]:
    """Every scenario's result, by scenario then mode; the pages of all modes run at once."""
    base, other = app_server
    contexts = []
    handles = {}
    pages = {}
    try:
        for mode in APP_MODES:
            ctx = browser.new_context()
            contexts.append(ctx)
            # A cookie of the server's host: the second port is another origin of the same site.
            ctx.add_cookies([{"name": "sid", "value": "s1", "domain": "127.0.0.1", "path": "/"}])
            ctx.add_init_script(f"{removing(mode)} window.MODE = {json.dumps(mode)};"
                                f" window.OTHER = {json.dumps(other)};")
            page = ctx.new_page()
            page.goto(f"{base}/page")
            pages[mode] = page.evaluate(
                "[window.EventSource === window.EventSourcePolyfill, typeof window.EventSourcePolyfill]"
            )
            handles[mode] = page.evaluate_handle("names => ({p: window.runScenarios(names)})", SCENARIOS)
        results = {mode: handle.evaluate("h => h.p") for mode, handle in handles.items()}
    finally:
        for ctx in contexts:
            ctx.close()
    out: dict[str, Any] = {"base": base, "other": other, "pages": pages}
    for mode, by_name in results.items():
        for name, result in by_name.items():
            out.setdefault(name, {})[mode] = result
    return out


def outcome(app: dict[str, Any], name: str) -> dict[str, Any]:
    """One scenario's results by mode, each with the ids the broker gave shown as #0, #1, ..."""
    out = {}
    for mode in APP_MODES:
        result = app[name][mode]
        assert not isinstance(result.get("error"), str), f"{name} in {mode}: {result['error']}"
        ids = {id: f"#{i}" for i, id in enumerate(result.get("ids", []))}
        out[mode] = _renamed(result, ids)
    return out


def _renamed(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return ids.get(value, value)
    if isinstance(value, list):
        return [_renamed(v, ids) for v in value]
    if isinstance(value, dict):
        return {k: v if k == "ids" else _renamed(v, ids) for k, v in value.items()}
    return value


def messages(log: list[list[Any]]) -> list[list[Any]]:
    """The stream events of a log, as [type, data, lastEventId]."""
    return [[e[0], e[2], e[3]] for e in log if len(e) == 5]


def same_as_native(results: dict[str, Any], *keys: str) -> None:
    for mode in APP_MODES[1:]:
        for key in keys:
            assert results[mode][key] == results["native"][key], f"{mode}: {key}"


def test_the_flask_extension_serves_the_polyfill_which_installs_itself_only_without_native(
    app: dict[str, Any],
) -> None:
    # The pages load /sse/eventsource.js from the Flask extension.
    assert app["pages"] == {"native": [False, "function"], "polyfill": [True, "function"],
                            "legacy": [True, "function"]}


def test_events_types_ids_and_attributes_match_native(app: dict[str, Any]) -> None:
    results = outcome(app, "events")
    origin = app["base"]
    native = results["native"]
    assert native["log"] == [
        ["open", 1],
        ["message", 1, "one", "#0", origin],
        ["tick", 1, "two\nlines", "#1", origin],
        ["message", 1, "", "#2", origin],
        ["message", 1, "é ☃ 😀", "#3", origin],  # the id given to publish(), "own-id 7"
        ["message", 1, "after own id", "#4", origin],
        ["error", 1, "not a failure", "#5", origin],  # an event named error is a message to onerror
        ["done", 1, "end", "#6", origin],
    ]
    assert app["events"]["native"]["ids"][3] == "own-id 7"
    for mode, result in results.items():
        attributes = result["attributes"]
        assert attributes.pop("url") == f"{origin}/sse/stream?channel=events-{mode}&k=events-{mode}", mode
        assert attributes == {"withCredentials": False, "constants": [0, 1, 2, 0, 1, 2],
                              "before": 0, "after": 2}
        [request] = result["requests"]
        assert request["accept"] == "text/event-stream", mode
        assert (request["header"], request["query"]) == (None, None), mode
    same_as_native(results, "log", "opened", "done")


def test_a_server_drop_reconnects_with_last_event_id_and_loses_nothing(app: dict[str, Any]) -> None:
    results = outcome(app, "drop")
    origin = app["base"]
    native = results["native"]
    assert native["log"] == [
        ["open", 1],
        ["message", 1, "a", "#0", origin],
        ["message", 1, "b", "#1", origin],
        ["error", 0],
        ["open", 1],
        ["message", 1, "while away", "#2", origin],  # replayed after "#1"
        ["done", 1, "end", "#3", origin],
    ]
    assert (native["errored"], native["state"], native["reopened"], native["done"]) == (True, 0, True, True)
    for mode, result in results.items():
        # Same origin: the id goes as the Last-Event-ID header.
        assert [(r["header"], r["query"]) for r in result["requests"]] == [(None, None), ("#1", None)], mode
    same_as_native(results, "log", "errored", "state", "reopened")


def test_the_retry_field_sets_the_reconnection_time(app: dict[str, Any]) -> None:
    results = outcome(app, "retry")
    native = results["native"]
    # retry: 50 reconnected; after retry: 600000 the client still waits, CONNECTING,
    # where the server's retry: 200 or the default 3 s would have reconnected.
    assert (native["reopened"], native["state"], native["requests"]) == (True, 0, 2)
    same_as_native(results, "log", "reopened", "state", "requests")


def test_a_response_that_is_not_an_event_stream_fails_the_connection(app: dict[str, Any]) -> None:
    results = outcome(app, "bad")
    expected = {"log": [["error", 2]], "state": 2, "requests": 1}  # error, CLOSED, no retry
    for name in ("204", "500", "text/plain", "sseproto 400", "sseproto 403"):
        for mode in APP_MODES:
            assert results[mode][name] == expected, (name, mode)


def test_cross_origin_with_credentials_resumes_by_query_parameter(app: dict[str, Any]) -> None:
    results = outcome(app, "cors")
    other = app["other"]
    native = results["native"]
    assert native["log"] == [
        ["open", 1],
        ["message", 1, "a", "#0", other],
        ["error", 0],
        ["open", 1],
        ["message", 1, "while away", "#1", other],
        ["done", 1, "end", "#2", other],
    ]
    assert [(r["method"], r["header"], r["query"]) for r in native["requests"]] == [
        ("GET", None, None), ("GET", "#0", None)
    ]
    for mode in APP_MODES[1:]:
        # No header, so no CORS preflight: the id goes in the query, which sseproto reads.
        assert [(r["method"], r["header"], r["query"]) for r in results[mode]["requests"]] == [
            ("GET", None, None), ("GET", None, "#0")
        ], mode
    for mode, result in results.items():
        assert result["withCredentials"] is True
        assert [r["cookie"] for r in result["requests"]] == ["sid=s1", "sid=s1"], mode
        assert {r["origin"] for r in result["requests"]} == {app["base"]}, mode
        # Without withCredentials, no cookie goes cross-origin.
        assert result["plain"]["log"] == [["open", 1]], mode
        assert [r["cookie"] for r in result["plain"]["requests"]] == [None], mode
    same_as_native(results, "log", "opened", "done")


def test_a_server_byte_cap_ends_streams_and_each_reconnection_resumes(app: dict[str, Any]) -> None:
    results = outcome(app, "capped")
    for mode, result in results.items():
        assert result["done"], mode
        expected = [["message", f"{'x' * 80} {i}", f"#{i}"] for i in range(20)]
        assert messages(result["log"]) == [*expected, ["done", "end", "#20"]], mode
        # Each stream ended past 300 bytes; each new request carried the last id received.
        assert len(result["requests"]) >= 5, mode
        carried: list[str | None] = []
        last = None
        for entry in result["log"]:
            if entry[0] == "open" and len(entry) == 2:
                carried.append(last)
            elif len(entry) == 5:
                last = entry[3]
        assert [(r["header"], r["query"]) for r in result["requests"]] == [(c, None) for c in carried], mode
    # Where the reconnections fell, and what each one carried, is the same as native.
    same_as_native(results, "log")


def test_the_heartbeat_timeout_reconnects_a_silent_stream(app: dict[str, Any]) -> None:
    results = outcome(app, "heartbeat")
    origin = app["base"]
    native = results["native"]
    # Native EventSource has no such timeout: it keeps waiting on the silent stream.
    assert native["timedOut"] is False
    assert native["log"] == [["open", 1], ["message", 1, "a", "#0", origin], ["done", 1, "end", "#1", origin]]
    assert len(native["requests"]) == 1
    for mode in APP_MODES[1:]:
        result = results[mode]
        assert result["timedOut"] is True, mode
        assert result["log"] == [
            ["open", 1],
            ["message", 1, "a", "#0", origin],
            ["error", 0],
            ["open", 1],
            ["done", 1, "end", "#1", origin],
        ], mode
        assert [r["header"] for r in result["requests"]] == [None, "#0"], mode
        assert messages(result["log"]) == messages(native["log"]), mode


def test_close_stops_everything(app: dict[str, Any]) -> None:
    results = outcome(app, "close")
    native = results["native"]
    origin = app["base"]
    assert {k: v for k, v in native.items() if k != "ids"} == {
        "state": 2,
        "left": 0,  # the server saw the connection go
        "log": [["open", 1], ["message", 1, "a", "#0", origin]],  # nothing after close()
        "earlyState": 2,
        "earlyLog": [],  # closed while connecting: no open, no error
        "onerror": {"log": [["open", 1], ["error", 0]], "state": 2, "requests": 1},  # closed in onerror
    }
    same_as_native(results, "state", "left", "log", "earlyState", "earlyLog", "onerror")


def test_listener_order_and_dispatch_match_native(app: dict[str, Any]) -> None:
    results = outcome(app, "listeners")
    assert results["native"]["calls"] == [
        "error g", "error k", "onerror 2",  # onerror set to null lost its place; set again, it went last
        "dispatched:synthetic:true", "dispatchEvent:true",  # the removed listener did not run again
        "onopen", "open-listener",
        "on:one", "f:one", "obj:one:true", "f:one", "once:one", "remover", "this:truetruetruemessage",
        "on:two", "f:two", "obj:two:true", "f:two", "remover", "this:truetruetruemessage", "late:two",
        "done-first",
    ]
    same_as_native(results, "calls", "done")


def test_the_buffer_limit_starts_fresh_requests_over_xhr_without_loss(app: dict[str, Any]) -> None:
    results = outcome(app, "buffer")
    for mode, result in results.items():
        assert result["done"], mode
        expected = [["message", f"{b} {'y' * 90} {i}", f"#{b * 10 + i}"] for b in range(3) for i in range(10)]
        assert messages(result["log"]) == [*expected, ["done", "end", "#30"]], mode
    # fetch keeps no growing buffer: one request, as native. XMLHttpRequest's response text
    # grows: past 1000 characters the polyfill starts a fresh request, silently.
    assert len(results["native"]["requests"]) == len(results["polyfill"]["requests"]) == 1
    legacy = results["legacy"]["requests"]
    assert len(legacy) >= 3
    sent = [r["header"] for r in legacy]
    assert sent[0] is None and sent[1:] == sorted(set(sent[1:]), key=lambda s: int(s[1:]))
    same_as_native(results, "log")


# =======================================================================================
# Over a scripted server: exact bytes, spec vectors, long-polling and XDomainRequest


class Scripted(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.lock = threading.Lock()
        # Per client key: the requests seen, as {"header", "query", "accept"} dicts.
        self.requests: dict[str, list[dict[str, str | None]]] = defaultdict(list)
        self.stopping = threading.Event()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that leaves mid-stream is part of the scenarios, not an error."""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # the connection closes when a response ends: a drop
    server: Scripted

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/page":
            self.reply(200, "text/html", PAGE.encode())
        elif url.path == "/eventsource.min.js":
            self.reply(200, "text/javascript", (STATIC / "eventsource.min.js").read_bytes())
        elif url.path == "/harness.js":
            self.reply(200, "text/javascript", HARNESS.encode())
        elif url.path == "/log":
            with self.server.lock:
                body = json.dumps(self.server.requests.get(query["k"], []))
            self.reply(200, "application/json", body.encode())
        elif url.path.startswith("/sse/"):
            with self.server.lock:
                seen = self.server.requests[query.get("k", "")]
                seen.append({"header": self.headers.get("Last-Event-ID"), "query": query.get("lastEventId"),
                             "accept": self.headers.get("Accept"), "host": self.headers.get("Host")})
                nth = len(seen)
            STREAMS[url.path[5:]](self, nth, query)
        else:
            self.reply(404, "text/plain", b"not found")

    def reply(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.cors()
        self.end_headers()
        self.wfile.write(body)

    def cors(self) -> None:
        origin = self.headers.get("Origin")
        if origin:
            self.send_header("Access-Control-Allow-Origin", origin)

    def stream(self, *chunks: bytes, pause: float = 0.0) -> None:
        """Send the headers, then each chunk flushed on its own."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.cors()
        self.end_headers()
        self.wfile.flush()
        for chunk in chunks:
            self.wfile.write(chunk)
            self.wfile.flush()
            if pause:
                time.sleep(pause)

    def hold(self, seconds: float = 4.0) -> None:
        """Keep the stream open until the client leaves (seen by a failing comment write)."""
        for _ in range(int(seconds / 0.1)):
            if self.server.stopping.wait(0.1):
                return
            try:
                self.wfile.write(b":\n")
                self.wfile.flush()
            except OSError:
                return


def basic(h: Handler, nth: int, query: dict[str, str]) -> None:
    h.stream(
        b": a comment\n\nid: 1\ndata: one\n\n",
        b"event: custom\ndata: two\ndata: lines\n\nid: 2\ndata:  two spaces\n\n",
        b"data\n\nid\ndata: no id\n\n",
        b"event: done\ndata: end\n\ndata: after close\n\n",
    )
    h.hold()


def drop(h: Handler, nth: int, query: dict[str, str]) -> None:
    if nth == 1:
        # The unfinished event, and its id, are lost with the connection.
        h.stream(b"retry: 50\n\nid: 1\ndata: a\n\nid: 2\ndata: b\n\nid: 3\ndata: partial")
    else:
        h.stream(b"data: c\n\nevent: done\ndata: x\n\n")
        h.hold()


def oddid(h: Handler, nth: int, query: dict[str, str]) -> None:
    if nth == 1:
        h.stream("retry: 50\n\nid: é 1\ndata: a\n\n".encode())
    else:
        h.stream(b"event: done\ndata: x\n\n")
        h.hold()


def utf8(h: Handler, nth: int, query: dict[str, str]) -> None:
    h.stream(
        b"\xef\xbb\xbfdata: caf\xc3",
        b"\xa9\r",
        b"\ndata: \xe2\x82",
        b"\xac \xff \xed\xa0\x80 end\r\rdata:\xf0\x9f",
        b"\x98\x80\n\n: x\r",
        b"\nid: \xe2\x80\xa8\n\nevent: done\ndata: x\n\n",
        pause=0.03,
    )
    h.hold()


def poll(h: Handler, nth: int, query: dict[str, str]) -> None:
    """Each response holds one event and ends, as a long-polling server answers."""
    if nth <= 3:
        h.stream(f"id: {nth}\ndata: p{nth}\n\n".encode())
    else:
        h.stream(b"event: done\ndata: x\n\n")
        h.hold()


def vector(h: Handler, nth: int, query: dict[str, str]) -> None:
    """One spec vector's chunks, each flushed on its own, then the end of the stream."""
    h.stream(*_chunks(_vector_file(query["f"])[int(query["i"])]), pause=0.003)


# Event types that a listener registry keyed by plain-object properties would trip on.
PROTO_NAMES = ["__proto__", "constructor", "toString", "hasOwnProperty", "valueOf", "isPrototypeOf",
               "__defineGetter__"]


def protonames(h: Handler, nth: int, query: dict[str, str]) -> None:
    """One event of each Object.prototype name, a message, the same again, then done."""
    named = "".join(f"event: {n}\ndata: {n}\n\n" for n in PROTO_NAMES).encode()
    h.stream(named, b"data: between\n\n", named, b"event: done\ndata: end\n\n", pause=0.01)
    h.hold()


def moved(h: Handler, nth: int, query: dict[str, str]) -> None:
    """The first request is redirected to another origin (localhost for 127.0.0.1), which
    sends one event and ends the stream; the reconnection, wherever it goes, gets the rest."""
    if nth == 1:
        h.send_response(307)
        h.send_header("Location", f"http://localhost:{h.server.server_address[1]}{h.path}")
        h.send_header("Content-Length", "0")
        h.end_headers()
    elif nth == 2:
        h.stream(b"retry: 50\n\ndata: a\n\n")
    else:
        h.stream(b"data: b\n\nevent: done\ndata: x\n\n")
        h.hold()


def oversize(h: Handler, nth: int, query: dict[str, str]) -> None:
    """An event, then a line (``kind=line``) or an event (``kind=event``) of ``n`` characters,
    in 64 KiB chunks, then nothing more: the polyfill's caps must end it."""
    n = int(query["n"])
    if query["kind"] == "line":
        big = b"data: " + b"x" * (n - 6)
    else:
        line = b"data: " + b"y" * 99 + b"\n"  # 100 characters of data each
        big = line * (n // 100)
    h.stream(b"data: a\n\n", *(big[i : i + 65536] for i in range(0, len(big), 65536)), pause=0.001)
    h.hold()


@functools.lru_cache
def _vector_file(name: str) -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = json.loads((VECTORS / name).read_text())["vectors"]
    return vectors


def _chunks(v: dict[str, Any]) -> list[bytes]:
    return [c.encode() if isinstance(c, str) else bytes.fromhex(c["hex"]) for c in v["chunks"]]


STREAMS: dict[str, Callable[[Handler, int, dict[str, str]], None]] = {
    "basic": basic,
    "drop": drop,
    "oddid": oddid,
    "utf8": utf8,
    "poll": poll,
    "vector": vector,
    "protonames": protonames,
    "moved": moved,
    "oversize": oversize,
}

PAGE = """<!doctype html><meta charset="utf-8"><title>polyfill</title>
<script src="/eventsource.min.js"></script><script src="/harness.js"></script>"""

# run(url, options) records what one EventSource does until a "done" event, an error in
# CLOSED state, options.errors error events, or options.timeout ms; then closes it and
# answers the log and the requests the server saw for that client key.
HARNESS = r"""
window.run = function (url, options) {
  options = options || {};
  return new Promise(function (resolve) {
    var log = [], errors = 0, finished = false;
    var es = new window[options.ctor || 'EventSource'](url, options.init);
    function finish(why) {
      if (finished) return;
      finished = true;
      es.close();
      log.push(['end', why, es.readyState]);
      setTimeout(function () {
        var x = new XMLHttpRequest();
        x.open('GET', '/log?k=' + options.key);
        x.onload = function () {
          resolve({log: log, requests: JSON.parse(x.responseText), url: es.url});
        };
        x.send();
      }, options.settle || 0);
    }
    // Stream events have five entries; open and error, two. A stream event may be named
    // "open" or "error" too (options.types), and a "done" ends the run unless options.all.
    function record(e) {
      if (e.data === undefined) return; // the connection's own open or error
      log.push([e.type, es.readyState, e.data, e.lastEventId, e.origin]);
      if (e.type === 'done' && !options.all) finish('done');
    }
    es.onopen = function (e) {
      if (e.data === undefined) log.push(['open', es.readyState]);
    };
    es.onerror = function (e) {
      if (e.data !== undefined) return;
      log.push(['error', es.readyState]);
      errors++;
      if (es.readyState === 2) finish('closed');
      else if (options.errors && errors >= options.errors) finish('errors');
    };
    es.onmessage = record;
    (options.types || ['custom', 'done']).forEach(function (t) { es.addEventListener(t, record); });
    setTimeout(function () { finish('timeout'); }, options.timeout || 5000);
  });
};

// The polyfill's parser on one vector, inside the browser: own decoder and TextDecoder.
window.parseVector = function (chunks) {
  var out = [];
  var ways = [EventSourcePolyfill._Utf8()];
  if (window.TextDecoder) {
    var td = new TextDecoder('utf-8', {ignoreBOM: true});
    ways.push(function (b) { return td.decode(b, {stream: true}); });
  }
  ways.forEach(function (decode) {
    var events = [];
    var p = new EventSourcePolyfill._Parser(function (type, data, lastEventId) {
      events.push({type: type, data: data, lastEventId: lastEventId});
    });
    chunks.forEach(function (hex) {
      var bytes = new Uint8Array(hex.length / 2);
      for (var i = 0; i < bytes.length; i++) bytes[i] = parseInt(hex.substr(2 * i, 2), 16);
      p.feed(decode(bytes));
    });
    p.end();
    out.push({events: events, lastEventId: p.lastEventId, retry: p.retry});
  });
  return out;
};
"""


@pytest.fixture(scope="module")
def server() -> Iterator[Scripted]:
    srv = Scripted(free_port())
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.stopping.set()
        srv.shutdown()
        srv.server_close()
        thread.join(10)


@pytest.fixture(scope="module")
def pages(browser: Any, server: Scripted) -> Iterator[dict[str, Any]]:
    """One page per mode, each in its own context, loaded from the scripted server."""
    base = f"http://127.0.0.1:{server.server_address[1]}"
    contexts = []
    out = {}
    try:
        for mode in [*MODES, *EXTRA_MODES]:
            ctx = browser.new_context()
            contexts.append(ctx)
            ctx.add_init_script(removing(mode))
            page = ctx.new_page()
            page.goto(f"{base}/page")
            out[mode] = page
        yield out
    finally:
        for ctx in contexts:
            ctx.close()


def run_all(
    pages: dict[str, Any], name: str, url: str, modes: list[str] = MODES, **options: Any
) -> dict[str, Any]:
    """Run one scenario in every mode at once (one page each); answer each mode's record."""
    handles = {}
    for mode in modes:
        opts = {**options, "key": f"{name}-{mode}"}
        sep = "&" if "?" in url else "?"
        handles[mode] = pages[mode].evaluate_handle(
            "([url, opts]) => ({p: window.run(url, opts)})", [f"{url}{sep}k={opts['key']}", opts]
        )
    return {mode: handle.evaluate("h => h.p") for mode, handle in handles.items()}


def ids(requests: list[dict[str, str | None]]) -> list[str | None]:
    """The Last-Event-ID each request carried, by header or query parameter."""
    return [r["header"] or r["query"] for r in requests]


def assert_same_as_native(results: dict[str, Any], *keys: str) -> None:
    for mode in POLYFILLS:
        if mode in results:
            for key in keys:
                assert results[mode][key] == results["native"][key], f"{mode}: {key}"


def test_installs_itself_only_where_no_eventsource_exists(pages: dict[str, Any]) -> None:
    for mode, page in pages.items():
        installed = page.evaluate("window.EventSource === window.EventSourcePolyfill")
        assert installed is (mode != "native"), mode
        assert page.evaluate("typeof window.EventSourcePolyfill") == "function"


def test_fields_comments_and_odd_lines_match_native(pages: dict[str, Any], server: Scripted) -> None:
    results = run_all(pages, "basic", "/sse/basic")
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    assert results["native"]["log"] == [
        ["open", 1],
        ["message", 1, "one", "1", origin],
        ["custom", 1, "two\nlines", "1", origin],
        ["message", 1, " two spaces", "2", origin],
        ["message", 1, "", "2", origin],
        ["message", 1, "no id", "", origin],
        ["done", 1, "end", "", origin],
        ["end", "done", 2],
    ]
    assert results["native"]["url"] == f"{origin}/sse/basic?k=basic-native"
    for mode in POLYFILLS:
        assert results[mode]["url"] == f"{origin}/sse/basic?k=basic-{mode}"
    assert_same_as_native(results, "log")


def test_the_polyfill_runs_beside_a_native_eventsource(pages: dict[str, Any]) -> None:
    native = pages["native"]
    both = [
        native.evaluate(
            "([u, o]) => window.run(u, o)",
            [f"/sse/basic?k=beside-{ctor}", {"key": f"beside-{ctor}", "ctor": ctor}],
        )
        for ctor in ("EventSource", "EventSourcePolyfill")
    ]
    assert both[0]["log"][-2][0] == "done"
    assert both[1]["log"] == both[0]["log"]


def test_an_unfinished_event_is_lost_with_the_connection(pages: dict[str, Any], server: Scripted) -> None:
    results = run_all(pages, "drop", "/sse/drop")
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    assert results["native"]["log"] == [
        ["open", 1],
        ["message", 1, "a", "1", origin],
        ["message", 1, "b", "2", origin],
        ["error", 0],
        ["open", 1],
        ["message", 1, "c", "2", origin],
        ["done", 1, "x", "2", origin],
        ["end", "done", 2],
    ]
    for mode in MODES:
        sent = [(r["header"], r["query"]) for r in results[mode]["requests"]]
        assert sent == [(None, None), ("2", None)], mode
    assert_same_as_native(results, "log")


def test_an_id_unfit_for_a_header_travels_in_the_query(pages: dict[str, Any]) -> None:
    results = run_all(pages, "oddid", "/sse/oddid")
    assert [e[:4] for e in results["native"]["log"][:5]] == [
        ["open", 1],
        ["message", 1, "a", "é 1"],
        ["error", 0],
        ["open", 1],
        ["done", 1, "x", "é 1"],
    ]
    for mode in POLYFILLS:
        assert [(r["header"], r["query"]) for r in results[mode]["requests"]] == [(None, None), (None, "é 1")]
    assert_same_as_native(results, "log")


def test_an_unreachable_server_means_error_and_reconnecting(pages: dict[str, Any]) -> None:
    results = run_all(pages, "unreachable", f"http://127.0.0.1:{free_port()}/sse/none", errors=1)
    assert results["native"]["log"] == [["error", 0], ["end", "errors", 2]]
    assert_same_as_native(results, "log")


def test_utf8_line_ends_and_bom_match_native(pages: dict[str, Any], server: Scripted) -> None:
    results = run_all(pages, "utf8", "/sse/utf8")
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    assert results["native"]["log"][1:3] == [
        ["message", 1, "café\n€ \ufffd \ufffd\ufffd\ufffd end", "", origin],
        ["message", 1, "😀", "", origin],
    ]
    assert results["native"]["log"][3] == ["done", 1, "x", "\u2028", origin]
    assert_same_as_native(results, "log")


def test_long_polling_asks_again_after_each_response(pages: dict[str, Any], server: Scripted) -> None:
    assert pages["poll"].evaluate("'onprogress' in new XMLHttpRequest()") is False
    result = run_all(pages, "poll", "/sse/poll", ["poll"])["poll"]
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    assert result["log"] == [
        ["open", 1],
        ["message", 1, "p1", "1", origin],
        ["message", 1, "p2", "2", origin],
        ["message", 1, "p3", "3", origin],
        ["done", 1, "x", "3", origin],
        ["end", "done", 2],
    ]
    assert ids(result["requests"]) == [None, "1", "2", "3"]


def test_xdomainrequest_carries_cross_origin_streams(pages: dict[str, Any], server: Scripted) -> None:
    origin = f"http://localhost:{server.server_address[1]}"
    results = run_all(pages, "xdr", f"{origin}/sse/drop", ["native", "xdr"])
    # XDomainRequest sets no request header: the default Accept shows it carried the requests.
    assert [r["accept"] for r in results["xdr"]["requests"]] == ["*/*", "*/*"]
    assert results["xdr"]["log"] == results["native"]["log"]
    assert results["native"]["log"][1] == ["message", 1, "a", "1", origin]
    assert [(r["header"], r["query"]) for r in results["xdr"]["requests"]] == [(None, None), (None, "2")]
    basic = run_all(pages, "xdr-basic", f"{origin}/sse/basic", ["native", "xdr"])
    assert basic["xdr"]["log"] == basic["native"]["log"]


def _vectors() -> list[tuple[str, int, dict[str, Any]]]:
    out = []
    for path in sorted(VECTORS.glob("*.json")):
        for i, v in enumerate(json.loads(path.read_text())["vectors"]):
            out.append((path.name, i, v))
    return out


def test_parser_core_passes_the_spec_vectors_in_the_browser(pages: dict[str, Any]) -> None:
    vectors = _vectors()
    assert vectors, "no spec vectors found"
    cases = [[c.hex() for c in _chunks(v)] for _, _, v in vectors]
    for mode in ("polyfill", "legacy"):
        # Own decoder and TextDecoder where there is one (not in legacy).
        answers = pages[mode].evaluate("cases => cases.map(c => window.parseVector(c))", cases)
        for (name, i, v), got_ways in zip(vectors, answers, strict=True):
            expected = {
                "events": [{k: e[k] for k in ("type", "data", "lastEventId")} for e in v["events"]],
                "lastEventId": v["lastEventId"],
                "retry": v["retry"],
            }
            assert len(got_ways) == (2 if mode == "polyfill" else 1)
            for got in got_ways:
                if isinstance(got["retry"], float):
                    got["retry"] = int(got["retry"])
                assert got == expected or _big_retry(got, expected), f"{mode} {name}#{i} {v['name']}"


def _big_retry(got: dict[str, Any], expected: dict[str, Any]) -> bool:
    """A retry above 2^53 is a rounded double in JavaScript: compare it as one."""
    if expected["retry"] is None or got["retry"] is None:
        return False
    return {**got, "retry": float(got["retry"])} == {**expected, "retry": float(expected["retry"])}


def _bom_then_line_end(v: dict[str, Any]) -> bool:
    """Whether a vector's stream is a BOM then CR or LF, which Chromium reads oddly."""
    wire = b"".join(_chunks(v))
    return wire.startswith(b"\xef\xbb\xbf") and wire[3:4] in (b"\r", b"\n")


def test_spec_vector_streams_match_native(pages: dict[str, Any]) -> None:
    vectors = _vectors()
    assert vectors, "no spec vectors found"
    # Four at a time per page: Chromium opens at most six connections to one host.
    script = """async ([list, prefix]) => {
      const out = new Array(list.length);
      let next = 0;
      async function worker() {
        while (next < list.length) {
          const n = next++;
          const [f, i, types] = list[n];
          const key = `${prefix}-${f}-${i}`;
          const r = await window.run(`/sse/vector?f=${f}&i=${i}&k=${key}`,
                                     {key, errors: 1, timeout: 3000, types, all: true});
          out[n] = r.log;
        }
      }
      await Promise.all([worker(), worker(), worker(), worker()]);
      return out;
    }"""
    items = [[name, i, sorted({e["type"] for e in v["events"]} - {"message"})] for name, i, v in vectors]
    handles = {mode: pages[mode].evaluate_handle(f"a => ({{p: ({script})(a)}})", [items, f"v-{mode}"])
               for mode in MODES}
    results = {mode: handle.evaluate("h => h.p") for mode, handle in handles.items()}
    for (name, _, v), native in zip(vectors, results["native"], strict=True):
        assert native[-2:] == [["error", 0], ["end", "errors", 2]], (name, v["name"])
        messages = [[e[0], e[2], e[3]] for e in native if len(e) == 5]
        assert messages == [[e["type"], e["data"], e["lastEventId"]] for e in v["events"]], (name, v["name"])
    quirks = 0
    for mode in POLYFILLS:
        for (name, _, v), got, native in zip(vectors, results[mode], results["native"], strict=True):
            if mode == "legacy" and _bom_then_line_end(v):
                # XMLHttpRequest drops a leading BOM before the polyfill sees the text, so
                # the CR or LF after it ends a line, as in the standard (and as native does
                # for the same stream without the BOM). A documented difference.
                quirks += 1
                events = Decoder().feed(b"".join(_chunks(v))[3:])
                assert [[e[0], e[2], e[3]] for e in got if len(e) == 5] == [
                    [e.event, e.data, e.id] for e in events
                ], f"{mode} {name} {v['name']}"
                continue
            assert got == native, f"{mode} {name} {v['name']}"
    assert quirks >= 3  # spec/vectors/bom.json holds these


def test_event_types_named_after_object_prototype_members_match_native(
    pages: dict[str, Any], server: Scripted
) -> None:
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    named = [[n, 1, n, "", origin] for n in PROTO_NAMES]
    tail = [["done", 1, "end", "", origin], ["end", "done", 2]]
    between = ["message", 1, "between", "", origin]
    # Without listeners of those types, the events go to nobody and the stream goes on
    # (over fetch and over XMLHttpRequest); with listeners, each is delivered once, in order.
    unheard = run_all(pages, "proto-unheard", "/sse/protonames", types=["done"])
    assert unheard["native"]["log"] == [["open", 1], between, *tail]
    assert_same_as_native(unheard, "log")
    heard = run_all(pages, "proto-heard", "/sse/protonames", types=[*PROTO_NAMES, "done"])
    assert heard["native"]["log"] == [["open", 1], *named, between, *named, *tail]
    assert_same_as_native(heard, "log")
    for results in (unheard, heard):
        for mode in MODES:
            assert len(results[mode]["requests"]) == 1, mode


def test_events_after_a_redirect_carry_the_final_origin_as_native(
    pages: dict[str, Any], server: Scripted
) -> None:
    port = server.server_address[1]
    here, there = f"127.0.0.1:{port}", f"localhost:{port}"
    results = run_all(pages, "moved", "/sse/moved")
    first = [["open", 1], ["message", 1, "a", "", f"http://{there}"], ["error", 0], ["open", 1]]
    # Chromium reconnects to where the redirect led, and the origin stays that one's.
    assert results["native"]["log"] == [
        *first, ["message", 1, "b", "", f"http://{there}"], ["done", 1, "x", "", f"http://{there}"],
        ["end", "done", 2],
    ]
    assert [r["host"] for r in results["native"]["requests"]] == [here, there, there]
    for mode in POLYFILLS:
        # The polyfill's reconnection asks the URL given again (a documented difference),
        # and its events carry the origin of each connection's final URL.
        assert results[mode]["log"] == [
            *first, ["message", 1, "b", "", f"http://{here}"], ["done", 1, "x", "", f"http://{here}"],
            ["end", "done", 2],
        ], mode
        assert [r["host"] for r in results[mode]["requests"]] == [here, there, here], mode


@pytest.mark.parametrize(
    ("kind", "size", "init"),
    [
        ("line", 3000, {"maxLineSize": 1000}),
        ("event", 3000, {"maxEventSize": 1000}),
        ("line", 4 * 1024 * 1024 + 100, None),  # the default cap, 4 MiB
    ],
)
def test_a_line_or_event_over_the_cap_fails_the_connection(
    pages: dict[str, Any], server: Scripted, kind: str, size: int, init: dict[str, int] | None
) -> None:
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    url = f"/sse/oversize?kind={kind}&n={size}"
    results = run_all(pages, f"over-{kind}-{size}", url, init=init, timeout=4000)
    # Native EventSource has no cap: it keeps reading. The polyfill fails the connection
    # (error, CLOSED, no reconnection) after delivering the event before the long line.
    assert results["native"]["log"] == [["open", 1], ["message", 1, "a", "", origin], ["end", "timeout", 2]]
    for mode in POLYFILLS:
        assert results[mode]["log"] == [
            ["open", 1], ["message", 1, "a", "", origin], ["error", 2], ["end", "closed", 2]
        ], mode
        assert len(results[mode]["requests"]) == 1, mode
