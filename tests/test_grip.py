"""GRIP: Pushpin holds the streams, the app answers signed requests with a hold and publishes
through Pushpin's HTTP publish API. A private Pushpin (its own config, ports and sockets in
a temp dir) runs in front of the Flask dev server; the Grip-Sig checks run without it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from chaos_proxy import ChaosProxy
from conftest import free_port, missing, wait_for_port
from pushpin import PUSHPIN_CONF, holds_and_delivers, pushpin_config
from servers import Server, spawn, stop

from sseproto.client import EventSource
from sseproto.grip import parse_grip_last, verify_grip_sig

KEY = "grip-test-key"


def token(key: str = KEY, **claims: object) -> str:
    """A Grip-Sig as Pushpin makes it (HS256), with ``claims`` (default: iss pushpin, exp in 1 h)."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    body = {"iss": "pushpin", "exp": int(time.time()) + 3600, **claims}
    signing = b64(json.dumps({"typ": "JWT", "alg": "HS256"}).encode()) + "." + b64(json.dumps(body).encode())
    return signing + "." + b64(hmac.new(key.encode(), signing.encode(), hashlib.sha256).digest())


def test_grip_sig_is_verified_with_the_key() -> None:
    key = KEY.encode()
    assert verify_grip_sig(token(), key)
    assert not verify_grip_sig(token("another key"), key)  # forged
    assert not verify_grip_sig(token(exp=int(time.time()) - 1), key)  # expired
    assert not verify_grip_sig(token(iss="someone-else"), key)
    assert not verify_grip_sig("", key) and not verify_grip_sig("a.b.c", key)
    header, payload, _ = token().split(".")
    assert not verify_grip_sig(f"{header}.{payload}.", key)  # unsigned
    none_alg = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    assert not verify_grip_sig(f"{none_alg}.{payload}.", key)


def test_grip_last_gives_each_channels_last_id() -> None:
    assert parse_grip_last("a; last-id=1, b/c; last-id=22") == {"a": "1", "b/c": "22"}


def test_a_valid_signature_gets_a_hold_reply_straight_from_the_app(grip_app: Server) -> None:
    channel = "hold-" + uuid.uuid4().hex[:6]
    first, newest = publish(grip_app, channel, 2)
    r = requests.get(f"{grip_app.url}/sse/stream?channel={channel}",
                     headers={"Grip-Sig": token(), "Last-Event-ID": first}, timeout=5)
    assert r.headers["Grip-Hold"] == "stream"
    assert r.headers["Grip-Channel"] == f"{channel}; prev-id={newest}"
    assert r.headers["Grip-Keep-Alive"] == r":\n; format=cstring; timeout=1"
    assert r.headers["Content-Type"].startswith("text/event-stream")
    assert r.text == f"retry: 200\n\nid: {newest}\ndata: 1\n\n"  # the replay after Last-Event-ID
    gap = requests.get(f"{grip_app.url}/sse/stream?channel={channel}",
                       headers={"Grip-Sig": token(), "Last-Event-ID": "unknown"}, timeout=5)
    assert gap.text.startswith("retry: 200\n\nevent: sseproto.gap\n")


@pytest.mark.parametrize("sig", ["forged", "expired", "missing"])
def test_a_bad_signature_gets_the_normal_stream(grip_app: Server, sig: str) -> None:
    headers = {"forged": {"Grip-Sig": token("not the key")},
               "expired": {"Grip-Sig": token(exp=int(time.time()) - 10)}, "missing": {}}[sig]
    with requests.get(f"{grip_app.url}/sse/stream?channel=direct", headers=headers, stream=True,
                      timeout=5) as r:
        assert r.status_code == 200 and "Grip-Hold" not in r.headers
        assert next(r.iter_content(None)).startswith(b"retry: 200")  # a live stream, held by Python


def test_events_published_through_flask_reach_the_client_via_pushpin(stack: tuple[Server, int]) -> None:
    app, port = stack
    channel = "news-" + uuid.uuid4().hex[:6]
    got: list[tuple[str | None, str]] = []
    held = requests.get(app.url + "/count", timeout=5).json()["streams"]  # other tests' direct streams
    with EventSource(f"http://127.0.0.1:{port}/sse/stream?channel={channel}", timeout=(5, 5)) as source:
        source_iter = iter(source)
        reader = threading.Thread(target=lambda: got.extend((e.id, e.data) for e in source_iter), daemon=True)
        reader.start()
        wait_subscribed(app, port, channel)
        ids = [publish_one(app, channel, str(n)) for n in range(5)]
        deadline = time.monotonic() + 10
        while len(got) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert requests.get(app.url + "/count", timeout=5).json()["streams"] <= held  # none for this one
    reader.join(5)
    assert got == [(i, str(n)) for n, i in enumerate(ids)]


def test_authorization_refusal_is_403_through_pushpin(stack: tuple[Server, int]) -> None:
    _, port = stack
    r = requests.get(f"http://127.0.0.1:{port}/sse/stream?channel=secret", timeout=5)
    assert r.status_code == 403


@pytest.mark.timeout(60)
def test_client_loses_nothing_through_cuts_between_it_and_pushpin(stack: tuple[Server, int]) -> None:
    app, port = stack
    channel = "chaos-" + uuid.uuid4().hex[:6]
    marker = publish(app, channel, 1)[1]
    started = time.monotonic()
    received: list[tuple[str, str]] = []
    gaps: list[str] = []
    with ChaosProxy(port, seed=5, min_life=0.3, max_life=1.5) as proxy:
        source = EventSource(f"http://127.0.0.1:{proxy.port}/sse/stream?channel={channel}",
                             last_event_id=marker, timeout=(5, 5), max_backoff=0.5, rng=random.Random(1))

        def read() -> None:
            for event in source:
                (gaps.append(event.data) if event.event == "sseproto.gap"
                 else received.append((event.id or "", event.data)))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        sent: list[tuple[str, str]] = []
        try:
            for n in range(300):
                sent.append((publish_one(app, channel, str(n)), str(n)))
                time.sleep(0.01)
            # A message published while a connection was being re-held is recovered when the next
            # one shows the gap (prev-id): keep publishing ticks until the client holds them all.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not set(sent) <= set(received):
                publish_one(app, channel, "tick")
                time.sleep(0.2)
            time.sleep(0.5)  # room for a duplicate to show up
        finally:
            source.close()
            reader.join(5)
        counted = [item for item in received if item[1] != "tick"]
        lost = len(set(sent) - set(counted))
        duplicated = len(received) - len(set(received))
        print(f"\nGRIP chaos: published={len(sent)} delivered={len(counted)} lost={lost} "
              f"duplicated={duplicated} "
              f"in_order={counted == sent} connections={proxy.accepted} cut={proxy.cut} (rst={proxy.resets}) "
              f"gaps={len(gaps)} seconds={time.monotonic() - started:.1f}")
        assert proxy.cut >= 3
        assert gaps == []
        assert counted == sent and duplicated == 0
        assert [i for i, _ in received] == sorted((i for i, _ in received), key=int)


@pytest.mark.browser
@pytest.mark.timeout(60)
def test_polyfill_and_native_lose_nothing_through_cuts_between_chromium_and_pushpin(
    browser: Any, stack: tuple[Server, int]
) -> None:
    app, port = stack
    channel = "chaos-" + uuid.uuid4().hex[:6]
    marker = publish(app, channel, 1)[1]
    started = time.monotonic()
    held = requests.get(app.url + "/count", timeout=5).json()["streams"]  # other tests' direct streams
    app_streams = [held]
    with ChaosProxy(port, seed=13, min_life=0.3, max_life=1.5) as proxy:
        pages = [browser.new_page() for _ in range(2)]
        try:
            for page in pages:  # the page is served by the app through Pushpin, and the cuts
                for attempt in range(5):  # may land on its own load
                    try:
                        page.goto(f"http://127.0.0.1:{proxy.port}/?channel={channel}&from={marker}",
                                  timeout=5_000)
                        page.wait_for_function("window.sources !== undefined", timeout=5_000)
                        break
                    except Exception:
                        if attempt == 4:
                            raise
            for page in pages:
                page.wait_for_function("window.opens.poly >= 1 && window.opens.native >= 1", timeout=10_000)
            sent: list[tuple[str, str]] = []
            for n in range(300):
                data = f"{n}:" + "x" * 200  # long enough for cuts to land inside events
                sent.append((publish_one(app, channel, data), data))
                if n % 20 == 0:
                    app_streams.append(requests.get(app.url + "/count", timeout=5).json()["streams"])
                time.sleep(0.01)
            # As in the Python client's run: a message published while Pushpin was taking a hold
            # is recovered when the next one shows the gap (prev-id), so keep publishing ticks
            # until every source holds every event (bounded).
            ids = [i for i, _ in sent]
            def holds_all() -> bool:
                return all(page.evaluate("(ids) => window.holds(ids)", ids) for page in pages)

            deadline, ticks_published = time.monotonic() + 2, 0
            while time.monotonic() < deadline and not holds_all():  # first without ticks
                time.sleep(0.1)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not holds_all():
                publish_one(app, channel, "tick")
                ticks_published += 1
                time.sleep(0.2)
            time.sleep(0.5)  # room for a duplicate to show up
            app_streams.append(requests.get(app.url + "/count", timeout=5).json()["streams"])
            results = []
            for page in pages:
                page.evaluate("window.stop()")
                results.append(page.evaluate("[window.got, window.gaps, window.opens]"))
        finally:
            for page in pages:
                page.close()
    received = {f"{name}{n}": [(i, d) for i, d in got[name]]
                for n, (got, _, _) in enumerate(results) for name in ("poly", "native")}
    opens = {f"{name}{n}": count for n, (_, _, o) in enumerate(results) for name, count in o.items()}
    counted = {name: [item for item in got if item[1] != "tick"] for name, got in received.items()}
    lost = sum(len(set(sent) - set(got)) for got in counted.values())
    duplicated = sum(len(got) - len(set(got)) for got in received.values())
    ticks = sum(len(got) - len(counted[name]) for name, got in received.items())
    print(f"\nGRIP chromium 2x(polyfill+native): published={len(sent)} "
          f"delivered={sum(len(got) for got in counted.values())} expected={len(sent) * len(received)} "
          f"lost={lost} duplicated={duplicated} "
          f"in_order={all(got == sent for got in counted.values())} "
          f"ticks_needed={ticks_published} (delivered {ticks}) opens={opens} "
          f"connections={proxy.accepted} cut={proxy.cut} (rst={proxy.resets}) "
          f"app_streams_max={max(app_streams)} (before={held}) seconds={time.monotonic() - started:.1f}")
    assert max(app_streams) <= held  # Pushpin held every stream, the app none
    assert all(count >= 2 for count in opens.values())  # every source was cut and came back
    assert [gaps for _, gaps, _ in results] == [[]] * len(pages)
    for name, got in counted.items():
        assert got == sent, name
    assert duplicated == 0


# --- helpers and fixtures ---------------------------------------------------------------------

def publish(app: Server, channel: str, n: int) -> tuple[str, str]:
    """Publish ``n`` events (data 0..n-1); the first and the last id."""
    ids = [publish_one(app, channel, str(i)) for i in range(n)]
    return ids[0], ids[-1]


def publish_one(app: Server, channel: str, data: str) -> str:
    r = requests.post(app.url + "/publish", json={"data": data, "channel": channel}, timeout=10)
    r.raise_for_status()
    return str(r.json()["id"])


def wait_subscribed(app: Server, port: int, channel: str) -> None:
    """Time for Pushpin to take the hold and subscribe the connection to ``channel``."""
    time.sleep(0.5)


@pytest.fixture(scope="module")
def grip_urls() -> Iterator[tuple[int, int]]:
    """Free ports for Pushpin's HTTP side and its publish endpoint."""
    yield free_port(), free_port()


@pytest.fixture(scope="module")
def grip_app(grip_urls: tuple[int, int]) -> Iterator[Server]:
    _, publish_port = grip_urls
    app = spawn("flask-dev", app="apps.grip_app", SSE_GRIP_URL=f"http://127.0.0.1:{publish_port}",
                SSE_GRIP_KEY=KEY, SSE_HEARTBEAT="1")
    try:
        yield app
    finally:
        stop(app)


@pytest.fixture(scope="module")
def stack(grip_app: Server, grip_urls: tuple[int, int]) -> Iterator[tuple[Server, int]]:
    """Pushpin in front of the app: the app and Pushpin's HTTP port."""
    binary = shutil.which("pushpin")
    if binary is None or not PUSHPIN_CONF.exists():
        missing("pushpin (apt-get install pushpin)")
    http_port, publish_port = grip_urls
    root = Path(tempfile.mkdtemp(prefix="pp"))  # short: ipc socket paths are limited to 107 bytes
    config = pushpin_config(root, http_port, publish_port, grip_app.port, KEY)
    log = (root / "pushpin.out").open("wb")
    proc = subprocess.Popen([str(binary), f"--config={config}"], cwd=root, stdout=log, stderr=log,
                            start_new_session=True)
    try:
        wait_for_port(http_port, proc)
        wait_for_port(publish_port, proc)
        # condure listens before the proxy, zurl and the handler: up once a held stream gets an event.
        deadline = time.monotonic() + 20
        while not holds_and_delivers(http_port, lambda: publish_one(grip_app, "ready", "ready")):
            assert time.monotonic() < deadline and proc.poll() is None, (root / "pushpin.out").read_text()
            time.sleep(0.1)
        yield grip_app, http_port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)
        log.close()
        shutil.rmtree(root, ignore_errors=True)
