"""A Flask app behind Pushpin: sseproto.flask with SSE_GRIP_URL and SSE_GRIP_KEY (and, when
set, SSE_REPLAY_MAX_BYTES and SSE_GRIP_RECOVERY_TTL) from the environment, a channel no one
may read ("secret"), channels only a client with the cookie ``session=ok`` may read
("private-..."), an endpoint to publish (through Pushpin, or to the broker only), and a
page (``/``) that reads a channel with the polyfill and the native EventSource side by side."""

from __future__ import annotations

import os

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

from sseproto import Event
from sseproto.flask import SSE

app = Flask(__name__)
app.config.update(
    SSE_HEARTBEAT=float(os.environ.get("SSE_HEARTBEAT", "1")),
    SSE_RETRY=200,
    SSE_GRIP_URL=os.environ.get("SSE_GRIP_URL") or None,
    SSE_GRIP_KEY=os.environ.get("SSE_GRIP_KEY") or None,
)
for key, kind in (("SSE_REPLAY_MAX_BYTES", int), ("SSE_GRIP_RECOVERY_TTL", float)):
    if os.environ.get(key):
        app.config[key] = kind(os.environ[key])


def authorize(channel: str) -> bool:
    """Nobody may read "secret"; "private-..." only the holder of the session cookie (the
    credentials a real app checks, and which Pushpin's recovery requests do not carry)."""
    if channel.startswith("private-"):
        return request.cookies.get("session") == "ok"
    return channel != "secret"


sse = SSE(app, authorize=authorize)


@app.post("/publish")
def publish() -> ResponseReturnValue:
    """Publish ``repeat`` events of ``data``; with ``broker_only``, to the broker alone, so
    Pushpin misses them (as when a publish request to it is lost)."""
    body = request.get_json()
    ids = []
    for _ in range(body.get("repeat", 1)):
        if body.get("broker_only"):
            ids.append(sse.broker.publish(body["channel"], Event(body["data"])).id)
        else:
            ids.append(sse.publish(body["data"], channel=body.get("channel")).id)
    return jsonify(id=ids[-1], ids=ids)


@app.get("/count")
def count() -> ResponseReturnValue:
    return jsonify(streams=sse.endpoint.active_streams)


PAGE = """<!doctype html><meta charset="utf-8"><title>grip chaos</title>
<script src="/sse/eventsource.js"></script>
<script>
// Two clients of one stream in one page: the polyfill (always) and the native EventSource.
const q = new URLSearchParams(location.search);
const url = "/sse/stream?channel=" + encodeURIComponent(q.get("channel")) +
            "&lastEventId=" + encodeURIComponent(q.get("from"));
window.got = {poly: [], native: []};
window.opens = {poly: 0, native: 0};
window.gaps = [];
function watch(name, es) {
  es.onopen = () => { window.opens[name] += 1; };
  es.onmessage = (e) => { window.got[name].push([e.lastEventId, e.data]); };
  es.addEventListener("sseproto.gap", (e) => { window.gaps.push([name, e.data]); });
  return es;
}
// Whether every source holds each of ``ids``.
window.holds = (ids) => Object.values(window.got).every((got) => {
  const seen = new Set(got.map((item) => item[0]));
  return ids.every((id) => seen.has(id));
});
window.sources = [watch("poly", new EventSourcePolyfill(url)), watch("native", new EventSource(url))];
window.stop = () => { window.sources.forEach((es) => es.close()); };
</script>"""


@app.get("/")
def page() -> ResponseReturnValue:
    return PAGE
