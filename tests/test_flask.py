"""The Flask extension: registration, config, publish, the blueprint and view helpers."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, Response, request, stream_with_context

import sseproto.flask as sse_flask
from sseproto import Decoder, Event
from sseproto.brokers import MemoryBroker
from sseproto.flask import SSE


def make_app(**config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update({"SSE_HEARTBEAT": 0.05, **config})
    return app


def read_events(response: Response, n: int) -> list[Event]:
    """The first ``n`` events of a streamed test-client response (at most 100 chunks)."""
    decoder = Decoder()
    got: list[Event] = []
    chunks = iter(response.response)
    for _ in range(100):
        if len(got) >= n:
            break
        got += decoder.feed(next(chunks))
    assert len(got) == n
    return got


def test_sse_registers_itself_once() -> None:
    app = make_app()
    sse = SSE(app)
    assert app.extensions["sse"] is sse
    with pytest.raises(RuntimeError, match="already registered"):
        sse.init_app(app)
    with pytest.raises(RuntimeError, match="already registered"):
        SSE(app)


def test_factory_pattern_serves_several_apps() -> None:
    sse = SSE()
    one, two = make_app(), make_app(SSE_URL_PREFIX="/events")
    sse.init_app(one)
    sse.init_app(two)
    with one.app_context():
        assert sse.broker is not None
        a = sse.broker
    with two.app_context():
        assert sse.broker is not a
    assert two.test_client().get("/events/stream", buffered=False).status_code == 200
    with pytest.raises(RuntimeError, match="exactly one"):
        sse.publish("x")


def test_config_keys_reach_the_endpoint_and_broker() -> None:
    app = make_app(
        SSE_HEARTBEAT=7.5, SSE_RETRY=1234, SSE_RETRY_JITTER=10, SSE_PADDING=True, SSE_MAX_BYTES=999,
        SSE_MAX_CHANNELS=3, SSE_MAX_CHANNEL_LENGTH=9, SSE_CHANNEL_PATTERN="[a-z]+",
        SSE_MAX_LAST_EVENT_ID_LENGTH=20, SSE_MAX_CONNECTIONS=4, SSE_RETRY_AFTER=9,
        SSE_CORS_ORIGINS=["https://a.example"], SSE_CORS_CREDENTIALS=True,
        SSE_QUEUE_SIZE=11, SSE_REPLAY_SIZE=12, SSE_REPLAY_MAX_AGE=60.0, SSE_DEFAULT_CHANNEL="news",
    )
    sse = SSE(app, retry=4321)  # keyword options win over config
    o = sse.endpoint.options
    assert (o.heartbeat, o.retry, o.retry_jitter, o.padding, o.max_bytes) == (7.5, 4321, 10, True, 999)
    assert (o.max_channels, o.max_channel_length, o.channel_pattern) == (3, 9, "[a-z]+")
    assert (o.max_last_event_id_length, o.max_connections, o.retry_after) == (20, 4, 9)
    assert (o.cors_origins, o.cors_credentials) == (("https://a.example",), True)
    assert o.default_channels == ("news",)
    broker = sse.broker
    assert isinstance(broker, MemoryBroker)
    assert (broker.queue_size, broker.replay_size, broker.replay_max_age) == (11, 12, 60.0)


@pytest.mark.redis
def test_redis_url_serves_streams_from_redis(redis_url: str) -> None:
    """``SSE_BROKER_URL=redis://...``: the same app code, events and replay through Redis."""
    from sseproto.brokers.redis import RedisBroker

    channel = f"flask-{uuid.uuid4().hex[:8]}"
    app = make_app(SSE_BROKER_URL=redis_url, SSE_QUEUE_SIZE=11, SSE_REPLAY_SIZE=12, SSE_REPLAY_MAX_AGE=60.0)
    sse = SSE(app)
    broker = sse.broker
    assert isinstance(broker, RedisBroker)
    assert (broker.queue_size, broker.replay_size, broker.replay_max_age) == (11, 12, 60.0)
    try:
        first = sse.publish("start", channel=channel)
        e1 = sse.publish({"n": 1}, event="tick", channel=channel)
        e2 = sse.publish("plain", channel="other-" + channel)
        resp = app.test_client().get(f"/sse/stream?channel={channel}&channel=other-{channel}",
                                     headers={"Last-Event-ID": first.id or ""}, buffered=False)
        assert resp.status_code == 200 and resp.mimetype == "text/event-stream"
        decoder = Decoder()
        chunks = iter(resp.response)
        got: list[Event] = []
        for _ in range(400):  # chunks: events or heartbeats every 0.05 s (bounded)
            if len(got) >= 2:
                break
            got += decoder.feed(next(chunks))
        assert got == [e1, e2] and e1.data == '{"n":1}'
        live = sse.publish("live", channel=channel)
        for _ in range(400):
            if len(got) >= 3:
                break
            got += decoder.feed(next(chunks))
        assert got[2:] == [live]
        resp.close()
    finally:
        broker.close()


def test_unknown_option_is_refused() -> None:
    with pytest.raises(TypeError, match="heartbeet"):
        SSE(heartbeet=3)


def test_publish_json_and_stream_with_replay() -> None:
    app = make_app()
    sse = SSE(app)
    client = app.test_client()
    first = sse.publish("start", channel="a")  # outside an app context: the only app
    with app.app_context():
        e1 = sse.publish({"n": 1}, event="tick", channel="a")
        e2 = sse.publish([1, 2], channel="b")
        e3 = sse.publish("plain", id="custom-1")
    assert e1.data == '{"n":1}' and e1.event == "tick" and e2.data == "[1,2]"
    assert e3.id == "custom-1"
    resp = client.get("/sse/stream?channel=a&channel=b", headers={"Last-Event-ID": first.id or ""},
                      buffered=False)
    assert resp.status_code == 200 and resp.mimetype == "text/event-stream"
    assert read_events(resp, 2) == [e1, e2]
    resp.close()
    assert sse.broker.subscriber_count() == 0  # type: ignore[attr-defined]
    default = client.get("/sse/stream?lastEventId=" + (e2.id or ""), buffered=False)
    assert read_events(default, 2)[1:] == [e3]  # the default channel, after a gap: e2 is b's
    default.close()
    default = client.get("/sse/stream?lastEventId=" + (e3.id or ""), buffered=False)
    with app.app_context():
        e4 = sse.publish("after")
    assert read_events(default, 1) == [e4]
    default.close()


def test_publish_validates_channel_names() -> None:
    app = make_app()
    sse = SSE(app)
    with pytest.raises(ValueError):
        sse.publish("x", channel="bad channel")
    with pytest.raises(ValueError, match="longer"):
        sse.publish("x", id="9" * 257)  # a client could not send it back


def test_publish_a_whole_event() -> None:
    app = make_app()
    sse = SSE(app)
    stored = sse.publish(Event("x", event="kind"), channel="a")
    assert (stored.data, stored.event) == ("x", "kind") and stored.id
    assert sse.publish(None).data == ""
    with pytest.raises(TypeError):
        sse.publish(Event("x"), event="other")


def test_url_prefix_and_no_blueprint() -> None:
    app = make_app(SSE_URL_PREFIX="/events")
    SSE(app)
    client = app.test_client()
    resp = client.get("/events/stream", buffered=False)
    assert resp.status_code == 200
    resp.close()
    assert client.get("/sse/stream").status_code == 404
    bare = make_app(SSE_URL_PREFIX=None)
    SSE(bare)
    assert not [rule for rule in bare.url_map.iter_rules() if rule.endpoint.startswith("sse.")]


def test_polyfill_route(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    app = make_app()
    SSE(app)
    client = app.test_client()
    script = tmp_path / "eventsource.js"
    script.write_text("/* polyfill */")
    monkeypatch.setattr(sse_flask, "POLYFILL", script)
    resp = client.get("/sse/eventsource.js")
    assert resp.status_code == 200 and resp.mimetype == "text/javascript"
    assert resp.data == b"/* polyfill */"
    monkeypatch.setattr(sse_flask, "POLYFILL", tmp_path / "missing.js")
    assert client.get("/sse/eventsource.js").status_code == 404


def test_authorization_callback_runs_in_the_request() -> None:
    app = make_app()
    sse = SSE(app)

    @sse.authorizer
    def allowed(channel: str) -> bool:
        return not channel.startswith("private") or request.args.get("token") == "s3cret"

    client = app.test_client()
    assert client.get("/sse/stream?channel=news,private-1").status_code == 403
    ok = client.get("/sse/stream?channel=news,private-1&token=s3cret", buffered=False)
    assert ok.status_code == 200
    ok.close()
    assert sse.broker.subscriber_count() == 0  # type: ignore[attr-defined]


def test_cors_and_preflight_through_flask() -> None:
    app = make_app(SSE_CORS_ORIGINS=["https://a.example"], SSE_CORS_CREDENTIALS=True)
    SSE(app)
    client = app.test_client()
    pre = client.options("/sse/stream", headers={"Origin": "https://a.example"})
    assert pre.status_code == 204 and pre.headers["Access-Control-Allow-Origin"] == "https://a.example"
    resp = client.get("/sse/stream", headers={"Origin": "https://a.example"}, buffered=False)
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    resp.close()


def test_connection_limit_through_flask() -> None:
    app = make_app(SSE_MAX_CONNECTIONS=1, SSE_RETRY_AFTER=3)
    sse = SSE(app)
    client = app.test_client()
    first = client.get("/sse/stream", buffered=False)
    busy = client.get("/sse/stream")
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "3"
    first.close()
    assert sse.endpoint.active_streams == 0


def test_view_helpers_stream_channels_generators_and_polling() -> None:
    app = make_app()
    sse = SSE(app)
    finished: list[str] = []

    @app.get("/chan")
    def chan() -> Response:
        return sse.stream("x", "y")

    @app.get("/gen")
    def gen() -> Response:
        @stream_with_context
        def numbers() -> Iterator[object]:
            try:
                yield {"who": request.args["who"]}
                yield from range(1000)
            finally:
                finished.append("gen")

        return sse.stream_iterable(numbers())

    @app.get("/poll")
    def poll() -> Response:
        counter = iter(range(1000))
        return sse.stream_polling(lambda: next(counter), interval=0.001)

    client = app.test_client()
    resp = client.get("/chan", buffered=False)
    next(iter(resp.response))
    e = sse.publish("hello", channel="y")
    assert read_events(resp, 1) == [e]
    resp.close()
    resp = client.get("/gen?who=me", buffered=False)
    assert [ev.data for ev in read_events(resp, 3)] == ['{"who":"me"}', "0", "1"]
    resp.close()
    assert finished == ["gen"]
    resp = client.get("/poll", buffered=False)
    assert [ev.data for ev in read_events(resp, 3)] == ["0", "1", "2"]
    resp.close()
    assert sse.endpoint.active_streams == 0 and sse.broker.subscriber_count() == 0  # type: ignore[attr-defined]


def test_gap_event_through_flask() -> None:
    app = make_app(SSE_REPLAY_SIZE=1)
    sse = SSE(app)
    a = sse.publish("a")
    b = sse.publish("b")
    c = sse.publish("c")
    resp = app.test_client().get("/sse/stream", headers={"Last-Event-ID": a.id or ""}, buffered=False)
    gap, replayed = read_events(resp, 2)
    assert gap.event == "sseproto.gap"
    assert json.loads(gap.data) == {"lastEventId": a.id, "channels": ["sse"]}
    assert replayed == c and b != c
    resp.close()


def test_thousand_cycles_through_the_flask_test_client() -> None:
    app = make_app()
    sse = SSE(app)
    client = app.test_client()
    for i in range(1000):
        resp = client.get(f"/sse/stream?channel=a,b{i % 5}", buffered=False)
        next(iter(resp.response))
        resp.close()
    assert sse.broker.subscriber_count() == 0  # type: ignore[attr-defined]
    assert sse.endpoint.active_streams == 0


def test_streams_pass_straight_to_the_server_and_errors_do_not() -> None:
    """A stream response is marked direct passthrough (compressing middleware such as
    Flask-Compress skips such responses, and Werkzeug adds no per-chunk wrappers); small
    error answers stay ordinary responses."""
    app = make_app(SSE_MAX_CONNECTIONS=1)
    sse = SSE(app)
    views: list[Response] = []

    @app.get("/view")
    def view() -> Response:
        views.append(sse.stream("x"))
        return views[-1]

    client = app.test_client()
    first = client.get("/view", buffered=False)
    second = client.get("/view", buffered=False)  # over the connection limit: 503
    try:
        assert first.status_code == 200 and views[0].direct_passthrough
        assert second.status_code == 503 and not views[1].direct_passthrough
    finally:
        first.close()
        second.close()


def test_broker_limits_come_from_the_config() -> None:
    """Regression: SSE_REPLAY_MAX_BYTES was ignored and replay_max_bytes= refused; nothing
    bounded the size of a published event."""
    app = make_app(SSE_REPLAY_MAX_BYTES=4096, SSE_MAX_EVENT_SIZE=2048, SSE_RETAINED_CHANNELS=7)
    sse = SSE(app, max_replay=5)
    broker = sse.broker
    assert isinstance(broker, MemoryBroker)
    assert (broker.replay_max_bytes, broker.max_event_size, broker.retained_channels) == (4096, 2048, 7)
    assert sse.endpoint.options.max_replay == 5
    with app.app_context():
        sse.publish("x" * 1000)
        with pytest.raises(ValueError, match=r"max_event_size=2048 \(SSE_MAX_EVENT_SIZE"):
            sse.publish("x" * 3000)
    assert SSE(make_app(), replay_max_bytes=100).broker.replay_max_bytes == 100  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="on the broker you pass"):
        SSE(make_app(), broker=MemoryBroker(), max_event_size=10)


def test_the_default_event_size_limit_is_within_what_our_client_accepts() -> None:
    from sseproto import DEFAULT_MAX_EVENT_SIZE, DEFAULT_MAX_LINE_SIZE

    app = make_app()
    sse = SSE(app)
    limit = sse.broker.max_event_size  # type: ignore[attr-defined]
    assert limit <= min(DEFAULT_MAX_LINE_SIZE, DEFAULT_MAX_EVENT_SIZE)
    with pytest.raises(ValueError, match="SSE_MAX_EVENT_SIZE"):
        sse.publish("x" * (5 * 1024 * 1024))  # the 5 MiB event that made our client stop


def test_sse_stream_refuses_an_oversized_last_event_id() -> None:
    app = make_app(SSE_MAX_LAST_EVENT_ID_LENGTH=8)
    sse = SSE(app)

    @app.get("/view")
    def view() -> Response:
        return sse.stream("a")

    resp = app.test_client().get("/view", headers={"Last-Event-ID": "x" * 9})
    assert resp.status_code == 400
    assert sse.endpoint.active_streams == 0


def test_cors_origins_from_an_environment_variable_are_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASK_SSE_CORS_ORIGINS", "https://a.example, https://b.example")
    app = make_app(SSE_CORS_CREDENTIALS=True)
    app.config.from_prefixed_env()
    SSE(app)
    client = app.test_client()
    for origin, allowed in [("https://a.example", True), ("https://b.example", True),
                            ("https://a.exampl", False), ("https", False), ("", False)]:
        resp = client.get("/sse/stream", headers={"Origin": origin}, buffered=False)
        assert (resp.headers.get("Access-Control-Allow-Origin") == origin) is allowed, origin
        assert ("Access-Control-Allow-Credentials" in resp.headers) is allowed, origin
        resp.close()


def test_the_polyfill_is_served_with_nosniff() -> None:
    app = make_app()
    SSE(app)
    resp = app.test_client().get("/sse/eventsource.js")
    assert resp.status_code == 200 and resp.headers["X-Content-Type-Options"] == "nosniff"


def test_the_shared_polyfill_is_served_beside_the_plain_one() -> None:
    app = make_app()
    SSE(app)
    client = app.test_client()
    shared = client.get("/sse/eventsource-shared.js")
    plain = client.get("/sse/eventsource.js")
    assert shared.status_code == plain.status_code == 200
    assert shared.mimetype == "text/javascript" and shared.headers["X-Content-Type-Options"] == "nosniff"
    assert shared.data == sse_flask.POLYFILL_SHARED.read_bytes() != plain.data
    assert b"sseproto EventSource polyfill" in shared.data and b".shared?" in shared.data
