"""A Flask app with sseproto.flask, plus test endpoints to publish, count and end streams."""

from __future__ import annotations

import os

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

from sseproto.flask import SSE

app = Flask(__name__)
app.config.update(
    SSE_HEARTBEAT=float(os.environ.get("SSE_HEARTBEAT", "0.3")),
    SSE_RETRY=200,
    SSE_MAX_CONNECTIONS=50,
    SSE_QUEUE_SIZE=int(os.environ.get("SSE_QUEUE_SIZE", "1000")),
    SSE_CORS_ORIGINS=[o for o in os.environ.get("SSE_CORS_ORIGINS", "").split(",") if o] or None,
    SSE_CORS_CREDENTIALS=bool(os.environ.get("SSE_CORS_ORIGINS")),
)
sse = SSE(app)

PAGE = """<!doctype html><meta charset="utf-8"><title>sse</title>
<script>
window.got = []; window.opens = 0; window.gaps = []; window.errors = 0;
const q = new URLSearchParams(location.search);
const es = new EventSource((q.get("origin") || "") + "/sse/stream?channel=" + q.get("channel"),
                           {withCredentials: q.has("origin")});
window.es = es;
es.onopen = () => { window.opens += 1; };
es.onerror = () => { window.errors += 1; };
es.onmessage = (e) => { window.got.push([e.lastEventId, e.data]); };
es.addEventListener("sseproto.gap", (e) => { window.gaps.push(e.data); });
</script>"""


@app.post("/publish")
def publish() -> ResponseReturnValue:
    body = request.get_json()
    ids = [sse.publish(body["data"], event=body.get("event"), channel=body.get("channel")).id
           for _ in range(body.get("repeat", 1))]
    return jsonify(id=ids[-1], ids=ids)


@app.get("/count")
def count() -> ResponseReturnValue:
    broker = sse.broker
    return jsonify(subscribers=broker.subscriber_count(request.args.get("channel")),  # type: ignore[attr-defined]
                   streams=sse.endpoint.active_streams)


@app.post("/end")
def end() -> ResponseReturnValue:
    return jsonify(ended=sse.broker.disconnect_all())  # type: ignore[attr-defined]


@app.get("/")
def page() -> ResponseReturnValue:
    return PAGE
