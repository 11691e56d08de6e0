"""The polyfill's shared mode in headless Chromium: the tabs of an origin share one stream.

One browser context is one origin's tabs. Eight pages open
``new EventSourcePolyfill(url, {shared: true})`` on tests/apps/shared_app.py; the server
counts the streams open. Two paths: ``worker`` (a SharedWorker holds the stream) and
``leader`` (``window.SharedWorker`` deleted by an init script: a tab elected with Web
Locks holds it and broadcasts), each with the source bundle and the minified one.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import PYTHON, ROOT, free_port, missing, wait_for_port, wait_until
from test_polyfill import STATIC, node

TESTS = ROOT / "tests"
PAGES = 8
START = """url => {
  window.log = []; window.states = [];
  var es = window.es = new EventSourcePolyfill(url, {shared: true});
  es.onopen = function () { states.push('open'); };
  es.onerror = function () { states.push('error ' + es.readyState); };
  es.addEventListener('message', function (e) { log.push([e.data, e.lastEventId]); });
  return [es instanceof SharedEventSource, es.url];
}"""


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """tests/apps/shared_app.py in a subprocess: its origin."""
    try:
        import flask  # noqa: F401
    except ImportError:
        missing("flask")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)])}
    log = (tmp_path_factory.mktemp("shared-app") / "server.log").open("wb")
    proc = subprocess.Popen([PYTHON, "-m", "apps.shared_app", str(port)], cwd=TESTS, env=env,
                            stdout=log, stderr=log)
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def call(base: str, path: str, method: str = "GET") -> Any:
    with urllib.request.urlopen(urllib.request.Request(base + path, method=method), timeout=10) as r:
        return json.loads(r.read())


def publish(base: str, channel: str, prefix: str, n: int) -> list[str]:
    ids: list[str] = call(base, f"/publish?channel={channel}&prefix={prefix}&n={n}", "POST")["ids"]
    return ids


def every(pages: list[Any], script: str, want: Any) -> bool:
    return all(p.evaluate(script) == want for p in pages)


def expect(check: Any, what: str, seconds: float = 15.0) -> None:
    assert wait_until(check, seconds), f"timed out: {what}"


def test_shared_bundles_parse_as_es5_and_hold_the_polyfill_unchanged() -> None:
    built = [STATIC / "eventsource-shared.js", STATIC / "eventsource-shared.min.js"]
    files = [ROOT / "js" / "eventsource-shared.js", *built]
    result = node("test/syntax.mjs", *files)
    assert result.returncode == 0, result.stdout + result.stderr
    bundle = (STATIC / "eventsource-shared.js").read_text()
    assert (ROOT / "js" / "eventsource.js").read_text() in bundle
    assert bundle.endswith((ROOT / "js" / "eventsource-shared.js").read_text())


@pytest.mark.browser
@pytest.mark.parametrize("bundle", ["source", "min"])
@pytest.mark.parametrize("path", ["worker", "leader"])
def test_eight_tabs_share_one_stream_and_lose_nothing_when_its_holder_closes(
    browser: Any, base: str, path: str, bundle: str
) -> None:
    channel = f"{path}-{bundle}"
    url = f"/sse/stream?channel={channel}"
    ctx = browser.new_context()
    try:
        if path == "leader":
            ctx.add_init_script("delete window.SharedWorker;")
        pages = []
        for _ in range(PAGES):
            page = ctx.new_page()
            page.goto(f"{base}/page" + ("?min=1" if bundle == "min" else ""))
            assert page.evaluate(START, url) == [True, base + url]
            pages.append(page)
        expect(lambda: every(pages, "es.readyState", 1), "all pages OPEN")
        expect(lambda: call(base, f"/count?channel={channel}")["open"] == 1, "one stream open")
        assert len(call(base, f"/log?channel={channel}")) == 1  # never more than one asked

        # Another URL is another stream, shared by the tabs that ask for it.
        other = f"/sse/stream?channel={channel}-other"
        for page in pages[:2]:
            page.evaluate("url => { window.es2 = new EventSourcePolyfill(url, {shared: true}); }", other)
        expect(lambda: call(base, f"/count?channel={channel}-other")["open"] == 1, "the other stream")
        expect(lambda: every(pages[:2], "es2.readyState", 1), "the other stream OPEN")
        for page in pages[:2]:
            page.evaluate("es2.close()")
        expect(lambda: call(base, f"/count?channel={channel}-other")["open"] == 0, "the other stream ended")

        first = publish(base, channel, "a", 10)
        want = [[f"a {i}", id] for i, id in enumerate(first)]
        expect(lambda: every(pages, "log.length", 10), "10 events on every page")
        for page in pages:
            assert page.evaluate("[log, es.lastEventId, states]") == [want, first[-1], ["open"]]

        holders = [p for p in pages if p.evaluate("es.holding")]
        if path == "leader":
            assert len(holders) == 1
            gone = holders
        else:
            assert holders == []
            gone = pages[:2]  # the first created the worker: it outlives its page
        for page in gone:
            page.close()
        left = [p for p in pages if p not in gone]
        during = publish(base, channel, "b", 5)  # while the next holder takes over
        expect(lambda: call(base, f"/count?channel={channel}")["open"] == 1, "one stream after the hand-over")
        after = publish(base, channel, "c", 5)
        want += [[f"b {i}", id] for i, id in enumerate(during)]
        want += [[f"c {i}", id] for i, id in enumerate(after)]
        expect(lambda: every(left, "log.length", 20), "20 events on every page left")
        for page in left:
            assert page.evaluate("[log, es.lastEventId, states]") == [want, after[-1], ["open"]]

        requests = call(base, f"/log?channel={channel}")
        if path == "leader":
            # The new leader resumed from the last id the tabs saw.
            assert [(r["header"], r["query"]) for r in requests] == [(None, None), (first[-1], None)]
            assert sum(p.evaluate("es.holding") for p in left) == 1
        else:
            assert len(requests) == 1  # the worker's stream never ended
        assert call(base, f"/count?channel={channel}")["open"] == 1

        # close() detaches that tab only; the stream ends when no tab listens.
        quitter = next(p for p in left if p.evaluate("es.holding")) if path == "leader" else left[0]
        quitter.evaluate("es.close()")
        rest = [p for p in left if p is not quitter]
        last = publish(base, channel, "d", 2)
        want += [[f"d {i}", id] for i, id in enumerate(last)]
        expect(lambda: every(rest, "log.length", 22), "22 events on the pages still listening")
        for page in rest:
            assert page.evaluate("[log, es.lastEventId, es.readyState]") == [want, last[-1], 1]
        assert quitter.evaluate("[log.length, es.readyState]") == [20, 2]
        for page in rest:
            page.evaluate("es.close()")
        expect(lambda: call(base, f"/count?channel={channel}")["open"] == 0, "no stream once all closed")
    finally:
        ctx.close()


@pytest.mark.browser
@pytest.mark.parametrize("path", ["worker", "leader"])
def test_events_published_while_the_holder_closes_reach_every_tab_once(
    browser: Any, base: str, path: str
) -> None:
    channel = f"flight-{path}"
    url = f"/sse/stream?channel={channel}"
    ctx = browser.new_context()
    try:
        if path == "leader":
            ctx.add_init_script("delete window.SharedWorker;")
        pages = []
        for _ in range(4):
            page = ctx.new_page()
            page.goto(f"{base}/page")
            page.evaluate(START, url)
            pages.append(page)
        expect(lambda: every(pages, "es.readyState", 1), "all pages OPEN")
        ids: list[str] = []
        done = threading.Event()

        def publisher() -> None:
            try:
                for i in range(40):
                    query = f"channel={channel}&prefix=e&n=1&start={i}"
                    ids.extend(call(base, f"/publish?{query}", "POST")["ids"])
                    time.sleep(0.01)
            finally:
                done.set()

        thread = threading.Thread(target=publisher)
        thread.start()
        try:
            expect(lambda: len(ids) >= 10, "10 published", 10)
            holder = next((p for p in pages if p.evaluate("es.holding")), pages[0])
            holder.close()  # the worker's first page, or the leader
        finally:
            assert done.wait(20)
            thread.join(5)
        left = [p for p in pages if p is not holder]
        want = [[f"e {i}", id] for i, id in enumerate(ids)]
        expect(lambda: every(left, "log.length", 40), "40 events on every page left")
        for page in left:
            assert page.evaluate("[log, es.lastEventId, states]") == [want, ids[-1], ["open"]]
        if path == "leader":
            requests = call(base, f"/log?channel={channel}")
            assert len(requests) == 2 and requests[1]["header"] in ids
    finally:
        ctx.close()
