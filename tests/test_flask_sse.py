"""sseproto.flask_sse, the drop-in for Flask-SSE: a Flask-SSE app with its import changed works,
on the embedded broker and on Redis, with replay; and a page written for Flask-SSE, unchanged,
in headless Chromium."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import wait_until
from flask import Flask, render_template_string
from werkzeug.serving import make_server

from sseproto import Event
from sseproto.brokers import MemoryBroker
from sseproto.client import EventSource
from sseproto.flask_sse import Message, ServerSentEventsBlueprint, sse

# The page of Flask-SSE's quickstart, as its users wrote it.
PAGE = """<!DOCTYPE html>
<html><head><title>Flask-SSE Quickstart</title></head>
<body><h1>Flask-SSE Quickstart</h1>
<script>
  var source = new EventSource("{{ url_for('sse.stream') }}");
  window.got = [];
  source.addEventListener('greeting', function(event) {
      var data = JSON.parse(event.data);
      window.got.push(data.message);
  }, false);
  source.addEventListener('error', function(event) { window.errors = (window.errors || 0) + 1; }, false);
</script></body></html>"""


def quickstart(**config: Any) -> Flask:
    """Flask-SSE's quickstart app, with only the import changed."""
    app = Flask(__name__)
    app.config.update({"SSE_HEARTBEAT": 0.5, **config})
    app.register_blueprint(sse, url_prefix="/stream")

    @app.route("/")
    def index() -> str:
        return render_template_string(PAGE)

    @app.route("/hello")
    def publish_hello() -> str:
        sse.publish({"message": "Hello!"}, type="greeting")
        return "Message sent!"

    return app


class Served:
    """An app on a threaded Werkzeug server in this process."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def served() -> Iterator[Served]:
    s = Served(quickstart())
    yield s
    s.close()


def subscribers(app: Flask, channel: str) -> int:
    with app.app_context():
        return int(sse.extension.broker.subscriber_count(channel))  # type: ignore[attr-defined]


def read(url: str, n: int, **options: Any) -> list[Event]:
    got: list[Event] = []
    with EventSource(url, timeout=(5, 10), **options) as source:
        for event in source:
            got.append(event)
            if len(got) == n:
                break
    return got


def test_the_quickstart_streams_on_the_embedded_broker_without_redis(served: Served) -> None:
    with served.app.test_request_context():
        assert isinstance(sse.extension.broker, MemoryBroker)  # no REDIS_URL: Flask-SSE would fail here
        from flask import url_for

        assert url_for("sse.stream", channel="users.social") == "/stream?channel=users.social"
    threading.Timer(0.3, lambda: served.app.test_client().get("/hello")).start()
    (event,) = read(served.url + "/stream", 1)
    assert event.event == "greeting" and json.loads(event.data) == {"message": "Hello!"}


def test_publish_takes_flask_sse_arguments_and_streams_replay_what_was_missed(served: Served) -> None:
    channel = "c-" + uuid.uuid4().hex[:8]
    with served.app.app_context():
        first = sse.publish("one", channel=channel)
        second = sse.publish({"n": 2}, type="tick", id="row-2", retry=500, channel=channel)
        third = sse.publish(["x"], channel=channel)
    assert (second.event, second.id, second.retry) == ("tick", "row-2", 500)
    # Flask-SSE ignores Last-Event-ID: here a reconnecting client gets what it missed.
    got = read(f"{served.url}/stream?channel={channel}", 2, last_event_id=first.id)
    assert [(e.event, e.data, e.id) for e in got] == [("tick", '{"n": 2}', "row-2"),
                                                     ("message", '["x"]', third.id)]


def test_messages_yields_what_is_published_from_now_on(served: Served) -> None:
    channel = "m-" + uuid.uuid4().hex[:8]
    got: list[Message] = []

    def consume() -> None:
        with served.app.app_context():
            for message in sse.messages(channel):
                got.append(message)
                if len(got) == 2:
                    return

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    assert wait_until(lambda: subscribers(served.app, channel) == 1)
    with served.app.app_context():
        sse.publish("a", channel=channel)
        sse.publish({"b": 1}, type="t", id="7", channel=channel)
    reader.join(5)
    assert got == [Message("a", id=got[0].id), Message('{"b": 1}', type="t", id="7")]


def test_message_is_flask_sse_s() -> None:
    message = Message({"a": 1}, type="update", id="5", retry=100)
    assert message.to_dict() == {"data": {"a": 1}, "type": "update", "id": "5", "retry": 100}
    assert Message("x").to_dict() == {"data": "x"}
    assert str(Message("a\nb", type="t", id="1")) == "id: 1\nevent: t\ndata: a\ndata: b\n\n"
    assert repr(Message("x", type="t")) == "Message('x', type='t')"
    assert Message("x", id="1") == Message("x", id="1") != Message("x", id="2")


@pytest.mark.redis
def test_redis_url_selects_the_redis_broker(redis_url: str) -> None:
    blueprint = ServerSentEventsBlueprint("sse", __name__)
    blueprint.add_url_rule(rule="", endpoint="stream", view_func=blueprint.stream)
    app = Flask(__name__)
    app.config.update(REDIS_URL=redis_url, SSE_HEARTBEAT=0.5)
    app.register_blueprint(blueprint, url_prefix="/stream")
    with app.app_context():
        broker = blueprint.extension.broker
    assert type(broker).__name__ == "RedisBroker"
    served = Served(app)
    try:
        channel = "r-" + uuid.uuid4().hex[:8]
        with app.app_context():
            first = blueprint.publish("first", channel=channel)
            blueprint.publish({"message": "Hello!"}, type="greeting", channel=channel)
        (event,) = read(f"{served.url}/stream?channel={channel}", 1, last_event_id=first.id)
        assert event.event == "greeting" and json.loads(event.data) == {"message": "Hello!"}
    finally:
        served.close()
        broker.close()


@pytest.mark.browser
def test_a_page_written_for_flask_sse_works_unchanged(browser: Any, served: Served) -> None:
    page = browser.new_page()
    try:
        page.goto(served.url + "/")
        assert wait_until(lambda: subscribers(served.app, "sse") >= 1, 10)
        client = served.app.test_client()
        client.get("/hello")
        client.get("/hello")
        page.wait_for_function("window.got.length === 2", timeout=10_000)
        assert page.evaluate("window.got") == ["Hello!", "Hello!"]
        assert page.evaluate("window.errors || 0") == 0
    finally:
        page.close()
