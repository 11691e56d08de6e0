"""docs/deployment.md, run as written: each of its recipes as real processes.

Every fenced block of the page is marked ``<!-- test: NAME -->`` and read from the file
here, so the page and these tests cannot drift apart. Commands run as written except for
what a test cannot keep: the port ``8000`` becomes a free one, the Redis URL that of a
private redis-server; ``gunicorn`` and ``waitress-serve`` run as ``python -m gunicorn`` and
``python -m waitress`` under this interpreter (the same programs). The Django tests add
``SSE_HEARTBEAT`` (0.5 s, so a vanished client is noticed quickly) and, where they test
the limit, ``SSE_MAX_CONNECTIONS`` to the environment; no command sets those.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import PYTHON, ROOT, free_port, missing, wait_for_port, wait_until
from servers import Server, stop

from sseproto import Event
from sseproto.client import EventSource

pytestmark = pytest.mark.timeout(120)

DOC = ROOT / "docs" / "deployment.md"
MARKED = re.compile(r"<!-- test: (?P<name>[\w.-]+) -->\n```(?P<lang>\w+)\n(?P<body>.*?)\n```\n", re.S)
PORT = "127.0.0.1:8000"  # where every command of the page listens
REDIS = "redis://127.0.0.1:6379/0"
# The names of the page's blocks, each run by a test below.
RECIPES = {"install", "app.py", "flask-gthread", "flask-gevent", "flask-waitress", "flask-listen", "publish",
           "django-gthread", "django-listen", "django-redis", "nginx"}
HEARTBEAT = {"SSE_HEARTBEAT": "0.5"}


def blocks() -> dict[str, str]:
    """The marked blocks of the page, by name."""
    return {m["name"]: m["body"] for m in MARKED.finditer(DOC.read_text())}


def command(name: str, port: int, **replace: str) -> tuple[list[str], dict[str, str]]:
    """The one-line command of block ``name`` on ``port``: its argv, and the variables it assigns."""
    text = blocks()[name]
    assert "\n" not in text and text.count(PORT) == 1, text
    text = text.replace(PORT, f"127.0.0.1:{port}")
    for old, new in replace.items():
        assert text.count(old) == 1, (old, text)
        text = text.replace(old, new)
    words = shlex.split(text)
    assigned = {}
    while re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        key, _, value = words.pop(0).partition("=")
        assigned[key] = value
    programs = {"gunicorn": [PYTHON, "-m", "gunicorn"], "waitress-serve": [PYTHON, "-m", "waitress"],
                "curl": [curl()]}
    return programs[words[0]] + words[1:], assigned


def curl() -> str:
    binary = shutil.which("curl")
    if binary is None:
        missing("curl")
    return str(binary)


def environment(**extra: str) -> dict[str, str]:
    """This process's environment without settings of ours or the frameworks', plus ``extra``."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("SSE_", "FLASK_", "DJANGO_"))}
    return {**inherited, "PYTHONPATH": str(ROOT), **extra}


def needs_django() -> None:
    try:
        importlib.metadata.version("django")
    except importlib.metadata.PackageNotFoundError:
        missing("the django package")


@contextmanager
def serving(name: str, cwd: Path, *, env: dict[str, str] | None = None,
            replace: dict[str, str] | None = None) -> Iterator[Server]:
    """The server of block ``name``, run in ``cwd`` on a free port until the block ends, then stopped."""
    port = free_port()
    argv, assigned = command(name, port, **(replace or {}))
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(argv, cwd=cwd, env=environment(**(env or {}), **assigned), stdout=log, stderr=log,
                            start_new_session=True)
    server = Server(name, port, proc)
    try:
        try:
            wait_for_port(port, proc)
        except BaseException:
            log.seek(0)
            print(log.read().decode(errors="replace")[-4000:])
            raise
        yield server
    finally:
        stop(server)
        log.close()


class Listener:
    """An EventSource read by a thread: the events it delivered, and the statuses it opened with."""

    def __init__(self, url: str, **options: Any) -> None:
        self.events: list[Event] = []
        self.opened: list[int] = []
        self.source = EventSource(url, timeout=(5, 10), on_open=lambda r: self.opened.append(r.status_code),
                                  **options)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        assert wait_until(lambda: self.opened, 10), f"no stream from {url}"

    def _read(self) -> None:
        for event in self.source:
            self.events.append(event)

    def got(self, n: int) -> list[Event]:
        """The first ``n`` events, waiting for them (bounded)."""
        assert wait_until(lambda: len(self.events) >= n, 10), [e.data for e in self.events]
        return self.events[:n]

    def close(self) -> None:
        self.source.close()
        self.thread.join(5)


class RawStream:
    """One stream on its own connection, read to its end by a thread: its status, and how it ended."""

    def __init__(self, url: str) -> None:
        self.response = requests.get(url, stream=True, timeout=(5, 10))
        self.status = self.response.status_code
        self.body = b""
        self.ended: str | None = None  # "clean" (the last chunk came), or the error that cut it
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for chunk in self.response.iter_content(chunk_size=None):
                self.body += chunk
            self.ended = "clean"
        except Exception as exc:
            self.ended = repr(exc)

    def close(self) -> None:
        self.response.close()
        self.thread.join(5)


def open_when_free(url: str, seconds: float = 5) -> RawStream:
    """A stream of ``url``, opened as soon as the endpoint has a free slot (503 until then; bounded)."""
    deadline = time.monotonic() + seconds
    while True:
        stream = RawStream(url)
        if stream.status == 200:
            return stream
        stream.close()
        assert stream.status == 503 and time.monotonic() < deadline, stream.status
        time.sleep(0.05)


def channel() -> str:
    return "ch-" + uuid.uuid4().hex[:8]


def publish(base: str, chan: str, data: str, **headers: str) -> requests.Response:
    return requests.post(f"{base}/publish/{chan}", data=data.encode(), headers=headers, timeout=10)


def published_id(base: str, chan: str, data: str) -> str:
    r = publish(base, chan, data)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def stop_draining(server: Server, streams: list[RawStream]) -> float:
    """SIGTERM the server with ``streams`` open; the seconds until it exited. Every stream
    must have ended cleanly (its last chunk sent), not been cut."""
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(20)
    took = time.monotonic() - started
    for stream in streams:
        stream.thread.join(5)
        assert stream.ended == "clean", stream.ended
    return took


# --- The page itself -------------------------------------------------------------------------


def test_every_block_of_the_page_is_marked_and_run() -> None:
    text = DOC.read_text()
    assert text.count("```") == 2 * len(MARKED.findall(text)), "a fenced block without a test marker"
    names = [m["name"] for m in MARKED.finditer(text)]
    assert len(names) == len(set(names)) and set(names) == RECIPES


def test_the_install_line_names_extras_that_exist_and_packages_that_are_here() -> None:
    """The page's ``pip install`` line is checked, not run (no network in tests): its extras
    are sseproto's, and every package it names is installed, so the recipes below ran on them."""
    words = shlex.split(blocks()["install"])
    assert words[:2] == ["pip", "install"]
    project, *others = words[2:]
    name, extras = re.fullmatch(r"(\w+)\[([\w,]+)\]", project).groups()  # type: ignore[union-attr]
    assert name == "sseproto"
    optional = (ROOT / "pyproject.toml").read_text().split("[project.optional-dependencies]")[1]
    for extra in extras.split(","):
        assert re.search(rf"^{extra} = \[", optional, re.M), extra
    for package in others:
        try:
            importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            missing(f"the {package} package")


def load(path: Path, name: str, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Any:
    """Module ``path`` imported afresh under ``name``, with only ``env`` of our settings set."""
    for key in list(os.environ):
        if key.startswith(("SSE_", "FLASK_", "DJANGO_")):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("recipe", ["flask-gthread", "flask-gevent", "flask-waitress", "django-gthread",
                                    "django-redis"])
def test_each_command_keeps_the_stream_limit_below_what_its_server_holds(
    recipe: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The limit each command gives the app (its own variable, or the Django settings'
    default) uses most of the server's threads or connections, and leaves some for pages and
    publishing."""
    argv, assigned = command(recipe, 8000)
    options = dict(re.findall(r"--([\w-]+)[= ](\d+)", " ".join(argv)))
    held = int(options.get("threads") or options["worker-connections"])
    if recipe.startswith("flask"):
        (tmp_path / "app.py").write_text(blocks()["app.py"] + "\n")
        app = load(tmp_path / "app.py", "deploy_doc_app", monkeypatch, assigned)
        limit = app.sse.endpoint.options.max_connections
        assert limit == int(assigned["FLASK_SSE_MAX_CONNECTIONS"])  # the variable reaches the setting
    else:
        needs_django()
        path = ROOT / "examples" / "django_project" / "mysite" / "settings.py"
        settings = load(path, "deploy_doc_settings", monkeypatch, assigned)
        limit = settings.SSE_MAX_CONNECTIONS
    assert 0.75 * held <= limit < held


# --- The Flask app under gunicorn (threads, gevent) and waitress ----------------------------


@pytest.mark.parametrize("recipe", ["flask-gthread", "flask-gevent", "flask-waitress"])
def test_flask_app_under_each_server(recipe: str, tmp_path: Path) -> None:
    """The page's app.py under the page's command: its curl lines stream and publish, a client
    resumes from its last id, other sites may not post, and (gunicorn with
    ``-c python:sseproto.gunicorn``) SIGTERM ends open streams cleanly at once."""
    (tmp_path / "app.py").write_text(blocks()["app.py"] + "\n")
    with serving(recipe, tmp_path) as server:
        listen_argv, _ = command("flask-listen", server.port)
        curl_listen = subprocess.Popen(listen_argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            out = read_until(curl_listen, b"retry: ")
            event_id = curl_publish(server.port)
            out += read_until(curl_listen, b"data: hello\n")
            assert f"id: {event_id}\ndata: hello\n".encode() in out
        finally:
            curl_listen.kill()
            curl_listen.wait(5)

        chan = channel()
        first, *missed = [published_id(server.url, chan, f"n{i}") for i in range(3)]
        listener = Listener(f"{server.url}/sse/stream?channel={chan}", last_event_id=first)
        try:
            assert [e.id for e in listener.got(2)] == missed
            live = published_id(server.url, chan, "live")
            assert listener.got(3)[2].id == live
        finally:
            listener.close()

        assert publish(server.url, chan, "x", **{"Sec-Fetch-Site": "cross-site"}).status_code == 403
        assert publish(server.url, chan, "x", Origin="https://elsewhere.example").status_code == 403
        assert publish(server.url, chan, "x", **{"Sec-Fetch-Site": "same-origin"}).status_code == 201

        if recipe != "flask-waitress":
            streams = [RawStream(f"{server.url}/sse/stream?channel={chan}") for _ in range(3)]
            assert [s.status for s in streams] == [200] * 3
            # --graceful-timeout is 30 s: without the hook the worker would wait for them.
            assert stop_draining(server, streams) < 5


def curl_publish(port: int) -> str:
    """Run the page's ``curl -d`` line against ``port``; the id it printed."""
    argv, _ = command("publish", port)
    done = subprocess.run(argv, capture_output=True, timeout=10, check=True)
    return str(json.loads(done.stdout)["id"])


def read_until(proc: subprocess.Popen[bytes], marker: bytes, seconds: float = 10) -> bytes:
    """What ``proc`` writes to stdout up to ``marker`` (bounded: its stdout is then closed)."""
    assert proc.stdout is not None
    out = b""
    timer = threading.Timer(seconds, proc.kill)
    timer.start()
    try:
        while marker not in out:
            byte = proc.stdout.read(1)
            if not byte:
                break
            out += byte
    finally:
        timer.cancel()
    assert marker in out, out
    return out


# --- The Django project under gunicorn gthread ------------------------------------------------


@pytest.fixture(scope="module")
def django_site() -> Iterator[Server]:
    needs_django()
    with serving("django-gthread", ROOT, env=HEARTBEAT) as server:
        yield server


def test_django_streams_get_what_the_publish_view_publishes(django_site: Server) -> None:
    """Both stream URLs (the /events mount and the Django view) carry the published events;
    the page opens the mounted one; the curl lines of the page work on it."""
    base = django_site.url
    page = requests.get(base + "/", timeout=10)
    assert page.status_code == 200 and 'new EventSource("/events?channel=news")' in page.text

    chan = channel()
    mounted = Listener(f"{base}/events?channel={chan}")
    view = Listener(f"{base}/stream/{chan}")
    try:
        r = requests.post(f"{base}/publish/{chan}?event=headline", data=b"line one\nline two", timeout=10)
        assert r.status_code == 201
        for listener in (mounted, view):
            (event,) = listener.got(1)
            assert (event.event, event.data, event.id) == ("headline", "line one\nline two", r.json()["id"])
        assert view.source.reconnection_time == 3.0  # the stream opened with retry: 3000
    finally:
        mounted.close()
        view.close()

    listen_argv, _ = command("django-listen", django_site.port)
    curl_listen = subprocess.Popen(listen_argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        read_until(curl_listen, b"retry: ")
        event_id = curl_publish(django_site.port)
        assert f"id: {event_id}\ndata: hello\n".encode() in read_until(curl_listen, b"data: hello\n")
    finally:
        curl_listen.kill()
        curl_listen.wait(5)


def test_django_streams_replay_after_last_event_id(django_site: Server) -> None:
    base = django_site.url
    chan = channel()
    first, *missed = [published_id(base, chan, f"n{i}") for i in range(4)]
    for url in (f"{base}/events?channel={chan}", f"{base}/stream/{chan}"):
        listener = Listener(url, last_event_id=first)
        try:
            assert [(e.id, e.data) for e in listener.got(3)] == [(missed[0], "n1"), (missed[1], "n2"),
                                                                (missed[2], "n3")]
        finally:
            listener.close()
    # An id the channel never had: the gap event, then everything retained.
    listener = Listener(f"{base}/stream/{chan}", last_event_id="not-an-id")
    try:
        gap, *replayed = listener.got(5)
        assert gap.event == "sseproto.gap" and json.loads(gap.data)["channels"] == [chan]
        assert [e.id for e in replayed] == [first, *missed]
    finally:
        listener.close()


def test_django_publish_view_refuses_other_sites_and_bad_input(django_site: Server) -> None:
    base = django_site.url
    chan = channel()
    host = f"http://127.0.0.1:{django_site.port}"
    assert publish(base, chan, "x", **{"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert publish(base, chan, "x", **{"Sec-Fetch-Site": "same-site"}).status_code == 403
    assert publish(base, chan, "x", Origin="https://elsewhere.example").status_code == 403
    assert publish(base, chan, "x", **{"Sec-Fetch-Site": "same-origin", "Origin": host}).status_code == 201
    assert publish(base, chan, "x", Origin=host).status_code == 201  # a browser without Sec-Fetch-Site
    assert requests.post(f"{base}/publish/{chan}?event=bad%0Atype", data=b"x", timeout=10).status_code == 400
    assert publish(base, "bad%20name", "x").status_code == 400
    assert requests.get(f"{base}/publish/{chan}", timeout=10).status_code == 405
    assert requests.get(f"{base}/stream/bad%20name", timeout=10).status_code == 400
    assert requests.get(f"{base}/events?channel=bad%20name", timeout=10).status_code == 400


@pytest.mark.browser
def test_django_page_in_chromium_publishes_and_shows_the_stream(browser: Any, django_site: Server) -> None:
    """The page's own POST passes the publish view's check (Chromium marks it same-origin) and
    its EventSource on the /events mount shows the event; a POST from another site's page
    (here http://localhost:port, a different site from 127.0.0.1) publishes nothing."""
    chan = channel()
    watcher = Listener(f"{django_site.url}/events?channel={chan}")
    page = browser.new_page()
    try:
        page.goto(django_site.url + "/")
        page.wait_for_function("typeof source !== 'undefined' && source.readyState === 1", timeout=10_000)
        page.fill("input[name=text]", "from the page")
        page.click("button")
        page.wait_for_function("document.querySelectorAll('#got li').length === 1", timeout=10_000)
        assert page.inner_text("#got li") == "from the page"

        page.goto(f"http://localhost:{django_site.port}/")
        sent = page.evaluate("""(url) => fetch(url, {method: "POST", body: "forged", mode: "no-cors"})
                                  .then(() => true)""", f"{django_site.url}/publish/{chan}")
        assert sent
        marker = published_id(django_site.url, chan, "after")
        assert [(e.id, e.data) for e in watcher.got(1)] == [(marker, "after")]  # nothing forged before it
    finally:
        page.close()
        watcher.close()


@contextmanager
def django_with_limit(streams: int) -> Iterator[Server]:
    needs_django()
    with serving("django-gthread", ROOT, env={**HEARTBEAT, "SSE_MAX_CONNECTIONS": str(streams)}) as server:
        yield server


def test_django_client_disconnect_frees_its_stream_and_sigterm_ends_the_rest() -> None:
    """Both stream URLs count against one limit; a client that goes away gives its slot back
    within a heartbeat or two; SIGTERM ends the open streams cleanly, at once."""
    with django_with_limit(2) as server:
        chan = channel()
        mounted = RawStream(f"{server.url}/events?channel={chan}")
        view = RawStream(f"{server.url}/stream/{chan}")
        assert (mounted.status, view.status) == (200, 200)
        refused = RawStream(f"{server.url}/stream/{chan}")
        assert refused.status == 503 and refused.response.headers["Retry-After"] == "5"
        refused.close()
        view.close()  # the client goes away
        started = time.monotonic()
        again = open_when_free(f"{server.url}/events?channel={chan}")
        assert time.monotonic() - started < 3  # a few heartbeats of 0.5 s
        assert stop_draining(server, [mounted, again]) < 5


# --- Several workers on the Redis broker -----------------------------------------------------


def test_django_with_redis_under_four_workers(redis_url: str) -> None:
    """Four worker processes share the channels through Redis: every stream gets every event,
    whichever worker published it, and resumes from its id on any worker."""
    needs_django()
    with serving("django-redis", ROOT, env=HEARTBEAT, replace={REDIS: redis_url}) as server:
        assert wait_until(lambda: len(server.workers()) == 4, 20)
        chan = channel()
        listeners = [Listener(f"{server.url}/events?channel={chan}") for _ in range(3)]
        listeners += [Listener(f"{server.url}/stream/{chan}") for _ in range(3)]
        try:
            ids = [published_id(server.url, chan, f"n{i}") for i in range(8)]  # a new connection each
            for listener in listeners:
                assert [e.id for e in listener.got(8)] == ids
        finally:
            for listener in listeners:
                listener.close()
        resumed = Listener(f"{server.url}/stream/{chan}", last_event_id=ids[3])
        try:
            assert [e.id for e in resumed.got(4)] == ids[4:]
        finally:
            resumed.close()
        streams = [RawStream(f"{server.url}/events?channel={chan}") for _ in range(4)]
        assert [s.status for s in streams] == [200] * 4
        assert stop_draining(server, streams) < 5


# --- nginx in front ---------------------------------------------------------------------------

HTTP = """
{user}
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
{snippet}
}}
"""


@contextmanager
def nginx_in_front(app_port: int) -> Iterator[str]:
    """A private nginx with the page's snippet, proxying to ``app_port``; its URL."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        missing("nginx")
    port = free_port()
    snippet = blocks()["nginx"]
    for old, new in (("listen 80;", f"listen 127.0.0.1:{port};"), (PORT, f"127.0.0.1:{app_port}")):
        assert snippet.count(old) == 1, old
        snippet = snippet.replace(old, new)
    directory = Path(tempfile.mkdtemp(prefix="sseproto-deploy-nginx-"))
    conf = directory / "nginx.conf"
    user = "user root;" if os.geteuid() == 0 else ""  # else nginx's workers run as nobody
    conf.write_text(HTTP.format(user=user, dir=directory, snippet=snippet))
    args = [binary, "-p", str(directory), "-e", str(directory / "error.log"), "-c", str(conf)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        shutil.rmtree(directory, ignore_errors=True)


def test_nginx_snippet_in_front_of_django() -> None:
    """Through the page's nginx snippet: events pass at once (nginx does not buffer them),
    ``Last-Event-ID`` reaches the app, and a client that goes away frees its stream."""
    snippet = blocks()["nginx"]
    timeout = re.search(r"proxy_read_timeout (\d+)s;", snippet)
    assert timeout and int(timeout[1]) > 15  # above the default heartbeat, SSE_HEARTBEAT
    with django_with_limit(2) as server, nginx_in_front(server.port) as proxy:
        chan = channel()
        listener = Listener(f"{proxy}/stream/{chan}")
        try:
            for n in range(3):
                started = time.monotonic()
                event_id = published_id(proxy, chan, f"n{n}")
                assert listener.got(n + 1)[n].id == event_id
                assert time.monotonic() - started < 1  # not held in a buffer
        finally:
            listener.close()
        ids = [e.id for e in listener.events]
        resumed = Listener(f"{proxy}/events?channel={chan}", last_event_id=ids[0])
        try:
            assert [e.id for e in resumed.got(2)] == ids[1:]
        finally:
            resumed.close()

        def two_open() -> list[RawStream] | None:
            streams = [RawStream(f"{proxy}/events?channel={chan}") for _ in range(2)]
            if [s.status for s in streams] == [200, 200]:
                return streams
            for stream in streams:
                stream.close()
            return None

        url = f"{proxy}/events?channel={chan}"
        first, second = open_when_free(url), open_when_free(url)  # once the listeners' slots are back
        refused = RawStream(url)
        assert refused.status == 503
        refused.close()
        second.close()  # the client goes away; nginx closes its connection to the app
        started = time.monotonic()
        again = open_when_free(url)
        assert time.monotonic() - started < 3
        first.close()
        again.close()
