"""A Flask app for fault and hostile-client tests: any broker, an authorizer, test endpoints.

Environment: ``SSE_BROKER_URL`` (default: in memory), ``SSE_HEARTBEAT``,
``SSE_QUEUE_SIZE``, ``SSE_MAX_CONNECTIONS``, ``SSE_RETRY_AFTER``, ``SSE_BUSY``,
``SSE_WRITE_TIMEOUT``, ``SSE_MAX_DURATION``. Channels named
``secret...`` need the header ``X-Token: letmein``. ``/publish`` publishes ``repeat``
events with ``id``, or one event per entry of ``ids`` (null: the broker gives the id), and
answers 400 for what ``sse.publish`` refuses.
"""

from __future__ import annotations

import gc
import os
import threading

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

from sseproto import ProtocolError
from sseproto.brokers import BrokerUnavailable
from sseproto.flask import SSE

app = Flask(__name__)
app.config.update(
    SSE_BROKER_URL=os.environ.get("SSE_BROKER_URL") or None,
    SSE_HEARTBEAT=float(os.environ.get("SSE_HEARTBEAT", "0.5")),
    SSE_RETRY=200,
    SSE_MAX_CONNECTIONS=int(os.environ.get("SSE_MAX_CONNECTIONS", "200")),
    SSE_QUEUE_SIZE=int(os.environ.get("SSE_QUEUE_SIZE", "1000")),
    SSE_RETRY_AFTER=int(os.environ.get("SSE_RETRY_AFTER", "5")),
    SSE_BUSY=os.environ.get("SSE_BUSY", "503"),
    SSE_REPLAY_SIZE=2000,
    SSE_WRITE_TIMEOUT=float(os.environ.get("SSE_WRITE_TIMEOUT", "30")),
    SSE_MAX_DURATION=float(os.environ["SSE_MAX_DURATION"]) if os.environ.get("SSE_MAX_DURATION") else None,
)
sse = SSE(app)
TOKEN = "letmein"


@sse.authorizer
def may_read(channel: str) -> bool:
    return not channel.startswith("secret") or request.headers.get("X-Token") == TOKEN


@app.post("/publish")
def publish() -> ResponseReturnValue:
    body = request.get_json()
    chosen = body["ids"] if body.get("ids") is not None else [body.get("id")] * body.get("repeat", 1)
    try:
        ids = [sse.publish(body["data"], event=body.get("event"), id=event_id,
                           channel=body.get("channel")).id
               for event_id in chosen]
    except (ProtocolError, ValueError) as exc:
        return jsonify(error=str(exc)), 400
    except BrokerUnavailable as exc:
        return jsonify(error=str(exc)), 503
    return jsonify(id=ids[-1], ids=ids)


@app.get("/count")
def count() -> ResponseReturnValue:
    broker = sse.broker
    return jsonify(subscribers=broker.subscriber_count(request.args.get("channel")),  # type: ignore[attr-defined]
                   streams=sse.endpoint.active_streams, threads=threading.active_count(), pid=os.getpid(),
                   gc_young=gc.get_threshold()[0], gc_frozen=gc.get_freeze_count())


@app.post("/end")
def end() -> ResponseReturnValue:
    return jsonify(ended=sse.broker.disconnect_all())  # type: ignore[attr-defined]


PAGE = """<!doctype html><meta charset="utf-8"><title>chaos</title>
<script src="/sse/eventsource.js"></script>
<script>
// Two clients of one stream in one page: the polyfill (always) and the native EventSource.
const q = new URLSearchParams(location.search);
const url = "/sse/stream?channel=" + encodeURIComponent(q.get("channel")) +
            "&lastEventId=" + encodeURIComponent(q.get("from"));
window.got = {poly: [], native: []};
window.opens = {poly: 0, native: 0};
window.errors = {poly: 0, native: 0};
window.gaps = [];
function watch(name, es) {
  es.onopen = () => { window.opens[name] += 1; };
  es.onerror = () => { window.errors[name] += 1; };
  es.onmessage = (e) => { window.got[name].push([e.lastEventId, e.data]); };
  es.addEventListener("sseproto.gap", (e) => { window.gaps.push([name, e.data]); });
  return es;
}
window.sources = [watch("poly", new EventSourcePolyfill(url)), watch("native", new EventSource(url))];
window.stop = () => { window.sources.forEach((es) => es.close()); };
</script>"""


@app.get("/")
def page() -> ResponseReturnValue:
    return PAGE
