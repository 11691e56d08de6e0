"""examples/demo.py as people run it: a real process, pages in headless Chromium, Ctrl-C."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import PYTHON, ROOT, free_port, wait_for_port

WAIT = 10_000  # ms: the bound of every wait in a page


class Demo:
    """A running examples/demo.py."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.url = f"http://127.0.0.1:{port}"
        self.log = log

    def post(self, path: str, headers: dict[str, str] | None = None, **form: str) -> dict[str, Any]:
        """A form post as the page's script makes it: the JSON answer."""
        body = urllib.parse.urlencode(form).encode()
        req = urllib.request.Request(self.url + path, data=body,
                                     headers={"Accept": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                answer: dict[str, Any] = json.load(resp)
        except urllib.error.HTTPError as exc:
            answer = {"status": exc.code, **json.load(exc)}
        return answer


def start_demo(tmp: Path) -> Demo:
    port = free_port()
    log = tmp / f"demo-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([PYTHON, "examples/demo.py", "--port", str(port)], cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc)
    except BaseException:
        stop_demo(proc)
        raise
    return Demo(proc, port, log)


def stop_demo(proc: subprocess.Popen[bytes]) -> int:
    """Ctrl-C, as a person stops it; killed if it has not exited after 10 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    running = start_demo(tmp_path_factory.mktemp("demo"))
    try:
        yield running
    finally:
        stop_demo(running.proc)


def open_page(browser: Any, demo: Demo, *, polyfill: bool = False) -> Any:
    """A page of the demo in its own browser context, with its stream open."""
    from playwright.sync_api import expect

    context = browser.new_context()
    if polyfill:
        context.add_init_script("delete window.EventSource")  # before any script of the page
    page = context.new_page()
    page.goto(demo.url + "/")
    expect(page.locator("#state")).to_have_text("OPEN", timeout=WAIT)
    return page


def messages(page: Any) -> list[str]:
    return [re.sub(r"^\d\d:\d\d:\d\d ", "", text) for text in page.locator("#messages li").all_inner_texts()]


def expect_last(page: Any, line: str) -> None:
    """The page's newest chat line becomes ``line`` (after its time)."""
    from playwright.sync_api import expect

    expect(page.locator("#messages li").last).to_have_text(re.compile(re.escape(line) + "$"), timeout=WAIT)


def send_chat(page: Any, name: str, text: str) -> None:
    page.get_by_label("Name").fill(name)
    page.get_by_label("Message").fill(text)
    page.get_by_role("button", name="Send").click()


def wait_clock_ticks(page: Any, ticks: int = 2) -> None:
    """The server clock's text changes ``ticks`` times."""
    for _ in range(ticks):
        before = page.locator("#clock").inner_text()
        page.wait_for_function("t => document.getElementById('clock').textContent !== t", arg=before,
                               timeout=WAIT)


RECORD_JOB_STATES = """() => {
  window.jobStates = [];
  const out = document.getElementById('job-state');
  new MutationObserver(() => window.jobStates.push(out.textContent))
    .observe(out, {childList: true, characterData: true, subtree: true});
}"""


@pytest.mark.browser
def test_native_chat_clock_and_job_reach_every_page(browser: Any, demo: Demo) -> None:
    from playwright.sync_api import expect

    a, b = open_page(browser, demo), open_page(browser, demo)
    try:
        for page in (a, b):
            expect(page.locator("#transport")).to_have_text("native")
            page.evaluate(RECORD_JOB_STATES)
        a.get_by_role("button", name="Start a 5-second job").click()

        # While the job runs: chat from one page reaches both, the clock ticks.
        text = f"hello <i>{uuid.uuid4().hex[:8]}</i>"  # shown as text, never as markup
        send_chat(a, "ann", text)
        for page in (a, b):
            expect_last(page, f"ann: {text}")
        expect(a.get_by_label("Message")).to_have_value("")  # the form was sent in the background
        assert messages(a).count(f"ann: {text}") == 1 and messages(b).count(f"ann: {text}") == 1
        assert a.locator("#messages i").count() == 0 and b.locator("#messages i").count() == 0
        wait_clock_ticks(b)

        for page in (b, a):
            expect(page.locator("#job-state")).to_have_text("done", timeout=WAIT)
            assert page.locator("#job-progress").evaluate("p => p.value") == 100
            states = page.evaluate("window.jobStates")
            percents = [int(m.group(1)) for m in map(re.compile(r"job \d+: (\d+)%").fullmatch, states) if m]
            assert percents == sorted(percents) and any(0 < n < 100 for n in percents), states
            assert states[-1] == "done"
        assert a.locator("#notice").inner_text() == ""
    finally:
        a.context.close()
        b.context.close()


@pytest.mark.browser
def test_polyfill_takes_over_without_native_eventsource(browser: Any, demo: Demo) -> None:
    from playwright.sync_api import expect

    page = open_page(browser, demo, polyfill=True)
    native = open_page(browser, demo)
    try:
        expect(page.locator("#transport")).to_have_text("polyfill")
        assert page.evaluate("window.EventSource === window.EventSourcePolyfill")
        text = f"from the polyfill {uuid.uuid4().hex[:8]}"
        send_chat(page, "poly", text)
        for p in (page, native):
            expect_last(p, f"poly: {text}")
        other = f"from elsewhere {uuid.uuid4().hex[:8]}"
        demo.post("/chat", name="bob", text=other)
        expect_last(page, f"bob: {other}")
        wait_clock_ticks(page)
    finally:
        page.context.close()
        native.context.close()


class Gate:
    """Holds a page's stream requests while closed, so events can only come by replay."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.closed = True
        self.held: list[Any] = []

    def __call__(self, route: Any) -> None:
        if self.closed:
            self.held.append(route)
        else:
            route.continue_()

    def wait_held(self) -> None:
        """Until the page has asked for the stream (at most ~10 s)."""
        for _ in range(200):
            if self.held:
                return
            self.page.wait_for_timeout(50)
        raise AssertionError("the page never asked for its stream")

    def open(self) -> None:
        self.closed = False
        for route in self.held:
            route.continue_()
        self.held.clear()


@pytest.mark.browser
@pytest.mark.parametrize("polyfill", [False, True], ids=["native", "polyfill"])
def test_fresh_page_shows_history_and_resumes_without_loss(browser: Any, demo: Demo, polyfill: bool) -> None:
    from playwright.sync_api import expect

    earlier = [f"earlier {i} {uuid.uuid4().hex[:8]}" for i in range(2)]
    for text in earlier:
        demo.post("/chat", name="cy", text=text)
    context = browser.new_context()
    if polyfill:
        context.add_init_script("delete window.EventSource")
    page = context.new_page()
    gate = Gate(page)
    context.route("**/sse/stream*", gate)
    try:
        page.goto(demo.url + "/")
        gate.wait_held()
        expect(page.locator("#transport")).to_have_text("polyfill" if polyfill else "native")
        # A fresh page shows recent chat with its HTML.
        assert messages(page)[-2:] == [f"cy: {t}" for t in earlier]
        # Sent after the page was rendered, before its stream started: replayed from the
        # id the page was rendered at.
        between = f"between {uuid.uuid4().hex[:8]}"
        demo.post("/chat", name="cy", text=between)
        assert page.locator("#state").inner_text() == "CONNECTING"
        gate.open()
        expect_last(page, f"cy: {between}")
        expect(page.locator("#state")).to_have_text("OPEN", timeout=WAIT)
        # Every chat event the stream delivers from now on (the page itself drops repeats).
        page.evaluate("() => { window.chatIds = [];"
                      " window.source.addEventListener('chat', e => window.chatIds.push(e.lastEventId)); }")

        gate.closed = True
        assert demo.post("/drop")["dropped"] >= 1  # the server ends every stream
        expect(page.locator("#state")).to_have_text("CONNECTING", timeout=WAIT)
        gate.wait_held()  # the reconnection waits at the gate
        missed = [f"missed {i} {uuid.uuid4().hex[:8]}" for i in range(3)]
        ids = [demo.post("/chat", name="cy", text=text)["id"] for text in missed]
        assert not any(t in " ".join(messages(page)) for t in missed)
        gate.open()
        expect(page.locator("#opens")).to_have_text("2", timeout=WAIT)
        expect_last(page, f"cy: {missed[-1]}")
        everything = [f"cy: {t}" for t in [*earlier, between, *missed]]
        assert messages(page)[-6:] == everything  # all, in order, once
        # Resumed from the Last-Event-ID, not from the page's initial lastEventId: no repeats.
        assert page.evaluate("window.chatIds") == ids
        assert int(page.locator("#last-id").inner_text()) >= int(ids[-1])
        assert "lost" not in page.locator("#notice").inner_text()

        page.reload()  # a reloaded page shows the history again, each message once
        expect(page.locator("#state")).to_have_text("OPEN", timeout=WAIT)
        assert messages(page)[-6:] == everything
        assert len(messages(page)) == len(set(messages(page)))
    finally:
        context.close()


def test_prints_its_url_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    running = start_demo(tmp_path)
    try:
        stream = urllib.request.urlopen(running.url + "/sse/stream?channel=clock", timeout=10)
        assert stream.readline() == b"retry: 1000\n"
        returncode = stop_demo(running.proc)  # with a stream still open
        stream.close()
    finally:
        stop_demo(running.proc)
    assert returncode == 0
    out = running.log.read_text()
    assert f"sseproto demo at {running.url}/" in out
    assert "stopped" in out and "Traceback" not in out


def test_posts_from_other_sites_are_refused(demo: Demo) -> None:
    """Regression: the demo's POST endpoints acted on cross-origin form posts, and /drop
    ends every stream."""
    for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"},
                    {"Sec-Fetch-Site": "cross-site"}, {"Origin": demo.url + ".evil.example"}):
        assert demo.post("/drop", headers=headers)["status"] == 403, headers
        assert demo.post("/chat", headers=headers, name="x", text="forged")["status"] == 403
    assert "id" in demo.post("/chat", headers={"Origin": demo.url, "Sec-Fetch-Site": "same-origin"},
                             name="me", text="mine")
    assert "dropped" in demo.post("/drop")  # no Origin (a client that is not a browser): allowed
