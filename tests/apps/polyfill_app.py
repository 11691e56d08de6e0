"""The server of the polyfill's browser tests: sseproto.flask streams and test endpoints.

``/sse/stream`` and ``/sse/eventsource.js`` come from the Flask extension; ``/capped``
(streams end past 300 bytes) and ``/quiet`` (one heartbeat a minute) are
``sseproto.wsgi.EventStreamApp`` endpoints on the same broker. The rest serves the test
page, publishes, drops the streams of one channel, answers with bad statuses or types,
and records every request (``/log?k=``) by the ``k`` query parameter it carries.
Run as ``python -m apps.polyfill_app PORT OTHER_PORT``: one app on two ports, so that a
page of one is cross-origin (yet same-site, so cookies may go) to the other, which
allows the first as a CORS origin with credentials.
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from flask import Flask, Response, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.serving import make_server

from sseproto import Event
from sseproto.brokers import MemoryBroker
from sseproto.brokers.memory import MemorySubscription
from sseproto.flask import SSE
from sseproto.wsgi import EventStreamApp

HARNESS = Path(__file__).resolve().parents[2] / "js" / "test" / "harness.js"
PAGE = """<!doctype html><meta charset="utf-8"><title>polyfill</title>
<script src="/sse/eventsource.js"></script><script src="/harness.js"></script>"""


class DroppingBroker(MemoryBroker):
    """The in-memory broker, able to end the live streams of one channel: a server-side drop."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._live: dict[str, weakref.WeakSet[MemorySubscription]] = {}
        self._live_lock = threading.Lock()

    def subscribe(
        self, channels: Sequence[str], last_event_id: str | None = None, **options: Any
    ) -> MemorySubscription:
        sub = super().subscribe(channels, last_event_id, **options)
        with self._live_lock:
            for channel in sub.channels:
                self._live.setdefault(channel, weakref.WeakSet()).add(sub)
        return sub

    def drop(self, channel: str) -> int:
        """End every live subscription to ``channel``; their streams end, the clients reconnect."""
        with self._live_lock:
            subs = list(self._live.pop(channel, ()))
        for sub in subs:
            sub.close()
        return len(subs)


broker = DroppingBroker()
app = Flask(__name__)
app.config.update(SSE_HEARTBEAT=0.5, SSE_RETRY=200)
sse = SSE(authorize=lambda channel: channel != "forbidden", broker=broker)
requests_seen: list[dict[str, str | None]] = []
requests_lock = threading.Lock()


def serve(port: int, other_port: int) -> None:
    """Serve the app on both ports (threaded), allowing the first as a CORS origin."""
    app.config.update(SSE_CORS_ORIGINS=[f"http://127.0.0.1:{port}"], SSE_CORS_CREDENTIALS=True)
    sse.init_app(app)
    options = sse.endpoint.options
    capped = EventStreamApp(broker, options.replace(max_bytes=300, retry=50))
    quiet = EventStreamApp(broker, options.replace(heartbeat=60.0))
    app.wsgi_app = recorded(DispatcherMiddleware(app.wsgi_app, {"/capped": capped, "/quiet": quiet}))  # type: ignore[method-assign]
    other = make_server("127.0.0.1", other_port, app, threaded=True)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    make_server("127.0.0.1", port, app, threaded=True).serve_forever()


@app.get("/page")
def page() -> ResponseReturnValue:
    return PAGE


@app.get("/harness.js")
def harness() -> ResponseReturnValue:
    return Response(HARNESS.read_bytes(), mimetype="text/javascript")


@app.post("/publish")
def publish() -> ResponseReturnValue:
    """Publish ``data`` (``repeat`` times, numbered) with optional ``event``, ``id``, ``retry``."""
    args = request.args
    retry = args.get("retry")
    repeat = args.get("repeat")
    datas = [args["data"]] if repeat is None else [f"{args['data']} {i}" for i in range(int(repeat))]
    ids = [
        sse.publish(Event(data, args.get("event") or "message", args.get("id"),
                          None if retry is None else int(retry)), channel=args["channel"]).id
        for data in datas
    ]
    return jsonify(id=ids[-1], ids=ids)


@app.post("/drop")
def drop() -> ResponseReturnValue:
    return jsonify(dropped=broker.drop(request.args["channel"]))


@app.get("/count")
def count() -> ResponseReturnValue:
    return jsonify(subscribers=broker.subscriber_count(request.args["channel"]))


@app.get("/status/<int:code>")
def status(code: int) -> ResponseReturnValue:
    return Response(b"" if code == 204 else b"data: no\n\n", status=code, mimetype="text/event-stream")


@app.get("/wrongtype")
def wrongtype() -> ResponseReturnValue:
    return Response(b"retry: 50\n\ndata: no\n\n", mimetype="text/plain")


@app.get("/log")
def log() -> ResponseReturnValue:
    with requests_lock:
        return jsonify([r for r in requests_seen if r["k"] == request.args["k"]])


def recorded(wsgi: Any) -> Any:
    """WSGI middleware: note what each request with a ``k`` parameter carried."""

    def middleware(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        if "k" in query and environ.get("PATH_INFO") != "/log":
            with requests_lock:
                requests_seen.append({
                    "k": query["k"],
                    "method": environ.get("REQUEST_METHOD"),
                    "path": environ.get("PATH_INFO"),
                    "header": environ.get("HTTP_LAST_EVENT_ID"),
                    "query": query.get("lastEventId"),
                    "cookie": environ.get("HTTP_COOKIE"),
                    "origin": environ.get("HTTP_ORIGIN"),
                    "accept": environ.get("HTTP_ACCEPT"),
                })
        return wsgi(environ, start_response)

    return middleware


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
