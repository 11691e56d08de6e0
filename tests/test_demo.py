"""examples/demo.py as people run it: a real process, pages in headless Chromium, Ctrl-C."""

from __future__ import annotations

import base64
import importlib.util
import itertools
import json
import re
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import PYTHON, ROOT, free_port, wait_for_port

WAIT = 10_000  # ms: the bound of every wait in a page
PLOTS = ("eps", "streams", "latency")


def demo_module() -> ModuleType:
    """examples/demo.py imported (it is no package), for its pure parts."""
    spec = importlib.util.spec_from_file_location("sseproto_demo", ROOT / "examples" / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def start_demo(tmp: Path, *args: str) -> Demo:
    port = free_port()
    log = tmp / f"demo-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([PYTHON, "examples/demo.py", "--port", str(port), *args], cwd=ROOT,
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


def open_page(browser: Any, demo: Demo, *, polyfill: bool = False, query: str = "") -> Any:
    """A page of the demo in its own browser context, with its stream open."""
    from playwright.sync_api import expect

    context = browser.new_context()
    if polyfill:
        context.add_init_script("delete window.EventSource")  # before any script of the page
    page = context.new_page()
    page.goto(demo.url + "/" + query)
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
        # The replay view lists it as replayed by the first connection.
        expect(page.locator("#replayed li").filter(has_text=f"chat cy: {between}")).to_have_count(1)
        expect(page.locator("#replay-summary")).to_contain_text("The first connection")
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
        # The replay view shows what the reconnection brought: the missed chat, in order,
        # among the ticks and stats published while the page was away, and no gap.
        expect(page.locator("#replay-summary")).to_contain_text("Connection 2")
        replayed = page.locator("#replayed li").all_inner_texts()
        kinds = [re.sub(r"^\d\d:\d\d:\d\d ", "", t) for t in replayed]  # "<type> <what>"
        chats = [t for t in kinds if t.startswith("chat ")]
        assert chats == [f"chat cy: {t}" for t in missed], replayed
        assert any(t.startswith("tick ") for t in kinds), replayed
        assert int(page.locator("#replay-count").inner_text()) == len(replayed)
        assert "gap" not in page.locator("#replay-summary").inner_text()
        assert page.locator("#gap").inner_text() == ""
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
        assert demo.post("/burst", headers=headers)["status"] == 403
        assert demo.post("/job", headers=headers)["status"] == 403
    assert "id" in demo.post("/chat", headers={"Origin": demo.url, "Sec-Fetch-Site": "same-origin"},
                             name="me", text="mine")
    assert "dropped" in demo.post("/drop")  # no Origin (a client that is not a browser): allowed


@pytest.mark.browser
def test_polyfill_switch_runs_the_page_on_the_polyfill(browser: Any, demo: Demo) -> None:
    from playwright.sync_api import expect

    page = open_page(browser, demo, query="?polyfill=1")  # the browser keeps its own EventSource
    native = open_page(browser, demo)
    try:
        expect(page.locator("#transport")).to_have_text("polyfill")
        expect(page.locator("#transport-how")).to_have_text("fetch stream")
        assert page.evaluate("window.source instanceof window.EventSourcePolyfill")
        assert page.evaluate("window.EventSource !== window.EventSourcePolyfill")
        expect(page.locator("#switch")).to_have_text("Run on native EventSource")
        expect(native.locator("#transport")).to_have_text("native")
        expect(native.locator("#switch")).to_have_attribute("href", "/?polyfill=1")
        text = f"switched {uuid.uuid4().hex[:8]}"
        send_chat(native, "nat", text)
        expect_last(page, f"nat: {text}")
        wait_clock_ticks(page)
        page.get_by_role("button", name="Drop every stream").click()  # the polyfill reconnects too
        expect(page.locator("#opens")).to_have_text("2", timeout=WAIT)
        expect(page.locator("#replay-summary")).to_contain_text("Connection 2")
    finally:
        page.context.close()
        native.context.close()


def points(page: Any, plot: str) -> str:
    return str(page.locator(f"#{plot} polyline").get_attribute("points") or "")


COUNT_INK = """async ([png, boxes]) => {
  // Pixels of each box in the screenshot that have its plot's line colour.
  const img = new Image();
  img.src = 'data:image/png;base64,' + png;
  await img.decode();
  const canvas = document.createElement('canvas');
  canvas.width = img.width;
  canvas.height = img.height;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(img, 0, 0);
  return boxes.map(b => {
    const d = ctx.getImageData(b.x, b.y, b.width, b.height).data;
    const columns = new Set();
    let pixels = 0;
    for (let i = 0; i < d.length; i += 4) {
      if (Math.abs(d[i] - b.rgb[0]) + Math.abs(d[i + 1] - b.rgb[1]) + Math.abs(d[i + 2] - b.rgb[2]) < 60) {
        pixels++;
        columns.add((i / 4) % b.width);
      }
    }
    return {pixels, columns: columns.size, width: b.width};
  });
}"""


@pytest.mark.browser
def test_plots_receive_data_and_show_in_a_screenshot(browser: Any, demo: Demo, tmp_path: Path) -> None:
    page = open_page(browser, demo)
    try:
        page.set_viewport_size({"width": 1200, "height": 900})
        first = {plot: points(page, plot) for plot in PLOTS}
        # One sample a second: wait for 5 of each (the clock and stats events feed them).
        page.wait_for_function("plots => plots.every(p => +document.getElementById(p)"
                               ".getAttribute('data-samples') >= 5)", arg=list(PLOTS), timeout=WAIT)
        for plot in PLOTS:
            assert points(page, plot) != first[plot], plot
            assert len(points(page, plot).split()) >= 5
        assert int(page.locator("#streams-now").inner_text()) >= 1  # this page's own stream at least
        assert float(page.locator("#eps-now").inner_text()) >= 2  # a tick and a stats event each second
        assert 0 <= float(page.locator("#latency-now").inner_text()) < 1000
        assert int(page.locator("#received").inner_text()) >= 10

        shot = tmp_path / "demo.png"
        png = page.screenshot(path=str(shot), full_page=True)
        boxes = []
        for plot in PLOTS:
            box = page.locator(f"#{plot}").bounding_box()
            assert box is not None and box["width"] > 100 and box["height"] > 30, (plot, box)
            stroke = page.locator(f"#{plot} polyline").evaluate("l => getComputedStyle(l).stroke")
            rgb = [int(n) for n in re.findall(r"\d+", stroke)[:3]]
            boxes.append({"x": round(box["x"]), "y": round(box["y"]), "width": round(box["width"]),
                          "height": round(box["height"]), "rgb": rgb})
        assert len({tuple(b["rgb"]) for b in boxes}) == 3  # one colour per plot
        blank = browser.new_page()
        try:
            ink = blank.evaluate(COUNT_INK, [base64.b64encode(png).decode(), boxes])
        finally:
            blank.close()
        for plot, painted in zip(PLOTS, ink, strict=True):
            # The line is drawn: its colour spans several samples' worth of columns (4 of the
            # 59 gaps between 60 samples, at least), at the right end where samples enter.
            assert painted["columns"] >= painted["width"] * 4 // 59 - 2, (plot, painted, shot)
            assert painted["pixels"] >= painted["columns"], (plot, painted, shot)
    finally:
        page.context.close()


RECORD_CLOCK = """() => {
  window.clockShown = [];
  const clock = document.getElementById('clock');
  new MutationObserver(() => window.clockShown.push([clock.textContent, +clock.getAttribute('data-second')]))
    .observe(clock, {childList: true, characterData: true, subtree: true, attributes: true});
}"""


def seconds_of(text: str) -> int:
    hours, minutes, seconds = map(int, text.split(":"))
    return hours * 3600 + minutes * 60 + seconds


@pytest.mark.browser
def test_clock_shows_consecutive_seconds_under_load(browser: Any, demo: Demo) -> None:
    """Regression: under load the clock showed a second twice, then skipped one."""
    a, b = open_page(browser, demo), open_page(browser, demo, query="?polyfill=1")
    try:
        for page in (a, b):
            page.evaluate(RECORD_CLOCK)
        demo.post("/burst")  # 1000 events in 2 s, to every page
        demo.post("/job")
        for i in range(8):
            demo.post("/chat", name="load", text=f"chatter {i} " + "x" * 400)
        a.wait_for_function("window.clockShown.length >= 6", timeout=WAIT)
        for page in (a, b):
            records = page.evaluate("window.clockShown")  # [text, data-second] as each tick shows
            shown = [tuple(r) for i, r in enumerate(records) if i == 0 or r[0] != records[i - 1][0]]
            texts = [text for text, _ in shown]
            numbers = [seconds_of(text) for text in texts]
            assert len(numbers) >= 5, texts
            assert all((n - m) % 86400 == 1 for m, n in itertools.pairwise(numbers)), texts
            # The server's time, as the tick carries it: the second just begun.
            _, second = records[-1]
            assert texts[-1] == time.strftime("%H:%M:%S", time.localtime(second))
            assert 0 <= time.time() - second < 3
    finally:
        a.context.close()
        b.context.close()


def test_ticks_name_their_own_second(demo: Demo) -> None:
    """Regression: a tick was labelled from time.strftime(), which reads glibc's coarse clock and,
    just after a second began, still names the previous one: repeated and skipped seconds."""
    with urllib.request.urlopen(demo.url + "/sse/stream?channel=clock", timeout=10) as stream:
        ticks: list[dict[str, Any]] = []
        for line in stream:
            if line.startswith(b"data: ") and len(ticks) < 4:
                ticks.append(json.loads(line[6:]))
                if len(ticks) == 2:
                    demo.post("/burst")
            if len(ticks) == 4:
                break
    module = demo_module()
    seconds = [tick["second"] for tick in ticks]
    assert seconds == list(range(seconds[0], seconds[0] + 4)), ticks
    for tick in ticks:
        assert tick["time"] == module.clock_text(tick["second"])
        assert tick["sent"] >= tick["second"] * 1000, tick  # never before its second began


def test_clock_schedule_publishes_each_second_once() -> None:
    schedule = demo_module().ClockSchedule(99.5)
    assert schedule.poll(99.9999) == ([], pytest.approx(0.0001))  # woke early: wait again
    assert schedule.poll(100.0002) == ([100], pytest.approx(0.9998))
    assert schedule.poll(100.9) == ([], pytest.approx(0.1))
    assert schedule.poll(102.3) == ([101, 102], pytest.approx(0.7))  # woke late: each second, in order
    assert schedule.poll(103.0) == ([103], pytest.approx(1.0))
    assert schedule.poll(500.2) == ([500], pytest.approx(0.8))  # suspended, or the clock set forward
    assert schedule.poll(300.4) == ([], pytest.approx(0.6))  # the clock set back: from then on
    assert schedule.poll(301.0) == ([301], pytest.approx(1.0))


@pytest.mark.browser
def test_offline_past_the_replay_window_shows_the_gap(browser: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    short = start_demo(tmp_path, "--replay-age", "1")  # events are kept for 1 s only
    try:
        page = open_page(browser, short)
        try:
            expect(page.locator("#transport")).to_have_text("native")
            page.get_by_role("button", name="Go offline").click()
            expect(page.locator("#state")).to_have_text("CLOSED")
            expect(page.locator("#replay-summary")).to_contain_text("Offline since")
            away = f"while away {uuid.uuid4().hex[:8]}"
            short.post("/chat", name="dee", text=away)
            page.wait_for_timeout(2500)  # longer than the server keeps events
            page.get_by_role("button", name="Come back online").click()
            expect(page.locator("#state")).to_have_text("OPEN", timeout=WAIT)
            expect(page.locator("#opens")).to_have_text("2")
            gap = page.locator("#gap")
            expect(gap).to_contain_text("Gap", timeout=WAIT)
            expect(gap).to_be_visible()
            for channel in ("chat", "clock"):
                expect(gap).to_contain_text(channel)
            expect(page.locator("#replay-summary")).to_contain_text("gap on")
            assert away not in " ".join(messages(page))  # lost to this stream, as the notice says
            wait_clock_ticks(page)  # live again
            page.reload()  # the page's own history has it
            expect(page.locator("#state")).to_have_text("OPEN", timeout=WAIT)
            assert f"dee: {away}" in messages(page)
            assert page.locator("#gap").inner_text() == ""
        finally:
            page.context.close()
    finally:
        stop_demo(short.proc)


def test_favicon_is_served_and_linked(demo: Demo) -> None:
    with urllib.request.urlopen(demo.url + "/", timeout=10) as resp:
        page = resp.read().decode()
    link = re.search(r'<link rel="icon" href="([^"]+)" type="image/svg\+xml">', page)
    assert link is not None
    with urllib.request.urlopen(demo.url + link.group(1), timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("image/svg+xml")
        icon = ET.fromstring(resp.read())
    assert icon.tag == "{http://www.w3.org/2000/svg}svg" and len(icon) >= 1


@pytest.mark.browser
def test_without_javascript_the_page_says_so_and_the_chat_still_works(browser: Any, demo: Demo) -> None:
    from playwright.sync_api import expect

    earlier = f"before {uuid.uuid4().hex[:8]}"
    demo.post("/chat", name="eve", text=earlier)
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    scripted = open_page(browser, demo)
    try:
        page.goto(demo.url + "/")
        # (Playwright's text locators skip <noscript>: found by id.)
        notice = page.locator("#noscript")
        expect(notice).to_be_visible()
        expect(notice).to_contain_text("JavaScript is off")
        expect(notice).to_contain_text("The chat and the job still work")
        assert f"eve: {earlier}" in messages(page)  # rendered with the page
        for hidden in ("#state", "#eps", "#replay-summary"):
            expect(page.locator(hidden)).to_be_hidden()
        expect(page.locator("#clock")).to_have_text(re.compile(r"^\d\d:\d\d:\d\d$"))
        # The form posts and the page comes back with the message.
        mine = f"no script {uuid.uuid4().hex[:8]}"
        send_chat(page, "nos", mine)
        expect(page.locator("#messages li").last).to_have_text(re.compile(re.escape(f"nos: {mine}") + "$"))
        expect_last(scripted, f"nos: {mine}")  # and reaches the pages that stream
        expect(scripted.locator("#noscript")).to_have_count(0)  # with script, <noscript> holds only text
        assert "JavaScript is off" in scripted.content()  # which the page never shows
    finally:
        context.close()
        scripted.context.close()
