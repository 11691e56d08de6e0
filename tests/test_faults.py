"""Network faults: every connection is cut at random, and no client loses or repeats an event.

N clients read one channel through tests/chaos_proxy.py, which cuts each connection after
0.5-3 s (seeded), mid-event included, half with FIN and half with RST, while a publisher
posts M events straight to the server (gunicorn in a subprocess, app
tests/apps/fault_app.py). Clients resume with ``Last-Event-ID``; at the end each must
hold exactly the published events, each once, in order. Clients: sseproto's
``EventSource`` (threads of this process), and in headless Chromium the polyfill and
the native ``EventSource`` side by side in one page. Brokers: in memory, and Redis (on
redis-server and on valkey-server). Ids (``ids``): the broker's, the publisher's own
numbers ("1", "2", ... like database row ids), the publisher's own names
("row-000001", ...), and runs of all three mixed on the channel.

Run with ``-s`` to see the figures (tabulated in docs/RELIABILITY.md).
"""

from __future__ import annotations

import itertools
import random
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from chaos_proxy import ChaosProxy
from conftest import STORES
from servers import Server, running

from sseproto.client import EventSource

# The load of one run: N clients, M events in batches over a few seconds.
N_CLIENTS = 20
M_EVENTS = 300
BATCH = 5
PAUSE = 0.04
# Pages in Chromium, each with the polyfill and a native EventSource.
PAGES = 2


@pytest.fixture(params=["memory", *(pytest.param(kind, marks=pytest.mark.redis) for kind in STORES)])
def broker_url(request: pytest.FixtureRequest) -> str | None:
    """None for the in-memory broker, else the URL of a real redis-server or valkey-server."""
    if request.param == "memory":
        return None
    return str(request.getfixturevalue(f"{request.param}_url"))


# Who chooses the ids: the broker, or the publisher (numbers, or names), or runs of each.
IDS = ["broker", "numeric", "named", "mixed"]
# In Chromium "mixed" alone stands for the publisher's ids (numbers and names): a run costs 5 s.
BROWSER_IDS = ["broker", "mixed"]


def chosen_ids(kind: str) -> Iterator[str | None]:
    """The ids to publish with, in publishing order; None where the broker gives one."""
    numbers = (str(n) for n in itertools.count(1))  # like database row ids
    names = (f"row-{n:06d}" for n in itertools.count(1))  # not digits-digits: Redis refuses that
    if kind == "broker":
        return itertools.repeat(None)
    if kind == "numeric":
        return numbers
    if kind == "named":
        return names
    assert kind == "mixed", kind
    rng = random.Random(3)  # runs of 1-4 events of each source in turn, within and across batches
    sources: list[Iterator[str | None]] = [itertools.repeat(None), numbers, names]
    return (next(source) for source in itertools.cycle(sources) for _ in range(rng.randint(1, 4)))


def publish_ids(server: Server, data: str, channel: str, ids: list[str | None]) -> list[str]:
    """Publish one event per entry of ``ids`` in one request; the ids they got."""
    r = requests.post(server.url + "/publish", json={"data": data, "channel": channel, "ids": ids},
                      timeout=10)
    r.raise_for_status()
    got = [str(i) for i in r.json()["ids"]]
    assert all(i is None or i == g for i, g in zip(ids, got, strict=True)), (ids, got)  # kept as chosen
    return got


def publish_slowly(server: Server, channel: str, ids: Iterator[str | None]) -> list[tuple[str, str]]:
    """M events in batches, straight to the server; their (id, data) in publishing order."""
    sent: list[tuple[str, str]] = []
    for batch in range(M_EVENTS // BATCH):
        data = f"b{batch}:" + "x" * 500  # long enough for cuts to land inside events
        batch_ids = list(itertools.islice(ids, BATCH))
        sent += [(event_id, data) for event_id in publish_ids(server, data, channel, batch_ids)]
        time.sleep(PAUSE)
    return sent


def tally(name: str, sent: list[tuple[str, str]], received: dict[str, list[tuple[str, str]]],
          proxy: ChaosProxy, seconds: float) -> None:
    """Print the figures of a run (with ``-s``): delivered, lost, duplicated, out of order, cuts."""
    sent_ids = [event_id for event_id, _ in sent]
    delivered = sum(len(got) for got in received.values())
    lost = sum(len(set(sent_ids) - {i for i, _ in got}) for got in received.values())
    duplicated = sum(len(got) - len({i for i, _ in got}) for got in received.values())
    unordered = sum([i for i, _ in got if i in set(sent_ids)] != sorted(
        (i for i, _ in got if i in set(sent_ids)), key=sent_ids.index) for got in received.values())
    print(f"\nFAULTS {name}: clients={len(received)} published={len(sent)} delivered={delivered} "
          f"expected={len(sent) * len(received)} lost={lost} duplicated={duplicated} "
          f"clients_out_of_order={unordered} connections={proxy.accepted} cut={proxy.cut} "
          f"(rst={proxy.resets}) bytes_down={proxy.bytes_down} seconds={seconds:.1f}")


@pytest.mark.timeout(90)
@pytest.mark.parametrize("ids", IDS)
def test_python_clients_lose_nothing_through_random_cuts(broker_url: str | None, ids: str,
                                                        request: pytest.FixtureRequest) -> None:
    channel = "chaos-" + uuid.uuid4().hex[:8]
    started = time.monotonic()
    event_ids = chosen_ids(ids)
    with running("gunicorn-gthread", broker_url) as server, ChaosProxy(server.port, seed=7) as proxy:
        # Clients resume from a marker published first: the very first connection may be
        # cut before its first event, and a client without an id would miss events.
        marker = publish_ids(server, "marker", channel, [next(event_ids)])[0]
        url = f"http://127.0.0.1:{proxy.port}/sse/stream?channel={channel}"
        received: dict[str, list[tuple[str, str]]] = {f"py{i}": [] for i in range(N_CLIENTS)}
        gaps: list[str] = []
        sources = {name: EventSource(url, last_event_id=marker, timeout=(5, 5), max_backoff=1.0,
                                     rng=random.Random(name)) for name in received}

        def read(name: str) -> None:
            for event in sources[name]:
                if event.event == "sseproto.gap":
                    gaps.append(event.data)
                else:
                    received[name].append((event.id or "", event.data))

        readers = [threading.Thread(target=read, args=(name,), daemon=True) for name in received]
        for reader in readers:
            reader.start()
        try:
            sent = publish_slowly(server, channel, event_ids)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and any(len(got) < len(sent) for got in received.values()):
                time.sleep(0.1)
            time.sleep(0.5)  # room for a duplicate to show up
        finally:
            for source in sources.values():
                source.close()
            for reader in readers:
                reader.join(5)
        broker = request.node.callspec.params["broker_url"]
        tally(f"python x{N_CLIENTS} gthread {broker} ids={ids}", sent, received, proxy,
              time.monotonic() - started)
        assert not any(reader.is_alive() for reader in readers)
        assert proxy.cut >= N_CLIENTS  # every client was cut at least once on average
        assert gaps == []
        for name, got in received.items():
            assert got == sent, name


@pytest.mark.browser
@pytest.mark.timeout(90)
@pytest.mark.parametrize("ids", BROWSER_IDS)
def test_polyfill_and_native_lose_nothing_through_random_cuts(
    browser: Any, broker_url: str | None, ids: str, request: pytest.FixtureRequest
) -> None:
    channel = "chaos-" + uuid.uuid4().hex[:8]
    started = time.monotonic()
    event_ids = chosen_ids(ids)
    with running("gunicorn-gevent", broker_url) as server, ChaosProxy(server.port, seed=11) as proxy:
        marker = publish_ids(server, "marker", channel, [next(event_ids)])[0]
        pages = [browser.new_page() for _ in range(PAGES)]
        try:
            for page in pages:
                for attempt in range(5):  # the page load itself may be cut
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
            sent = publish_slowly(server, channel, event_ids)
            for page in pages:
                page.wait_for_function(f"window.got.poly.length >= {len(sent)} && "
                                       f"window.got.native.length >= {len(sent)}", timeout=30_000)
            time.sleep(0.5)  # room for a duplicate to show up
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
        broker = request.node.callspec.params["broker_url"]
        tally(f"chromium {PAGES}x(polyfill+native) gevent {broker} ids={ids} opens={opens}", sent, received,
              proxy, time.monotonic() - started)
        assert all(count >= 2 for count in opens.values())  # every source was cut and came back
        assert [gaps for _, gaps, _ in results] == [[]] * PAGES
        for name, got in received.items():
            assert got == sent, name
