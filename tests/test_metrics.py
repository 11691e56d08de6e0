"""Prometheus metrics: each one moves for its cause, read back from the registry after
streams are driven in process (WSGI calls, and a Flask app)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT
from test_wsgi import Call

from sseproto import Decoder, Event
from sseproto.brokers import MemoryBroker, SubscriptionEnded
from sseproto.brokers._base import DRAINING
from sseproto.wsgi import GAP_EVENT, EventStream, EventStreamApp

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client import CollectorRegistry  # noqa: E402

from sseproto.metrics import DISCONNECT_REASONS, REFUSAL_REASONS, Metrics  # noqa: E402


class Reader:
    """The sseproto samples of one app in one registry."""

    def __init__(self, registry: CollectorRegistry, app: str) -> None:
        self.registry = registry
        self.app = app

    def __call__(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, {"app": self.app, **labels})
        assert value is not None, f"{name} {labels} not exported"
        return value

    @property
    def open(self) -> float:
        return self("sseproto_streams_open")

    @property
    def published(self) -> float:
        return self("sseproto_events_published_total")

    @property
    def deliveries(self) -> float:
        return self("sseproto_deliveries_total")

    @property
    def gaps(self) -> float:
        return self("sseproto_replay_gaps_total")

    def disconnects(self, reason: str) -> float:
        return self("sseproto_disconnects_total", reason=reason)

    def refusals(self, reason: str) -> float:
        return self("sseproto_refusals_total", reason=reason)

    def all_disconnects(self) -> dict[str, float]:
        return {reason: self.disconnects(reason) for reason in DISCONNECT_REASONS}


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics(registry, app="chat")


@pytest.fixture
def read(registry: CollectorRegistry) -> Reader:
    return Reader(registry, "chat")


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker()


@pytest.fixture
def undrain() -> Iterator[None]:
    """Let a test set DRAINING (as SIGTERM does under sseproto.gunicorn); cleared after it."""
    try:
        yield
    finally:
        DRAINING.clear()


def make(broker: MemoryBroker, metrics: Metrics, **options: Any) -> EventStreamApp:
    options.setdefault("heartbeat", 0.02)
    return EventStreamApp(broker, metrics=metrics, **options)


def run_out(call: Call) -> bytes:
    """Iterate the body to its end (as a server does), then close it; the bytes sent."""
    body = b"".join(call.iter)
    call.close()
    return body


def ended_for(read: Reader, reason: str) -> None:
    """Exactly one stream ended, for ``reason``."""
    assert read.all_disconnects() == {r: float(r == reason) for r in DISCONNECT_REASONS}
    assert read.open == 0


def test_everything_is_exported_at_zero_from_the_start(metrics: Metrics, read: Reader) -> None:
    assert (read.open, read.published, read.deliveries, read.gaps) == (0, 0, 0, 0)
    assert set(read.all_disconnects().values()) == {0}
    assert [read.refusals(reason) for reason in REFUSAL_REASONS] == [0, 0]


def test_streams_open_gauge_follows_streams(broker: MemoryBroker, metrics: Metrics, read: Reader) -> None:
    app = make(broker, metrics)
    one, two = Call(app, "/?channel=a"), Call(app, "/?channel=b")
    assert read.open == 2
    one.close()
    assert read.open == 1
    two.close()
    assert read.open == 0
    assert read.disconnects("client_gone") == 2  # closed by the server mid-stream: the client went


def test_publishes_are_counted_per_app_on_the_broker(
    broker: MemoryBroker, registry: CollectorRegistry
) -> None:
    chat, news = Metrics(registry, app="chat"), Metrics(registry, app="news")
    EventStreamApp(broker, metrics=chat)
    EventStreamApp(broker, metrics=chat)  # the same metrics twice on one broker: counted once
    EventStreamApp(MemoryBroker(), metrics=news)
    for n in range(3):
        broker.publish("a", Event(str(n)))
    assert Reader(registry, "chat").published == 3
    assert Reader(registry, "news").published == 0


def test_deliveries_count_replayed_and_live_events_once_per_chunk(
    broker: MemoryBroker, metrics: Metrics, read: Reader
) -> None:
    app = make(broker, metrics)
    first = broker.publish("a", Event("0"))
    for n in range(1, 4):
        broker.publish("a", Event(str(n)))
    call = Call(app, "/?channel=a&lastEventId=" + first.id)
    assert len(call.events(3)) == 3  # replay: 3 events after the first
    assert read.deliveries == 3
    for n in range(5):  # waiting together: they go out in one chunk
        broker.publish("a", Event(f"live {n}"))
    chunk = call.chunk()
    assert chunk.count(b"data: live") == 5
    assert read.deliveries == 8
    call.chunk()  # a heartbeat is no delivery
    assert read.deliveries == 8
    call.close()


def test_iterable_and_polling_streams_count_deliveries_and_finishing(
    broker: MemoryBroker, metrics: Metrics, read: Reader
) -> None:
    app = make(broker, metrics)
    reply = app.iterable_reply(iter(["a", None, "b"]))
    chunks = list(reply.body)
    assert sum(chunk.count(b"data: ") for chunk in chunks) == 2
    assert read.deliveries == 2
    ended_for(read, "finished")
    polling = app.polling_reply(lambda: "tick", 0.01)
    assert b"data: tick" in b"".join(next(iter(polling.body)) for _ in range(3))
    polling.body.close()  # type: ignore[attr-defined]
    assert read.deliveries >= 3
    assert read.disconnects("client_gone") == 1


def test_gap_events_are_counted_apart_from_deliveries(
    broker: MemoryBroker, metrics: Metrics, read: Reader
) -> None:
    app = make(broker, metrics)
    broker.publish("a", Event("kept"))
    call = Call(app, "/?channel=a&lastEventId=unknown")
    gap, kept = call.events(2)
    assert gap.event == GAP_EVENT and kept.data == "kept"
    assert (read.gaps, read.deliveries) == (1, 1)
    call.close()
    known = broker.publish("a", Event("x"))
    Call(app, "/?channel=a&lastEventId=" + known.id).close()  # no gap: nothing counted
    assert read.gaps == 1


def test_disconnect_lagging(metrics: Metrics, read: Reader) -> None:
    broker = MemoryBroker(queue_size=2)
    call = Call(make(broker, metrics), "/?channel=a")
    call.chunk()  # retry:
    for n in range(5):  # never read: the third overflows the queue
        broker.publish("a", Event(str(n)))
    run_out(call)
    ended_for(read, "lagging")


def test_disconnect_max_duration(broker: MemoryBroker, metrics: Metrics, read: Reader) -> None:
    run_out(Call(make(broker, metrics, max_duration=0.05), "/?channel=a"))
    ended_for(read, "max_duration")


def test_disconnect_max_bytes(broker: MemoryBroker, metrics: Metrics, read: Reader) -> None:
    call = Call(make(broker, metrics, max_bytes=10), "/?channel=a")
    call.chunk()
    broker.publish("a", Event("x" * 20))
    assert b"x" * 20 in run_out(call)
    ended_for(read, "max_bytes")
    assert read.deliveries == 1


def test_disconnect_closed_by_the_broker(broker: MemoryBroker, metrics: Metrics, read: Reader) -> None:
    call = Call(make(broker, metrics), "/?channel=a")
    call.chunk()
    assert broker.disconnect_all() == 1  # as sseproto.gunicorn.drain() does
    run_out(call)
    ended_for(read, "closed")


def test_disconnect_draining_and_refusals_while_draining(
    broker: MemoryBroker, metrics: Metrics, read: Reader, undrain: None
) -> None:
    from sseproto.gunicorn import _shut_down

    app = make(broker, metrics)
    one, two = Call(app, "/?channel=a"), Call(app, "/?channel=b")
    one.chunk()
    _shut_down()  # what SIGTERM runs: DRAINING set, every broker's subscriptions ended
    run_out(one)
    run_out(two)
    ended = read.all_disconnects()
    assert ended["draining"] == 2 and ended["closed"] == 0
    refused = Call(app, "/?channel=a")  # the process is going away: come back elsewhere
    assert b": draining" in b"".join(refused.body)
    assert b"retry:" in b"".join(app.polling_reply(lambda: None, 1.0).body)
    assert read.refusals("draining") == 2
    assert read.refusals("busy") == 0
    assert read.open == 0


def test_disconnect_draining_of_a_generator_stream(
    broker: MemoryBroker, metrics: Metrics, read: Reader, undrain: None
) -> None:
    stream = make(broker, metrics).iterable_reply(iter(lambda: None, 0))  # idle ticks forever
    body = iter(stream.body)
    next(body)
    DRAINING.set()  # noticed at the next heartbeat
    list(body)
    stream.body.close()  # type: ignore[attr-defined]
    ended_for(read, "draining")


class _Unavailable:
    """A subscription whose broker cannot reach its server (as the Redis broker's, Redis away)."""

    channels = ("a",)
    replay = ()
    gap = ()

    def get(self, timeout: float | None = None) -> Event | None:
        raise SubscriptionEnded("unavailable")

    def close(self) -> None:
        pass


def test_disconnect_unavailable(metrics: Metrics, read: Reader) -> None:
    stream = EventStream.from_subscription(_Unavailable(), heartbeat=0.02, metrics=metrics)
    assert b"".join(stream) == b"retry: 3000\n\n"
    stream.close()
    ended_for(read, "unavailable")


class _ReplayLost(_Unavailable):
    """A replay the broker could not finish (Redis trimmed it meanwhile)."""

    @property
    def replay(self) -> Iterator[Event]:  # type: ignore[override]
        yield Event("one")
        raise SubscriptionEnded("unavailable")


def test_disconnect_unavailable_during_replay(metrics: Metrics, read: Reader) -> None:
    stream = EventStream.from_subscription(_ReplayLost(), "id", heartbeat=0.02, metrics=metrics)
    assert b"data: one" in b"".join(stream)
    ended_for(read, "unavailable")
    assert read.deliveries == 1


def test_disconnect_client_gone_found_by_the_probe(
    broker: MemoryBroker, metrics: Metrics, read: Reader
) -> None:
    stream = EventStream.from_subscription(broker.subscribe(["a"]), heartbeat=0.02, metrics=metrics,
                                           disconnected=lambda: True)
    assert b"".join(stream) == b"retry: 3000\n\n"
    ended_for(read, "client_gone")


def test_disconnect_of_a_stream_never_closed(broker: MemoryBroker, metrics: Metrics, read: Reader) -> None:
    import gc

    stream = EventStream.from_subscription(broker.subscribe(["a"]), metrics=metrics)
    assert read.open == 1
    del stream
    gc.collect()
    ended_for(read, "client_gone")


def test_busy_refusals(broker: MemoryBroker, metrics: Metrics, read: Reader) -> None:
    app = make(broker, metrics, max_connections=1)
    held = Call(app, "/?channel=a")
    refused = Call(app, "/?channel=a")
    assert refused.status.startswith("503")
    assert read.refusals("busy") == 1
    retry = make(broker, metrics, max_connections=1, busy="retry")
    other = Call(retry, "/")
    assert Call(retry, "/").status == "200 OK"  # a stream of just retry:
    assert app.iterable_reply(["x"]).status.startswith("503")
    assert read.refusals("busy") == 3
    assert read.refusals("draining") == 0
    assert read.open == 2  # refusals are no streams
    held.close()
    other.close()


def test_apps_share_a_registry_by_their_label(broker: MemoryBroker, registry: CollectorRegistry) -> None:
    one, two = EventStreamApp(broker, metrics=Metrics(registry, app="one")), \
        EventStreamApp(broker, metrics=Metrics(registry, app="two"))
    again = Metrics(registry, app="one")  # the same series: no duplicate registration
    call = Call(one, "/")
    assert Reader(registry, "one").open == 1
    assert Reader(registry, "two").open == 0
    call.close()
    again.stream_opened()
    assert Reader(registry, "one").open == 1
    assert two.metrics is not None and two.metrics.app == "two"


def test_metrics_off_by_default(broker: MemoryBroker) -> None:
    app = EventStreamApp(broker)
    assert app.metrics is None
    call = Call(app, "/")
    call.chunk()
    call.close()


def test_metrics_true_uses_the_default_registry_served_by_make_wsgi_app(broker: MemoryBroker) -> None:
    from prometheus_client import REGISTRY, make_wsgi_app

    app = EventStreamApp(broker, metrics=True)
    assert app.metrics is not None and app.metrics.registry is REGISTRY
    before = REGISTRY.get_sample_value("sseproto_streams_open", {"app": "sseproto"})
    call = Call(app, "/")
    assert REGISTRY.get_sample_value("sseproto_streams_open", {"app": "sseproto"}) == (before or 0) + 1
    scrape = Call(make_wsgi_app(), "/metrics")
    text = b"".join(scrape.body).decode()
    assert scrape.status == "200 OK"
    assert 'sseproto_streams_open{app="sseproto"}' in text
    assert 'sseproto_disconnects_total{app="sseproto",reason="lagging"}' in text
    call.close()


# Flask


def test_flask_sse_metrics_label_is_the_app_name(registry: CollectorRegistry) -> None:
    from flask import Flask

    from sseproto.flask import SSE

    name = f"shop_{uuid.uuid4().hex[:8]}"
    app = Flask(name)
    sse = SSE(app, heartbeat=0.02, metrics=Metrics(registry, app=name), max_connections=1)
    read = Reader(registry, name)
    client = app.test_client()
    with app.app_context():
        old = sse.publish("old", channel="news")
        sse.publish("missed", channel="news")
    assert read.published == 2
    response = client.get(f"/sse/stream?channel=news&lastEventId={old.id}", buffered=False)
    assert read.open == 1
    chunks = iter(response.response)
    decoder = Decoder()
    assert [e.data for e in decoder.feed(next(chunks))] == ["missed"]
    assert read.deliveries == 1
    assert client.get("/sse/stream?channel=news").status_code == 503
    assert read.refusals("busy") == 1
    response.close()
    ended_for(read, "client_gone")
    lost = client.get("/sse/stream?channel=news&lastEventId=nope", buffered=False)
    assert next(iter(lost.response)).count(b"sseproto.gap") == 1
    assert read.gaps == 1
    lost.close()


def test_flask_sse_metrics_config_key_uses_the_default_registry() -> None:
    from flask import Flask
    from prometheus_client import REGISTRY, generate_latest

    from sseproto.flask import SSE

    name = f"blog_{uuid.uuid4().hex[:8]}"
    app = Flask(name)
    app.config.update(SSE_METRICS=True, SSE_MAX_DURATION=0.05, SSE_HEARTBEAT=0.02)
    sse = SSE(app)
    assert sse.endpoint.metrics is not None and sse.endpoint.metrics.app == name
    response = app.test_client().get("/sse/stream", buffered=False)
    assert f'sseproto_streams_open{{app="{name}"}} 1.0' in generate_latest().decode()
    b"".join(response.response)
    response.close()
    read = Reader(REGISTRY, name)
    ended_for(read, "max_duration")


def test_flask_sse_metrics_off_unless_asked() -> None:
    from flask import Flask

    from sseproto.flask import SSE

    assert SSE(Flask("quiet")).endpoint.metrics is None
    with pytest.raises(ValueError, match="SSE_METRICS"):
        SSE(Flask("bad"), metrics="yes")


# Imports


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


def test_nothing_imports_prometheus_client_unless_metrics_are_on() -> None:
    proc = _run("""
        import sys
        import sseproto, sseproto.wsgi, sseproto.flask, sseproto.gunicorn
        from sseproto.brokers import MemoryBroker
        from sseproto.wsgi import EventStreamApp
        from flask import Flask
        from sseproto.flask import SSE
        app = EventStreamApp(MemoryBroker())
        body = app({"REQUEST_METHOD": "GET"}, lambda status, headers: None)
        next(iter(body)); body.close()
        flask_app = Flask("x")
        SSE(flask_app).publish("hi")
        assert "prometheus_client" not in sys.modules, "imported"
        assert "sseproto.metrics" not in sys.modules
    """)
    assert proc.returncode == 0, proc.stderr


def test_multiprocess_mode_sums_the_streams_of_live_workers(tmp_path: Path) -> None:
    """Under prometheus_client's multiprocess mode (several gunicorn workers) the README's
    recipe reports the streams gauge summed over the live processes."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector
        from sseproto import Event
        from sseproto.brokers import MemoryBroker
        from sseproto.metrics import Metrics
        from sseproto.wsgi import EventStreamApp
        broker = MemoryBroker()
        app = EventStreamApp(broker, metrics=Metrics(app="mp"))
        bodies = [app({"REQUEST_METHOD": "GET"}, lambda s, h: None) for _ in range(2)]
        broker.publish("sse", Event("x"))
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        print(generate_latest(registry).decode())
    """)], capture_output=True, text=True, cwd=ROOT, timeout=60,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert 'sseproto_streams_open{app="mp"} 2.0' in proc.stdout
    assert 'sseproto_events_published_total{app="mp"} 1.0' in proc.stdout


def test_metrics_without_prometheus_client_name_the_extra() -> None:
    proc = _run("""
        import builtins
        real = builtins.__import__
        def guarded(name, *args, **kwargs):
            if name.split(".")[0] == "prometheus_client":
                raise ModuleNotFoundError("blocked", name="prometheus_client")
            return real(name, *args, **kwargs)
        builtins.__import__ = guarded
        from sseproto.brokers import MemoryBroker
        from sseproto.wsgi import EventStreamApp
        EventStreamApp(MemoryBroker())  # fine without it
        try:
            EventStreamApp(MemoryBroker(), metrics=True)
        except ImportError as exc:
            assert "sseproto[metrics]" in str(exc), exc
        else:
            raise AssertionError("no ImportError")
    """)
    assert proc.returncode == 0, proc.stderr
