"""The ``sseproto`` command as a real process: ``listen`` on the scripted server, ``publish`` on Redis."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import PYTHON, ROOT, free_port
from scripted_server import DROP, Framing, Gate, Pause, Reply, ScriptedServer, sse

from sseproto import Event
from sseproto._event import MAX_RETRY

pytestmark = pytest.mark.timeout(60)

END = Reply(204, {}, ())


@dataclass(frozen=True)
class Request:
    """A request as the server got it, body included."""

    method: str
    path: str
    headers: Mapping[str, str]  # names in lower case
    body: bytes


class AnyMethodServer(ScriptedServer):
    """The scripted server, answering any method by its script; ``log`` holds each request's
    method and body (read before the reply, so the connection closes cleanly)."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[Request] = []
        log = self.log
        base = self._httpd.RequestHandlerClass

        class Handler(base):  # type: ignore[misc,valid-type]
            def do_GET(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                log.append(Request(self.command, self.path.split("?", 1)[0], headers, body))
                super().do_GET()

            do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

        self._httpd.RequestHandlerClass = Handler

    def requests_to(self, path: str) -> list[Request]:
        return [r for r in self.log if r.path == path]


@pytest.fixture
def server() -> Iterator[AnyMethodServer]:
    with AnyMethodServer() as s:
        yield s


class Cli:
    """``python -m sseproto ARGS`` with its stdout lines arriving in a queue."""

    def __init__(self, *args: str, stdin: str | None = None) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "sseproto", *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if stdin is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.write(stdin)
            self.proc.stdin.close()
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def line(self, timeout: float = 10.0) -> str | None:
        """The next line of stdout (None at its end); a bounded wait."""
        return self.lines.get(timeout=timeout)

    def rest(self, timeout: float = 20.0) -> tuple[list[str], int, str]:
        """All remaining stdout lines, the exit status and stderr, once the process has ended."""
        status = self.proc.wait(timeout)
        out = []
        while (line := self.line()) is not None:
            out.append(line)
        assert self.proc.stderr is not None
        return out, status, self.proc.stderr.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def cli() -> Iterator[type[Cli]]:
    started: list[Cli] = []

    class Tracked(Cli):
        def __init__(self, *args: str, stdin: str | None = None) -> None:
            super().__init__(*args, stdin=stdin)
            started.append(self)

    yield Tracked
    for c in started:
        c.kill()


def test_listen_prints_events_and_reconnects(server: ScriptedServer, cli: type[Cli]) -> None:
    url = server.script(
        "/s",
        Reply(
            body=sse("retry: 10\nid: 1\nevent: greet\ndata: hello\ndata: world\n\n", "data: cut"),
            framing="close",
        ),
        Reply(body=[*sse("id: 2\ndata: back\\slash\n\n", "id: 3\ndata: half"), DROP]),
        END,
    )
    listen = cli("listen", url, "-H", "X-Token: abc", "-H", "X-Other:  two ", "--last-event-id", "0")
    out, status, err = listen.rest()
    assert out == ["greet: hello\\nworld", "message: back\\\\slash"]
    assert status == 0
    # Each reconnection and each failure is reported on stderr as it happens.
    assert err.splitlines() == [
        f"sseproto listen: reconnected to {url} (Last-Event-ID: 1)",
        f"sseproto listen: GET {url}: IncompleteRead(0 bytes read); trying again",
    ]
    seen = server.seen("/s")
    assert [r.headers.get("last-event-id") for r in seen] == ["0", "1", "2"]
    assert all(r.headers["x-token"] == "abc" and r.headers["x-other"] == "two" for r in seen)


def test_listen_reports_each_failed_attempt_and_is_quiet_with_q(
    server: ScriptedServer, cli: type[Cli]
) -> None:
    """Regression: while it could not connect, listen said nothing for as long as it tried."""
    url = f"http://127.0.0.1:{free_port()}/s"  # nothing listens there
    listen = cli("listen", url, "--timeout", "1")
    with pytest.raises(subprocess.TimeoutExpired):
        listen.proc.wait(2.5)
    listen.proc.kill()
    listen.proc.wait(10)
    assert listen.proc.stderr is not None
    err = listen.proc.stderr.read()
    tries = [line for line in err.splitlines() if line.startswith(f"sseproto listen: GET {url}: ")]
    # The first failure waits the reconnection time (3 s by default), then backs off.
    assert len(tries) >= 1 and all(line.endswith("; trying again") for line in tries), err
    quiet = cli("listen", "-q", url, "--timeout", "1")
    with pytest.raises(subprocess.TimeoutExpired):
        quiet.proc.wait(1.5)
    quiet.proc.kill()
    quiet.proc.wait(10)
    assert quiet.proc.stderr is not None and quiet.proc.stderr.read() == ""
    sent = server.script("/q", Reply(body=sse("retry: 10\nid: 1\ndata: a\n\n"), framing="close"),
                         Reply(body=sse("id: 2\ndata: b\n\n")), END)
    out, status, err = cli("listen", "-q", sent).rest()
    assert (out, status, err) == (["message: a", "message: b"], 0, "")


def test_listen_json_lines(server: ScriptedServer, cli: type[Cli]) -> None:
    url = server.script(
        "/s", Reply(body=sse("retry: 10\nid: 7\nevent: e\ndata: a\ndata: \u00e9\n\n", "data: b\n\n")), END
    )
    out, status, _ = cli("listen", "--json", url).rest()
    assert status == 0
    assert [json.loads(line) for line in out] == [
        {"event": "e", "data": "a\n\u00e9", "id": "7"},
        {"event": "message", "data": "b", "id": "7"},
    ]


def test_listen_prints_each_event_as_it_arrives(server: ScriptedServer, cli: type[Cli]) -> None:
    # The server sends the second event only after the first line has been read from the
    # process: an output or input buffer would hold it back until the gate times out.
    gate = Gate(timeout=15.0)
    url = server.script("/s", Reply(body=[b"retry: 10\ndata: one\n\n", gate, b"data: two\n\n"]), END)
    listen = cli("listen", url)
    assert listen.line(15) == "message: one"
    gate.event.set()
    out, status, _ = listen.rest()
    assert out == ["message: two"]
    assert status == 0
    assert gate.passed == [True]


def test_listen_error_status_exits_1_with_a_message(server: ScriptedServer, cli: type[Cli]) -> None:
    url = server.script("/s", Reply(503, {"Content-Type": "text/plain"}, [b"busy"], "length"))
    out, status, err = cli("listen", url).rest()
    assert (out, status) == ([], 1)
    assert "503" in err and "Traceback" not in err


def test_listen_retry_status_reconnects_through_a_503(server: ScriptedServer, cli: type[Cli]) -> None:
    busy = Reply(503, {"Content-Type": "text/plain"}, [b"busy"], "length")
    url = server.script("/s", Reply(body=sse("retry: 10\nid: 1\ndata: a\n\n")), busy,
                        Reply(body=sse("id: 2\ndata: b\n\n")), END)
    out, status, err = cli("listen", url, "--retry-status", "503").rest()
    assert (out, status) == (["message: a", "message: b"], 0)
    assert err.splitlines() == [f"sseproto listen: GET {url}: 503 Status from {url}; trying again",
                                f"sseproto listen: reconnected to {url} (Last-Event-ID: 1)"]
    assert [r.headers.get("last-event-id") for r in server.seen("/s")] == [None, "1", "1", "2"]


def test_listen_wrong_type_exits_1(server: ScriptedServer, cli: type[Cli]) -> None:
    url = server.script("/s", Reply(200, {"Content-Type": "text/html"}, [b"<html>"], "length"))
    out, status, err = cli("listen", url).rest()
    assert (out, status) == ([], 1)
    assert "text/html" in err and "Traceback" not in err


def test_ctrl_c_exits_130_quietly(server: ScriptedServer, cli: type[Cli]) -> None:
    url = server.script("/s", Reply(body=[b"data: a\n\n", Pause(60)]))
    listen = cli("listen", url)
    assert listen.line(15) == "message: a"
    listen.proc.send_signal(signal.SIGINT)
    out, status, err = listen.rest()
    assert (out, status, err) == ([], 130, "")


def test_bad_header_is_a_usage_error(cli: type[Cli]) -> None:
    out, status, err = cli("listen", "http://127.0.0.1:9/", "-H", "no-colon").rest()
    assert (out, status) == ([], 2)
    assert "Name: value" in err


def test_help_documents_the_output_format(cli: type[Cli]) -> None:
    out, status, _ = cli("listen", "--help").rest()
    text = "\n".join(out)
    assert status == 0
    assert "EVENT: DATA" in text and "--json" in text and "Last-Event-ID" in text
    assert "exit status:" in text and "--once" in text and "130" in text


@pytest.mark.redis
def test_publish_stores_the_event_and_prints_its_id(cli: type[Cli], redis_url: str) -> None:
    from sseproto.brokers.redis import RedisBroker

    channel = f"cli-{os.getpid()}-{threading.get_ident()}"
    broker = RedisBroker(redis_url)
    try:
        before = broker.publish(channel, Event("before"))
        with broker.subscribe([channel]) as live:
            out, status, err = cli("publish", "--broker", redis_url, "--channel", channel, "--event", "note",
                                   "two\nlines").rest()
            assert (status, err) == (0, "") and len(out) == 1
            sent = Event("two\nlines", "note", out[0])
            assert live.get(10) == sent
            out, status, _ = cli("publish", "--broker", redis_url, "--channel", channel, "--id", "mine",
                                 "own id").rest()
            assert (out, status) == (["mine"], 0)
            assert live.get(10) == Event("own id", id="mine")
        with broker.subscribe([channel], before.id) as sub:
            assert list(sub.replay) == [sent, Event("own id", id="mine")]  # an Iterable, by the interface
    finally:
        broker.close()


def test_publish_with_redis_down_exits_1_and_says_so(cli: type[Cli]) -> None:
    port = free_port()  # nothing listens there
    url = f"redis://:hunter2@127.0.0.1:{port}/0"
    out, status, err = cli("publish", "--broker", url, "--channel", "c", "--timeout", "2", "hello").rest()
    assert (out, status) == ([], 1)
    assert "unreachable" in err and f"127.0.0.1:{port}" in err
    assert "hunter2" not in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--broker", "http://127.0.0.1/", "--channel", "c", "x"), "redis://"),
        (("--broker", "redis://127.0.0.1:9/0", "--channel", "c", "--id", "12-3", "x"), "ids of the form"),
        (("--broker", "redis://127.0.0.1:9/0", "--channel", "c", "--event", "a\nb", "x"), "CR or LF"),
        (("--broker", "redis://127.0.0.1:9/0", "--channel", "", "x"), "channel"),
    ],
)
def test_publish_usage_errors_exit_2(cli: type[Cli], args: tuple[str, ...], message: str) -> None:
    out, status, err = cli("publish", *args).rest()
    assert (out, status) == ([], 2)
    assert message in err and "Traceback" not in err


# -- regressions found by hostile probes -------------------------------------------------

# What a terminal acts on: C0 but tab (LF only as the end of an output line), DEL, C1.
TERMINAL_CONTROLS = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")
HOSTILE = [
    "event: \x1b]0;pwned\x07\ndata: title\n\n",  # a window title change
    "data: \x1b]52;c;SGVsbG8=\x07\n\n",  # OSC 52: a clipboard write
    "data: \x1b[2J\x1b[H\n\n",  # clear the screen
    "data: \u009b31mred\u009b0m \u0085 \x7f\x00 tab\there \u00e9\u6771\n\n",  # C1 CSI, NEL, DEL, NUL
]


def test_listen_makes_terminal_controls_visible_and_inert(server: ScriptedServer, cli: type[Cli]) -> None:
    """Server bytes were written raw: OSC 52, CSI 2J and title changes reached the terminal."""
    url = server.script("/s", Reply(body=sse("retry: 10\n", *HOSTILE, "data: a\\b\ndata: c\n\n")), END)
    out, status, err = cli("listen", url).rest()
    assert (status, err) == (0, "")
    assert out == [
        "\\x1b]0;pwned\\x07: title",
        "message: \\x1b]52;c;SGVsbG8=\\x07",
        "message: \\x1b[2J\\x1b[H",
        "message: \\x9b31mred\\x9b0m \\x85 \\x7f\\x00 tab\there \u00e9\u6771",
        "message: a\\\\b\\nc",  # the format as before: backslash doubled, line break as \n
    ]
    assert not any(TERMINAL_CONTROLS.search(line) for line in out)


def test_listen_json_escapes_del_and_c1(server: ScriptedServer, cli: type[Cli]) -> None:
    """--json passed U+009B (a one-character CSI) and DEL raw: ensure_ascii=False escapes only C0."""
    url = server.script("/s", Reply(body=sse("retry: 10\n", *HOSTILE)), END)
    out, status, err = cli("listen", "--json", url).rest()
    assert (status, err) == (0, "")
    assert not any(TERMINAL_CONTROLS.search(line) for line in out)
    assert [json.loads(line)["data"] for line in out] == [
        "title", "\x1b]52;c;SGVsbG8=\x07", "\x1b[2J\x1b[H",
        "\u009b31mred\u009b0m \u0085 \x7f\x00 tab\there \u00e9\u6771",
    ]
    assert json.loads(out[0])["event"] == "\x1b]0;pwned\x07"
    assert "\\u009b31m" in out[3] and "\u00e9\u6771" in out[3]  # C1 escaped; other text stays readable


def test_listen_error_message_makes_controls_visible(server: ScriptedServer, cli: type[Cli]) -> None:
    """The reason phrase of a status line is the server's text, printed in the error message."""
    busy = Reply(503, {"Content-Type": "text/plain"}, [b"x"], "length", reason="\x1b]0;pwned\x07")
    url = server.script("/s", busy)
    out, status, err = cli("listen", url).rest()
    assert (out, status) == ([], 1)
    assert "503 \\x1b]0;pwned\\x07" in err
    assert not TERMINAL_CONTROLS.search(err.rstrip("\n"))


def test_listen_survives_a_huge_retry(server: ScriptedServer, cli: type[Cli]) -> None:
    """retry: 2**64-1 printed an OverflowError traceback: the wait is clamped, so it waits."""
    url = server.script("/s", Reply(body=sse(f"retry: {MAX_RETRY}\ndata: a\n\n"), framing="close"))
    listen = cli("listen", url)
    assert listen.line(15) == "message: a"
    server.wait_requests("/s", 1)
    with pytest.raises(subprocess.TimeoutExpired):
        listen.proc.wait(1.0)  # waiting to reconnect, as the server asked, not dead
    listen.proc.send_signal(signal.SIGINT)
    out, status, err = listen.rest()
    assert (out, status, err) == ([], 130, "")
    assert len(server.seen("/s")) == 1


def test_listen_limit_error_names_the_option(server: ScriptedServer, cli: type[Cli]) -> None:
    url = server.script("/s", Reply(body=[b"data: ok\n\n", b"data: " + b"x" * 200 + b"\n\n"]))
    out, status, err = cli("listen", url, "--max-line-size", "100").rest()
    assert (out, status) == (["message: ok"], 1)
    assert "--max-line-size 100" in err and "Traceback" not in err and "EventSource" not in err


@pytest.mark.parametrize("forward", [False, True], ids=["default", "forward-headers"])
def test_listen_headers_stay_with_their_origin(server: ScriptedServer, cli: type[Cli], forward: bool) -> None:
    with ScriptedServer() as other:  # another port: another origin
        start = server.script("/old", Reply(307, {"Location": other.url("/new")}, (), "length"))
        other.script("/new", Reply(body=sse("retry: 10\ndata: a\n\n")), END)
        flags = ["--forward-headers"] if forward else []
        out, status, _ = cli("listen", start, "-H", "X-Api-Key: k", *flags).rest()
        assert (out, status) == (["message: a"], 0)
        assert [r.headers.get("x-api-key") for r in server.seen("/old")] == ["k", "k"]
        assert [r.headers.get("x-api-key") for r in other.seen("/new")] == ["k" if forward else None] * 2


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf"])
def test_bad_timeout_is_a_usage_error(cli: type[Cli], value: str) -> None:
    out, status, err = cli("listen", "http://127.0.0.1:9/", "--timeout", value).rest()
    assert (out, status) == ([], 2)
    assert "seconds > 0" in err and "Traceback" not in err


# -- any method and body, one-shot streams ----------------------------------------------

# An LLM API's stream: tokens, then [DONE], no ids; the server ends the response.
TOKENS = [f'data: {{"token": "{t}"}}\n\n' for t in ("Hel", "lo", "!")] + ["data: [DONE]\n\n"]
AGAIN = Reply(body=sse("data: sent again\n\n"))  # what a second request would get


def test_listen_posts_method_body_and_headers(server: AnyMethodServer, cli: type[Cli]) -> None:
    url = server.script("/chat", Reply(body=sse("data: ok\n\n")), AGAIN)
    out, status, err = cli("listen", "-X", "POST", "-d", '{"q": 1}', "-H", "Content-Type: application/json",
                           "-H", "X-Token: t", url).rest()
    assert (out, status, err) == (["message: ok"], 0, "")
    [request] = server.requests_to("/chat")
    assert (request.method, request.body) == ("POST", b'{"q": 1}')
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-token"] == "t" and request.headers["accept"] == "text/event-stream"


@pytest.mark.parametrize("framing", ["chunked", "close"])
def test_listen_llm_style_post_is_one_request_and_exits_0(
    server: AnyMethodServer, cli: type[Cli], framing: Framing
) -> None:
    url = server.script("/v1/chat", Reply(body=sse("retry: 10\n", *TOKENS), framing=framing), AGAIN)
    out, status, err = cli("listen", "-X", "POST", "-d", '{"stream": true}', url).rest()
    assert out == ['message: {"token": "Hel"}', 'message: {"token": "lo"}', 'message: {"token": "!"}',
                   "message: [DONE]"]
    assert (status, err) == (0, "")
    assert [r.method for r in server.requests_to("/v1/chat")] == ["POST"]


def test_listen_data_without_method_posts(server: AnyMethodServer, cli: type[Cli]) -> None:
    """As curl: -d without -X is a POST."""
    url = server.script("/s", Reply(body=sse(*TOKENS)), AGAIN)
    out, status, _ = cli("listen", "-d", "q=1", url).rest()
    assert (len(out), status) == (4, 0)
    assert [(r.method, r.body) for r in server.requests_to("/s")] == [("POST", b"q=1")]


def test_listen_post_with_ids_is_sent_again_with_the_same_body(
    server: AnyMethodServer, cli: type[Cli]
) -> None:
    url = server.script(
        "/jobs",
        Reply(body=sse("retry: 10\nid: 1\ndata: a\n\n")),
        Reply(body=[*sse("id: 2\ndata: b\n\n", "data: cut"), DROP]),
        END,
    )
    out, status, err = cli("listen", "-q", "-X", "POST", "-d", "job=7", url).rest()
    assert (out, status, err) == (["message: a", "message: b"], 0, "")
    seen = server.requests_to("/jobs")
    assert [(r.method, r.body, r.headers.get("last-event-id")) for r in seen] == [
        ("POST", b"job=7", None), ("POST", b"job=7", "1"), ("POST", b"job=7", "2")]


def test_listen_post_without_ids_that_drops_exits_1(server: AnyMethodServer, cli: type[Cli]) -> None:
    """What was cut cannot be resumed, and the POST is not sent again: an error, not a quiet end."""
    url = server.script("/s", Reply(body=[*sse("retry: 10\ndata: a\n\n", "data: half"), DROP]), AGAIN)
    out, status, err = cli("listen", "-X", "POST", url).rest()
    assert (out, status) == (["message: a"], 1)
    assert "POST" in err and "Traceback" not in err
    assert len(server.requests_to("/s")) == 1


def test_listen_reconnect_sends_a_post_without_ids_again(server: AnyMethodServer, cli: type[Cli]) -> None:
    url = server.script("/s", Reply(body=sse("retry: 10\ndata: a\n\n")), Reply(body=sse("data: b\n\n")), END)
    out, status, _ = cli("listen", "-X", "POST", "-d", "x", "--reconnect", url).rest()
    assert (out, status) == (["message: a", "message: b"], 0)
    assert [(r.method, r.body) for r in server.requests_to("/s")] == [("POST", b"x")] * 3


def test_listen_once_get_is_one_request(server: AnyMethodServer, cli: type[Cli]) -> None:
    url = server.script("/s", Reply(body=sse("retry: 10\nid: 1\ndata: a\n\n", "id: 2\ndata: b\n\n")), AGAIN)
    out, status, err = cli("listen", "--once", url).rest()
    assert (out, status, err) == (["message: a", "message: b"], 0, "")
    assert [r.method for r in server.requests_to("/s")] == ["GET"]


def test_listen_once_drop_exits_1(server: AnyMethodServer, cli: type[Cli]) -> None:
    url = server.script("/s", Reply(body=[*sse("retry: 10\nid: 1\ndata: a\n\n"), DROP]), AGAIN)
    out, status, err = cli("listen", "--once", url).rest()
    assert (out, status) == (["message: a"], 1)
    assert "Traceback" not in err
    assert len(server.requests_to("/s")) == 1


def test_listen_once_refused_exits_1(server: AnyMethodServer, cli: type[Cli]) -> None:
    """A --retry-status answer with --once: one attempt, refused, is a failure (exit 1), not a quiet end."""
    busy = Reply(503, {"Content-Type": "text/plain"}, [b"busy"], "length")
    url = server.script("/s", busy, AGAIN)
    out, status, err = cli("listen", "--once", "--retry-status", "503", url).rest()
    assert (out, status) == ([], 1)
    assert "503" in err and "--once" in err and "Traceback" not in err
    assert len(server.requests_to("/s")) == 1


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_listen_one_shot_without_a_server_exits_1(cli: type[Cli], method: str) -> None:
    url = f"http://127.0.0.1:{free_port()}/s"  # nothing listens there
    flags = ["--once"] if method == "GET" else ["-X", "POST"]
    out, status, err = cli("listen", *flags, url).rest()
    assert (out, status) == ([], 1)
    assert f"{method} {url}" in err and "Traceback" not in err


BODY_TEXT = '{"messages": [\n  {"role": "user", "content": "caf\u00e9"}\n]}\n'


def test_listen_body_from_a_file(server: AnyMethodServer, cli: type[Cli], tmp_path: Path) -> None:
    body = b"\x00\xff binary\r\nlines\n"  # sent as is: no newline stripping, no decoding
    path = tmp_path / "body.bin"
    path.write_bytes(body)
    url = server.script("/s", Reply(body=sse(*TOKENS)), AGAIN)
    out, status, _ = cli("listen", "-d", f"@{path}", url).rest()
    assert (len(out), status) == (4, 0)
    assert [(r.method, r.body) for r in server.requests_to("/s")] == [("POST", body)]


@pytest.mark.parametrize("arg", ["-", "@-"])
def test_listen_body_from_stdin(server: AnyMethodServer, cli: type[Cli], arg: str) -> None:
    url = server.script("/s", Reply(body=sse(*TOKENS)), AGAIN)
    out, status, _ = cli("listen", "-X", "PUT", "-d", arg, "--once", url, stdin=BODY_TEXT).rest()
    assert (len(out), status) == (4, 0)
    assert [(r.method, r.body) for r in server.requests_to("/s")] == [("PUT", BODY_TEXT.encode())]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("-X", "PO ST"), "HTTP method"),
        (("-d", "@/nonexistent/body.json"), "cannot read the body"),
        (("--once", "--reconnect"), "not allowed with"),
    ],
)
def test_listen_usage_errors_exit_2(cli: type[Cli], args: tuple[str, ...], message: str) -> None:
    out, status, err = cli("listen", *args, "http://127.0.0.1:9/").rest()
    assert (out, status) == ([], 2)
    assert message in err and "Traceback" not in err
