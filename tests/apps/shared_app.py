"""The server of the shared-mode browser tests: sseproto.flask streams, counted and logged.

``/sse/stream`` comes from the Flask extension; ``/eventsource-shared.js`` serves the
shared-mode bundle of sseproto/static (``?min=1``: the minified one), which the pages load
and which runs as their SharedWorker too. ``/publish`` publishes numbered events,
``/count`` tells how many streams of a channel are open now (the broker's subscribers),
``/log`` what every stream request of a channel carried (its ``Last-Event-ID``).
Run as ``python -m apps.shared_app PORT``.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from flask import Flask, Response, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.serving import make_server

from sseproto import Event
from sseproto.brokers import MemoryBroker
from sseproto.flask import SSE

STATIC = Path(__file__).resolve().parents[2] / "sseproto" / "static"
PAGE = """<!doctype html><meta charset="utf-8"><title>shared</title>
<script src="/eventsource-shared.js{query}"></script>"""

broker = MemoryBroker()
app = Flask(__name__)
app.config.update(SSE_HEARTBEAT=0.5, SSE_RETRY=200)
sse = SSE(app, broker=broker)
seen: list[dict[str, str | None]] = []
seen_lock = threading.Lock()


@app.before_request
def note() -> None:
    if request.path == "/sse/stream":
        with seen_lock:
            seen.append({"channel": request.args.get("channel"),
                         "header": request.headers.get("Last-Event-ID"),
                         "query": request.args.get("lastEventId")})


@app.get("/page")
def page() -> ResponseReturnValue:
    return PAGE.format(query="?min=1" if request.args.get("min") else "")


@app.get("/eventsource-shared.js")
def bundle() -> ResponseReturnValue:
    name = "eventsource-shared.min.js" if request.args.get("min") else "eventsource-shared.js"
    return Response((STATIC / name).read_bytes(), mimetype="text/javascript")


@app.post("/publish")
def publish() -> ResponseReturnValue:
    """Publish ``n`` events with data ``<prefix> <i>``, ``i`` from ``start``, on ``channel``."""
    args = request.args
    start = int(args.get("start", 0))
    ids = [sse.publish(Event(f"{args['prefix']} {i}"), channel=args["channel"]).id
           for i in range(start, start + int(args["n"]))]
    return jsonify(ids=ids)


@app.get("/count")
def count() -> ResponseReturnValue:
    return jsonify(open=broker.subscriber_count(request.args["channel"]))


@app.get("/log")
def log() -> ResponseReturnValue:
    with seen_lock:
        return jsonify([r for r in seen if r["channel"] == request.args["channel"]])


if __name__ == "__main__":
    make_server("127.0.0.1", int(sys.argv[1]), app, threaded=True).serve_forever()
